//! `kura prune` (and `forget --prune`): flags in, the run's report out.

use anyhow::{Result, bail};
use clap::Args;
use kura::ops::check::parse_size;
use kura::ops::prune::{DEFAULT_GRACE, PruneOptions, PruneReport, prune};
use kura::repository::Repository;
use kura::snapshot::duration::parse_duration;

use super::output::Document;
use super::{GlobalArgs, cache_root};

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Repack packs until unused space is at most this share of the
    /// repository, e.g. `5%` (`0%` repacks every pack with unused space).
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Read at most this much of packs for repacking, e.g. `2G`.
    #[arg(long, value_name = "SIZE")]
    pub max_repack_size: Option<String>,
    /// Time between condemning a pack and deleting it (a later prune
    /// deletes it), e.g. `1h`, `30min`, `90s`. Backups running meanwhile
    /// take condemned packs back. Keep it above 10min (format-spec/12).
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Delete in this run (grace 0). Only when no backup can be running
    /// against this repository, from any machine.
    #[arg(long, conflicts_with = "grace")]
    pub now: bool,
    /// Show what would be condemned, repacked and deleted; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// The smallest grace the timing assumptions allow (format-spec/12, A1:
/// twice the five-minute window W); below it `prune` warns.
const MIN_SAFE_GRACE: u64 = 600;

/// Parses `--grace`: a duration (`kura::snapshot::duration`) in seconds.
pub(super) fn parse_grace(text: &str) -> Result<u64> {
    Ok(parse_duration(text)?)
}

pub(super) fn parse_percent(text: &str) -> Result<f64> {
    let p: f64 = text
        .trim()
        .strip_suffix('%')
        .unwrap_or(text)
        .parse()
        .map_err(|_| anyhow::anyhow!("not a percentage: {text:?}"))?;
    if !(0.0..=100.0).contains(&p) {
        bail!("not a percentage between 0 and 100: {text:?}");
    }
    Ok(p / 100.0)
}

impl PruneArgs {
    pub fn options(&self) -> Result<PruneOptions> {
        let max_repack_bytes = match &self.max_repack_size {
            None => u64::MAX,
            // 0 is allowed: prune deletes and condemns, and repacks nothing.
            Some(s) => parse_size(s)
                .map_err(|_| anyhow::anyhow!("--max-repack-size takes a size such as 2G: {s:?}"))?,
        };
        let grace = if self.now {
            0
        } else {
            self.grace
                .as_deref()
                .map(parse_grace)
                .transpose()?
                .unwrap_or(DEFAULT_GRACE)
        };
        if grace == 0 && !self.now {
            bail!("a grace of 0 deletes at once: say --now if no backup can be running");
        }
        if (1..MIN_SAFE_GRACE).contains(&grace) {
            eprintln!(
                "warning: a grace below 10 minutes is safe only if no backup runs for \
                 longer than half of it while prunes run (format-spec/12, A1)"
            );
        }
        Ok(PruneOptions {
            grace,
            max_unused: parse_percent(&self.max_unused)?,
            max_repack_bytes,
            dry_run: self.dry_run,
            clock: super::clock_from_env()?,
            ..PruneOptions::default()
        })
    }
}

pub fn run_prune(g: &GlobalArgs, args: &PruneArgs) -> Result<()> {
    let options = args.options()?;
    let repo = g.open_admin("prune")?;
    prune_open(g, &repo, &options)
}

/// Prunes an open repository and prints the report.
pub fn prune_open(g: &GlobalArgs, repo: &Repository, options: &PruneOptions) -> Result<()> {
    let index = g.synced_index(repo)?;
    let scratch = kura::ops::session::scratch_dir(cache_root().as_deref(), repo.id());
    let report = prune(repo, &index, &scratch, options)?;
    if g.json {
        return Document::of(&report)
            .with("dry_run", options.dry_run)
            .print();
    }
    print_report(&report, options.dry_run);
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn print_report(r: &PruneReport, dry_run: bool) {
    if dry_run {
        println!("dry run: nothing was changed; a run would do this:");
    }
    println!(
        "{} snapshots, {} live chunks, {} packs ({})",
        r.snapshots,
        r.live_chunks,
        r.packs,
        mb(r.bytes)
    );
    println!(
        "deleted {} packs, {} freed (condemned by earlier runs)",
        r.deleted_packs,
        mb(r.freed_bytes)
    );
    println!(
        "repacked {} packs ({} read, {} rewritten)",
        r.repacked_packs,
        mb(r.repacked_bytes),
        mb(r.rewritten_bytes)
    );
    match r.deletable_after {
        Some(t) => println!(
            "condemned {} packs ({}), deleted by a prune after {} UTC",
            r.condemned_packs,
            mb(r.condemned_bytes),
            super::key::utc_minutes(t)
        ),
        None if r.condemned_packs > 0 => println!(
            "condemned {} packs ({})",
            r.condemned_packs,
            mb(r.condemned_bytes)
        ),
        None => {}
    }
    if r.resurrected_packs + r.adopted_packs > 0 {
        println!(
            "kept {} condemned packs a backup or snapshot took back, indexed {} orphan packs with live data",
            r.resurrected_packs, r.adopted_packs
        );
    }
    println!(
        "unused space left: {}; index files written {}, deleted {}",
        mb(r.unused_bytes_after),
        r.index_files_written,
        r.index_files_deleted
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graces_and_percentages_parse() {
        assert_eq!(parse_grace("90s").unwrap(), 90);
        assert_eq!(parse_grace("30min").unwrap(), 1800);
        assert_eq!(parse_grace("1h").unwrap(), 3600);
        assert_eq!(parse_grace("2d").unwrap(), 172_800);
        assert_eq!(parse_grace("5").unwrap(), 5);
        assert!(parse_grace("1m").is_err());
        assert!(parse_grace("h").is_err());
        assert!((parse_percent("5%").unwrap() - 0.05).abs() < 1e-12);
        assert!(parse_percent("101%").is_err());
    }

    #[test]
    fn max_repack_size_takes_zero_and_sizes_only() {
        let args = |size: &str| PruneArgs {
            max_unused: "5%".into(),
            max_repack_size: Some(size.into()),
            grace: None,
            now: false,
            dry_run: true,
        };
        assert_eq!(args("0").options().unwrap().max_repack_bytes, 0);
        assert_eq!(args("2G").options().unwrap().max_repack_bytes, 2 << 30);
        for bad in ["1/7", "10%", "lots", "99999999999T"] {
            let err = args(bad).options().unwrap_err().to_string();
            assert!(err.contains("--max-repack-size"), "{bad}: {err}");
        }
    }
}
