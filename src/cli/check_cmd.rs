//! `kura check`: structure, optionally pack contents; damage is printed
//! with what it affects and exits 14, a check that could not run exits
//! with the code of what stopped it. `kura repair index` and `kura repair
//! snapshots`: what they found and did, exit 0 once done.

use anyhow::Result;
use clap::Args;
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::repair::{DroppedKind, RepairSnapshotsReport, SnapshotAction};

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
    let report = check(
        &repo,
        &index,
        &CheckOptions {
            read_data,
            clock: super::clock_from_env()?,
        },
    )?;
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
    /// Rewrite snapshots that need lost data so they restore the rest:
    /// files with lost content are left out, directories whose tree is lost
    /// stay empty. Run `check --read-data` first (it marks damaged packs),
    /// then this, then `repair index --read-data`.
    Snapshots {
        /// Print what each snapshot would lose; write and delete nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Snapshots to repair (ids or unique prefixes); all if none.
        snapshots: Vec<String>,
    },
}

pub fn run_repair(g: &GlobalArgs, action: &RepairCommand) -> Result<()> {
    match action {
        RepairCommand::Index { read_data, dry_run } => run_repair_index(g, *read_data, *dry_run),
        RepairCommand::Snapshots { dry_run, snapshots } => {
            run_repair_snapshots(g, *dry_run, snapshots)
        }
    }
}

fn run_repair_index(g: &GlobalArgs, read_data: bool, dry_run: bool) -> Result<()> {
    use kura::ops::repair::{RepairIndexOptions, repair_index};
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let options = RepairIndexOptions {
        read_data,
        dry_run,
        clock: super::clock_from_env()?,
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
        if dry_run { "dry run: " } else { "" },
        report.packs_indexed,
        report.packs_dropped.len(),
        report.index_files_written,
        report.index_files_deleted
    );
    Ok(())
}

fn run_repair_snapshots(g: &GlobalArgs, dry_run: bool, names: &[String]) -> Result<()> {
    use kura::ops::repair::{RepairSnapshotsOptions, repair_snapshots};
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let snapshots = names
        .iter()
        .map(|n| kura::snapshot::find_id(&repo, n))
        .collect::<kura::Result<_>>()?;
    let options = RepairSnapshotsOptions { snapshots, dry_run };
    let report = repair_snapshots(&repo, &index, &options)?;
    if g.json {
        println!("{}", repair_snapshots_json(&report, dry_run));
        return Ok(());
    }
    for r in &report.repaired {
        let short = &r.snapshot.to_hex()[..16];
        for d in &r.dropped {
            let path = String::from_utf8_lossy(&d.path);
            match d.kind {
                DroppedKind::File => println!("snapshot {short}: drop /{path} ({})", d.reason),
                DroppedKind::Directory => {
                    println!("snapshot {short}: empty /{path}/ ({})", d.reason);
                }
            }
        }
        match (&r.action, dry_run) {
            (SnapshotAction::Replaced(Some(new)), _) => {
                println!("snapshot {short}: replaced by {new}");
            }
            (SnapshotAction::Replaced(None), _) => println!("snapshot {short}: would replace"),
            (SnapshotAction::Removed(why), false) => println!("snapshot {short}: removed: {why}"),
            (SnapshotAction::Removed(why), true) => {
                println!("snapshot {short}: would remove: {why}");
            }
        }
    }
    println!(
        "{}{} snapshots checked, {} damaged; {} blobs read from damaged packs and stored again",
        if dry_run { "dry run: " } else { "" },
        report.snapshots_checked,
        report.repaired.len(),
        report.blobs_salvaged,
    );
    Ok(())
}

/// One object for the whole report; paths absolute as in the snapshot.
fn repair_snapshots_json(report: &RepairSnapshotsReport, dry_run: bool) -> serde_json::Value {
    let snapshots: Vec<_> = report
        .repaired
        .iter()
        .map(|r| {
            let dropped: Vec<_> = r
                .dropped
                .iter()
                .map(|d| {
                    let kind = match d.kind {
                        DroppedKind::File => "file",
                        DroppedKind::Directory => "directory emptied",
                    };
                    let path = format!("/{}", String::from_utf8_lossy(&d.path));
                    serde_json::json!({"path": path, "kind": kind, "reason": d.reason})
                })
                .collect();
            let (action, new, reason) = match &r.action {
                SnapshotAction::Replaced(new) => ("replaced", new.map(|n| n.to_hex()), None),
                SnapshotAction::Removed(why) => ("removed", None, Some(why.clone())),
            };
            serde_json::json!({
                "snapshot": r.snapshot.to_hex(), "action": action, "new_snapshot": new,
                "reason": reason, "dropped": dropped,
            })
        })
        .collect();
    serde_json::json!({
        "dry_run": dry_run, "snapshots_checked": report.snapshots_checked,
        "blobs_salvaged": report.blobs_salvaged, "snapshots": snapshots,
    })
}
