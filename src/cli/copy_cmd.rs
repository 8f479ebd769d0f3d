//! `kura copy`: snapshots of one repository into another that has its own
//! password and keys (`ops::copy`). The source is `--from` or the usual
//! `-r` with its password options; the target is `--to` with the
//! `--to-password-*` options.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kura::ops::copy::{CopyOptions, CopyReport, copy_with_progress};
use kura::snapshot;

use super::browse_cmds::FilterArgs;
use super::output::Document;
use super::progress::Bar;
use super::{GlobalArgs, PasswordSource, cache_root, open_at};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source snapshots: id prefixes or `latest` (default: every one).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The source repository (default: -r / KURA_REPOSITORY), opened with
    /// the usual password options.
    #[arg(long, value_name = "REPO")]
    pub from: Option<PathBuf>,
    /// The target repository.
    #[arg(long, value_name = "REPO")]
    pub to: PathBuf,
    /// Read the target's password from this file (first line).
    #[arg(long, env = "KURA_TO_PASSWORD_FILE", hide_env_values = true)]
    pub to_password_file: Option<PathBuf>,
    /// Run this shell command and use its first line of output as the
    /// target's password (else KURA_TO_PASSWORD, else a prompt).
    #[arg(long, env = "KURA_TO_PASSWORD_COMMAND", hide_env_values = true)]
    pub to_password_command: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show which snapshots would be copied; read no data, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run_copy(g: &GlobalArgs, args: &CopyArgs) -> Result<()> {
    // Both passwords are checked before anything is read or written.
    let source = match &args.from {
        Some(from) => open_at(
            g.backend_at(from)?,
            &g.password_source(),
            "source repository password",
        )
        .with_context(|| format!("the source repository {}", from.display()))?,
        None => g.open()?,
    };
    source.require_admin("copy (from this repository)")?;
    let target_password = PasswordSource::for_target(
        args.to_password_command.clone(),
        args.to_password_file.clone(),
    );
    let target = open_at(
        g.backend_at(&args.to)?,
        &target_password,
        "target repository password",
    )
    .with_context(|| format!("the target repository {}", args.to.display()))?;
    let snapshots = args
        .snapshots
        .iter()
        .map(|name| snapshot::find_id(&source, name))
        .collect::<kura::Result<Vec<_>>>()?;
    let source_index = g.synced_index(&source)?;
    let target_index = g.synced_index(&target)?;
    let options = CopyOptions {
        snapshots,
        filter: args.filter.filter(),
        dry_run: args.dry_run,
        store: g.store_options(),
        cache_root: cache_root(),
    };
    let bar = Bar::new(!args.quiet && !g.json && !args.dry_run);
    let report = copy_with_progress(
        &source,
        &source_index,
        &target,
        &target_index,
        &options,
        &bar,
    );
    bar.finish();
    let report = report?;
    for p in &report.packs_refused {
        eprintln!("warning: unindexed target {p} (not reused)");
    }
    if g.json {
        Document::of(&report)
            .with("dry_run", args.dry_run)
            .print()?;
    } else if !args.quiet {
        print_report(&report, args.dry_run);
    }
    Ok(())
}

fn print_report(report: &CopyReport, dry_run: bool) {
    for c in &report.copied {
        match c.target {
            Some(t) => println!(
                "copied snapshot {} to {}",
                &c.source.to_hex()[..16],
                &t.to_hex()[..16]
            ),
            None => println!("would copy snapshot {}", &c.source.to_hex()[..16]),
        }
    }
    if dry_run {
        println!(
            "{} snapshots to copy, {} already in the target",
            report.copied.len(),
            report.already_copied.len()
        );
        return;
    }
    println!(
        "{} snapshots copied, {} already in the target; {} chunks read ({:.1} MB), \
         {} new blobs, {:.1} MB stored",
        report.copied.len(),
        report.already_copied.len(),
        report.chunks_read,
        report.bytes_read as f64 / 1e6,
        report.stored.chunks_new,
        report.stored.bytes_stored as f64 / 1e6
    );
}
