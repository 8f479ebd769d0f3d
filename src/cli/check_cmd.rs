//! `kura check`: structure, optionally pack contents; damage is printed
//! with what it affects and exits 14, a check that could not run exits
//! with the code of what stopped it.

use anyhow::Result;
use clap::Args;
use kura::ops::check::{CheckOptions, Subset, check};

use super::GlobalArgs;
use super::snapshot_cmds::synced_index;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read part of the packs, those verified longest ago first: `n/m`,
    /// `P%`, or a size such as `2G` (a nightly `1/7` covers all in a week).
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
}

pub fn run_check(g: &GlobalArgs, args: &CheckArgs) -> Result<()> {
    let read_data = match (&args.read_data_subset, args.read_data) {
        (Some(s), _) => Some(Subset::parse(s)?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let report = check(&repo, &index, &CheckOptions { read_data })?;
    if g.json {
        let damage: Vec<_> = report
            .damage
            .iter()
            .map(|d| serde_json::json!({"object": d.object, "problem": d.problem, "affects": d.affects}))
            .collect();
        let orphans: Vec<String> = report
            .orphan_packs
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "clean": report.is_clean(), "packs": report.packs, "index_files": report.index_files,
                "snapshots": report.snapshots, "trees": report.trees, "packs_read": report.packs_read,
                "bytes_read": report.bytes_read, "orphan_packs": orphans, "damage": damage,
                "condemned_packs": report.condemned_packs.len(),
            })
        );
    } else {
        println!(
            "checked {} snapshots, {} trees, {} index files, {} packs ({} read, {:.1} MB)",
            report.snapshots,
            report.trees,
            report.index_files,
            report.packs,
            report.packs_read,
            report.bytes_read as f64 / 1e6
        );
        if !report.orphan_packs.is_empty() {
            println!(
                "{} packs are in no index (an interrupted backup; the next backup reuses them)",
                report.orphan_packs.len()
            );
        }
        if !report.condemned_packs.is_empty() {
            println!(
                "{} packs are condemned by prune and wait for a later prune to delete them",
                report.condemned_packs.len()
            );
        }
        for d in &report.damage {
            println!("damaged: {} {}", d.object, d.problem);
            for a in &d.affects {
                println!("  affects snapshot {a}");
            }
        }
    }
    if report.is_clean() {
        if !g.json {
            println!("no damage found");
        }
        Ok(())
    } else {
        Err(kura::Error::new(
            kura::ErrorKind::Corrupt,
            format!(
                "the repository is damaged: {} problems",
                report.damage.len()
            ),
        )
        .into())
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs: drops entries of missing or
    /// damaged packs, so the next backup stores that data again.
    Index {
        /// Verify every pack whole, not only its header.
        #[arg(long)]
        read_data: bool,
        /// Report what would be indexed and dropped; change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

pub fn run_repair(g: &GlobalArgs, action: &RepairCommand) -> Result<()> {
    use kura::ops::repair::{RepairIndexOptions, repair_index};
    let RepairCommand::Index { read_data, dry_run } = action;
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let options = RepairIndexOptions {
        read_data: *read_data,
        dry_run: *dry_run,
    };
    let report = repair_index(&repo, &index, &options)?;
    if g.json {
        let dropped: Vec<_> = report
            .packs_dropped
            .iter()
            .map(|(id, why)| serde_json::json!({"pack": id.to_string(), "problem": why}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "packs_indexed": report.packs_indexed, "packs_dropped": dropped,
                "index_files_written": report.index_files_written,
                "index_files_deleted": report.index_files_deleted, "dry_run": dry_run,
            })
        );
        return Ok(());
    }
    for (id, why) in &report.packs_dropped {
        println!("left out: pack {id}: {why}");
    }
    println!(
        "{}{} packs indexed, {} left out; {} index files written, {} deleted",
        if *dry_run { "dry run: " } else { "" },
        report.packs_indexed,
        report.packs_dropped.len(),
        report.index_files_written,
        report.index_files_deleted
    );
    Ok(())
}
