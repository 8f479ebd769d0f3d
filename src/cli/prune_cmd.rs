//! `kura prune` (and `forget --prune`): flags in, the run's report out.

use anyhow::{Result, bail};
use clap::Args;
use kura::ops::check::Subset;
use kura::ops::prune::{DEFAULT_GRACE, PruneOptions, PruneReport, prune};
use kura::repository::Repository;

use super::GlobalArgs;
use super::snapshot_cmds::{cache_root, synced_index};

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

/// Parses `90s`, `30min`, `1h`, `2d` or plain seconds.
pub(super) fn parse_grace(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("not a duration (e.g. 1h, 30min, 90s): {text:?}"))?;
    let scale = match unit {
        "" | "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("not a duration (e.g. 1h, 30min, 90s): {text:?}"),
    };
    Ok(n.saturating_mul(scale))
}

fn parse_percent(text: &str) -> Result<f64> {
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
            Some(s) => match Subset::parse(s)? {
                Subset::Bytes(b) => b,
                _ => bail!("--max-repack-size takes a size such as 2G: {s:?}"),
            },
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
        Ok(PruneOptions {
            grace,
            max_unused: parse_percent(&self.max_unused)?,
            max_repack_bytes,
            dry_run: self.dry_run,
            ..PruneOptions::default()
        })
    }
}

pub fn run_prune(g: &GlobalArgs, args: &PruneArgs) -> Result<()> {
    let options = args.options()?;
    let repo = g.open()?;
    prune_open(g, &repo, &options)
}

/// Prunes an open repository and prints the report.
pub fn prune_open(g: &GlobalArgs, repo: &Repository, options: &PruneOptions) -> Result<()> {
    let index = synced_index(repo)?;
    let scratch = cache_root().map_or_else(std::env::temp_dir, |r| r.join(repo.id().to_hex()));
    let report = prune(repo, &index, &scratch, options)?;
    print_report(g, &report, options.dry_run)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn print_report(g: &GlobalArgs, r: &PruneReport, dry_run: bool) -> Result<()> {
    if g.json {
        // The report's fields, and whether it is a dry run's (the plan's).
        let mut value = serde_json::to_value(r)?;
        value["dry_run"] = dry_run.into();
        println!("{value}");
        return Ok(());
    }
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
    Ok(())
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
}
