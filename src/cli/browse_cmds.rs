//! `kura diff`, `kura find`, and the snapshot filter flags they share with
//! `kura snapshots`: browsing snapshots without restoring them.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::ops::diff::diff;
use kura::ops::find::{FindOptions, find};
use kura::snapshot;

use super::GlobalArgs;
use super::key::utc_minutes;
use super::names::escaped;
use super::output::{Document, print_json};
use super::snapshot_cmds::writeln_or_pipe;

/// Which snapshots to consider; every condition given must hold.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must be present).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that backed up this path (repeatable: all must be
    /// present), as `kura snapshots` lists them.
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
}

impl FilterArgs {
    pub fn filter(&self) -> snapshot::Filter {
        snapshot::Filter {
            host: self.host.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot: id prefix, or `latest`.
    pub old: String,
    /// The newer snapshot: id prefix, or `latest`.
    pub new: String,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob to look for (several: any may match). Without a `/` it matches
    /// names at any depth; with one the absolute path (a relative one at
    /// any depth).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Search only this snapshot: id prefix or `latest` (repeatable).
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run_diff(g: &GlobalArgs, args: &DiffArgs) -> Result<()> {
    let repo = g.open_admin("diff")?;
    let index = g.synced_index(&repo)?;
    let (old_id, old) = snapshot::find(&repo, &args.old)?;
    let (new_id, new) = snapshot::find(&repo, &args.new)?;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let report = diff(&store, &old.tree_id()?, &new.tree_id()?)?;
    if g.json {
        return Document::of(&report)
            .with("old", old_id)
            .with("new", new_id)
            .print();
    }
    let mut out = std::io::stdout().lock();
    for c in &report.changes {
        let line = format!("{} {}", c.kind.marker(), escaped(&c.path));
        if writeln_or_pipe(&mut out, &line)? {
            return Ok(());
        }
    }
    let r = &report;
    let summary = format!(
        "{} added, {} removed, {} changed, {} metadata only, {} type changed; {:.1} MB added, {:.1} MB removed",
        r.added,
        r.removed,
        r.changed,
        r.metadata_only,
        r.type_changed,
        r.bytes_added as f64 / 1e6,
        r.bytes_removed as f64 / 1e6
    );
    writeln_or_pipe(&mut out, &summary)?;
    Ok(())
}

pub fn run_find(g: &GlobalArgs, args: &FindArgs) -> Result<()> {
    let repo = g.open_admin("find")?;
    let index = g.synced_index(&repo)?;
    let snapshots = snapshot::select::choose(&repo, &args.snapshots, &args.filter.filter())?;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let options = FindOptions {
        patterns: args.patterns.clone(),
    };
    let report = find(&store, &snapshots, &options)?;
    if g.json {
        return print_json(&report.matches);
    }
    let mut out = std::io::stdout().lock();
    for m in &report.matches {
        let line = format!(
            "{} {} {:<8} {:>12} {} {}",
            &m.snapshot.to_hex()[..16],
            utc_minutes(u64::try_from(m.time / 1_000_000_000).unwrap_or(0)),
            m.entry_type.name(),
            m.meta.size,
            utc_minutes(u64::try_from(m.meta.mtime.0).unwrap_or(0)),
            escaped(&m.path)
        );
        if writeln_or_pipe(&mut out, &line)? {
            return Ok(());
        }
    }
    Ok(())
}
