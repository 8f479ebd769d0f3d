//! `kura check`: structure, optionally pack contents; damage is printed
//! with what it affects and exits 14, a check that could not run exits
//! with the code of what stopped it. `kura repair index` and `kura repair
//! snapshots`: what they found and did, exit 0 once done.

use anyhow::Result;
use clap::Args;
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::repair::{DroppedKind, SnapshotAction};

use super::GlobalArgs;
use super::output::Document;

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
    let repo = g.open_admin("check")?;
    let alarm = super::history_alarm(&repo)?;
    let index = g.synced_index(&repo)?;
    let report = check(
        &repo,
        &index,
        &CheckOptions {
            read_data,
            clock: super::clock_from_env()?,
        },
    )?;
    if g.json {
        Document::of(&report)
            .with("clean", report.is_clean() && alarm.is_none())
            .with("rolled_back", alarm.as_ref().map(ToString::to_string))
            .print()?;
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
        for note in &report.notes {
            println!("note: {note}");
        }
        for stray in &report.strays {
            println!(
                "stray: {} is not an object name; every command ignores it (remove it or move it away)",
                super::names::escaped(stray.as_bytes())
            );
        }
        for d in &report.damage {
            println!("damaged: {} {}", d.object, d.problem);
            if let Some(repair) = d.repair() {
                println!("  repaired by: {repair}");
            }
            for a in &d.affects {
                println!("  affects snapshot {a}");
            }
        }
    }
    // A repository that went back outranks damage: it is why there may be
    // damage (exit 19 before 14).
    super::raise(alarm)?;
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
    /// damaged packs, so the next backup stores that data again; then
    /// deletes prune records that do not authenticate.
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
    let repo = g.open_admin("repair")?;
    let index = g.synced_index(&repo)?;
    let options = RepairIndexOptions {
        read_data,
        dry_run,
        clock: super::clock_from_env()?,
    };
    let report = repair_index(&repo, &index, &options)?;
    if g.json {
        return Document::of(&report).with("dry_run", dry_run).print();
    }
    for (id, why) in &report.packs_dropped {
        println!("left out: pack {id}: {why}");
    }
    for (id, why) in &report.prune_records_deleted {
        println!("deleted: prune record {id}: {why}");
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
    let repo = g.open_admin("repair")?;
    let index = g.synced_index(&repo)?;
    let snapshots = names
        .iter()
        .map(|n| kura::snapshot::find_id(&repo, n))
        .collect::<kura::Result<_>>()?;
    let options = RepairSnapshotsOptions {
        snapshots,
        dry_run,
        clock: super::clock_from_env()?,
    };
    let report = repair_snapshots(&repo, &index, &options)?;
    if g.json {
        return Document::of(&report).with("dry_run", dry_run).print();
    }
    for r in &report.repaired {
        let short = &r.snapshot.to_hex()[..16];
        for d in &r.dropped {
            let path = super::names::escaped(&d.path);
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
