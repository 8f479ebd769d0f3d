//! CLI layer: `kura completions SHELL` and `kura man --dir DIR`, the shell
//! completions and manual pages generated from the clap definitions, so
//! they can never disagree with the commands they describe (what a Debian
//! package installs; README "Install").

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

/// The shells completions are generated for.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `kura completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// `kura man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write `kura.1` and a `kura-COMMAND.1` per command into this
    /// directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
}

/// Prints the completion script for `args.shell` to standard output.
///
/// # Errors
/// Standard output failed (other than a closed pipe).
pub fn run_completions(args: &CompletionsArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "kura", &mut script);
    // A reader that went away (`| head`) is not an error.
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes the manual pages into `args.dir`: one for `kura`, one for each
/// command and nested command (`kura-repair-index.1`).
///
/// # Errors
/// The directory or a page could not be written.
pub fn run_man(args: &ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let command = Cli::command().version(env!("CARGO_PKG_VERSION"));
    write_pages(&args.dir, &command, "kura")
}

/// Writes the page of `command` (named `name`) and of its subcommands.
fn write_pages(dir: &Path, command: &clap::Command, name: &str) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().display_name(name.to_owned()))
        .render(&mut page)
        .context("rendering a manual page")?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(dir, sub, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(())
}
