//! The `kura` binary: parses arguments, installs logging, runs the command
//! and turns its error into a message and a documented exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KURA_LOG"))
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
