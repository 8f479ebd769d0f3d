//! Layer 6 (CLI): `kura serve [--append-only] [--log FILE] PATH`, the
//! server end of `kura+ssh://` locations, run by sshd (usually as the
//! forced command of an `authorized_keys` line). It speaks the kura serve
//! protocol on stdin/stdout (`kura::backend::serve`) and never prints
//! anything else there; each refusal is one line on stderr (which sshd
//! passes to the client) and, with `--log`, appended to that file.
//! It holds no key and sees only encrypted objects.

use std::fs::OpenOptions;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kura::backend::LocalBackend;
use kura::backend::serve::{Refusal, ServeOptions, serve};

#[derive(Args, Debug)]
#[command(
    after_help = "For the storage host's ~/.ssh/authorized_keys, one line per client:\n  \
    command=\"kura serve --append-only --log /srv/kura/web1.log /srv/kura/web1\",restrict \
    ssh-ed25519 AAAA... web1-backup\n\
    The client then uses -r kura+ssh://backup@storage/web1 (the forced command decides \
    the path). Prune and forget need a login without --append-only."
)]
pub struct ServeArgs {
    /// Refuse every delete and every removal of temporary files: a client
    /// can add objects, never remove or replace one.
    #[arg(long)]
    pub append_only: bool,
    /// Also append each refusal as a line to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The repository directory to serve (created by the client's init).
    pub path: PathBuf,
}

/// Serves `args.path` on stdin/stdout until the client leaves.
///
/// # Errors
/// A log file that cannot be opened; the protocol errors of
/// `kura::backend::serve::serve` (an unknown version, a broken stream).
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let mut log = match &args.log {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log {}", path.display()))?,
        ),
        None => None,
    };
    let clock = super::clock_from_env()?;
    let served = args.path.display().to_string();
    let mut on_refusal = |r: &Refusal| {
        let line = format!(
            "{} kura serve {served}: refused {} {:?}: {}",
            utc_seconds(clock.now_ns()),
            r.op,
            r.path,
            r.why
        );
        eprintln!("{line}");
        if let Some(file) = log.as_mut() {
            let _ = writeln!(file, "{line}");
        }
    };
    let backend = LocalBackend::new(&args.path);
    let options = ServeOptions {
        append_only: args.append_only,
    };
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut output = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serve(&backend, &mut input, &mut output, options, &mut on_refusal)?;
    Ok(())
}

/// `2026-12-04T03:00:00Z` for a time in nanoseconds since the epoch.
fn utc_seconds(ns: i64) -> String {
    let (year, month, day, hour) = kura::snapshot::civil_utc(ns);
    let secs = ns.div_euclid(1_000_000_000).rem_euclid(3600);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{:02}:{:02}Z",
        secs / 60,
        secs % 60
    )
}
