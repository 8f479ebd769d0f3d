//! The `kura` binary: parses arguments, installs logging, runs the command
//! and turns its error into a message and a documented exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc keeps peak memory flat where glibc's per-thread arenas grew
/// (Cargo.toml, feature `jemalloc`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Warnings (a cache that failed, a damaged object skipped) show unless
    // KURA_LOG says otherwise; a skipped damaged object always does.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::WARN.into())
        .with_env_var("KURA_LOG")
        .from_env_lossy()
        .add_directive(
            format!("{}=warn", kura::error::DAMAGE_LOG)
                .parse()
                .expect("a valid directive"),
        );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // Before any password is read, and while this is the only thread.
    cli::secrets::harden_process();
    let parsed = cli::Cli::parse();
    cli::secrets::take_password_variables();
    match cli::run(&parsed) {
        Ok(()) => ExitCode::from(cli::exit::OK),
        Err(err) => {
            eprintln!("kura: error: {}", message(&err));
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// The error and its causes, `: `-separated, each said once: a library
/// error's text already ends with its source's, which the chain repeats.
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
