//! Layer 6 (CLI): `kura drill [PROFILE]`, the restore rehearsal of
//! `ops::drill` on the newest snapshot of a profile (its host), always
//! including the profile's command outputs (the database dumps). The
//! result goes into the profile's run state, so `kura status` and the
//! metrics show the last drill.

use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result};
use clap::Args;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::ops::drill::{DrillOptions, SourceCheck, drill};

use super::output::Document;
use super::{GlobalArgs, status_cmd};

#[derive(Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
    /// How many files to pick at random.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub files: usize,
    /// Seed of the random choice (default: a fresh one; the report names
    /// it so a drill can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `kura drill`.
pub fn run_drill(g: &GlobalArgs, args: &DrillArgs) -> Result<()> {
    let (_, name, p) = args.target.load()?;
    let g = super::run_cmd::merged(g, &p);
    let repo = g.open_admin("drill")?;
    let index = g.synced_index(&repo)?;
    let host = p
        .host
        .clone()
        .unwrap_or_else(super::snapshot_cmds::hostname);
    let filter = kura::snapshot::Filter {
        host: Some(host.clone()),
        ..kura::snapshot::Filter::default()
    };
    let now = super::clock_from_env()?;
    let (id, snap) = kura::snapshot::newest_at(&repo, now.now_ns(), &filter)
        .with_context(|| format!("no snapshot of host {host} to drill"))?;
    let include = p
        .sources
        .commands
        .keys()
        .map(|n| kura::source::command::stream_path(n).map(|p| p.as_os_str().as_bytes().to_vec()))
        .collect::<kura::Result<Vec<_>>>()?;
    let options = DrillOptions {
        sample: args.files,
        include,
        seed: args
            .seed
            .unwrap_or_else(|| u64::from_le_bytes(kura::algorithms::crypto::random_array())),
        compare_source: true,
    };
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let report = drill(&store, &snap.tree_id()?, &options)?;
    let mut state = status_cmd::load_state(&name).unwrap_or_else(|| status_cmd::RunState {
        profile: name.clone(),
        ..status_cmd::RunState::default()
    });
    state.last_drill = Some(now.now_unix());
    state.last_drill_ok = Some(report.ok());
    if let Err(e) = status_cmd::save_state(&state) {
        eprintln!("warning: the drill was not recorded: {e:#}");
    }
    if g.json {
        Document::of(&report)
            .with("snapshot", id)
            .with("ok", report.ok())
            .print()?;
    } else {
        print_report(&report, &id);
    }
    if report.ok() {
        return Ok(());
    }
    let failed = report.files.iter().filter(|f| f.failed()).count();
    Err(kura::Error::corrupt(format!(
        "the drill found {failed} files that do not restore right"
    ))
    .into())
}

fn print_report(report: &kura::ops::drill::DrillReport, id: &kura::id::SnapshotId) {
    for f in &report.files {
        let verdict = match (f.failed(), f.source) {
            (true, _) => format!("FAILED: {}", f.error.as_deref().unwrap_or("")),
            (false, SourceCheck::Same) => "ok, same as the file here".to_owned(),
            (false, SourceCheck::Changed) => "ok (the file here changed since)".to_owned(),
            (false, _) => "ok".to_owned(),
        };
        println!("{}  {verdict}", String::from_utf8_lossy(&f.path));
    }
    println!(
        "drilled {} of {} files of snapshot {} ({:.1} MB read back, seed {}): {}",
        report.files.len(),
        report.files_in_snapshot,
        &id.to_hex()[..16],
        report.bytes as f64 / 1e6,
        report.seed,
        if report.ok() { "ok" } else { "FAILED" }
    );
}
