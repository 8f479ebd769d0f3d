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
    tracing_subscriber::fmt()
        // Warnings (a cache that failed, a damaged index file skipped) show
        // unless KURA_LOG says otherwise.
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
                .with_env_var("KURA_LOG")
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
    let parsed = cli::Cli::parse();
    match cli::run(&parsed) {
        Ok(()) => ExitCode::from(cli::exit::OK),
        Err(err) => {
            eprintln!("kura: error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
