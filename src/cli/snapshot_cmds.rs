//! `kura backup`, `kura snapshots`, `kura restore`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::index::ChunkIndex;
use kura::ops::backup::{BackupOptions, ParentChoice, StreamSource, backup};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repo::Repository;
use kura::snapshot;

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required_unless_present_any = ["stdin", "stdin_from_command"])]
    pub paths: Vec<PathBuf>,
    /// Store standard input as a file of the snapshot (see --stdin-filename).
    #[arg(long)]
    pub stdin: bool,
    /// Where --stdin, or a --stdin-from-command without NAME=, is stored.
    #[arg(long, default_value = "stdin")]
    pub stdin_filename: PathBuf,
    /// Store a command's output, e.g. `db/site.sql=pg_dump site`, or a
    /// plain command named by --stdin-filename (repeatable). A command that
    /// exits non-zero aborts the backup: no snapshot is saved.
    #[arg(long, value_name = "[NAME=]COMMAND")]
    pub stdin_from_command: Vec<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Reuse unchanged files from this snapshot instead of the latest one
    /// of the same host and paths.
    #[arg(long, conflicts_with = "no_parent")]
    pub parent: Option<String>,
    /// Read every file, reusing nothing from an earlier snapshot.
    #[arg(long)]
    pub no_parent: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix, or `latest`.
    pub snapshot: String,
    /// Directory to restore into.
    #[arg(long, short)]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable).
    #[arg(long)]
    pub include: Vec<PathBuf>,
}

/// The index cache of `repo`, synced (format-spec/06: `$KURA_CACHE_DIR`,
/// `$XDG_CACHE_HOME/kura`, `~/.cache/kura`).
fn synced_index(repo: &Repository) -> Result<ChunkIndex> {
    let root = std::env::var_os("KURA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kura")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kura")));
    let index = ChunkIndex::open(
        root.map(|r| kura::index::cache_file(&r, repo.id()))
            .as_deref(),
    )?;
    index.sync(repo)?;
    Ok(index)
}

/// `NAME=COMMAND` when the part before the first `=` is a plain name (no
/// white space), else the whole text is the command, named `default_name`.
fn command_source(text: &str, default_name: &std::path::Path) -> StreamSource {
    match text.split_once('=') {
        Some((name, cmd)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
            StreamSource {
                name: name.into(),
                command: Some(cmd.to_owned()),
            }
        }
        _ => StreamSource {
            name: default_name.to_path_buf(),
            command: Some(text.to_owned()),
        },
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Runs a backup; `Ok(true)` if the snapshot is incomplete.
pub fn run_backup(g: &GlobalArgs, args: &BackupArgs) -> Result<bool> {
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let parent = match (&args.parent, args.no_parent) {
        (_, true) => ParentChoice::None,
        (Some(p), false) => ParentChoice::Id(snapshot::find(&repo, p)?.0),
        (None, false) => ParentChoice::Latest,
    };
    let mut streams: Vec<StreamSource> = args
        .stdin_from_command
        .iter()
        .map(|c| command_source(c, &args.stdin_filename))
        .collect();
    if args.stdin {
        streams.push(StreamSource {
            name: args.stdin_filename.clone(),
            command: None,
        });
    }
    let options = BackupOptions {
        paths: args.paths.clone(),
        streams,
        tags: args.tags.clone(),
        hostname: args.host.clone().unwrap_or_else(hostname),
        parent,
        store: ChunkStoreOptions::default(),
    };
    let report = backup(&repo, &index, &options)?;
    let s = report.summary;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshot": report.snapshot.to_hex(),
                "parent": report.parent.map(|p| p.to_hex()),
                "summary": s,
                "incomplete": !report.warnings.is_empty(),
            })
        );
    } else if !args.quiet {
        println!(
            "snapshot {} saved: {} files ({} unchanged), {} dirs, {:.1} MB; {} new chunks, {:.1} MB stored",
            &report.snapshot.to_hex()[..16],
            s.files,
            s.files_unchanged,
            s.dirs,
            s.bytes as f64 / 1e6,
            s.chunks_new,
            s.bytes_stored as f64 / 1e6
        );
    }
    Ok(!report.warnings.is_empty())
}

pub fn run_snapshots(g: &GlobalArgs) -> Result<()> {
    let repo = g.open()?;
    let all = snapshot::list(&repo)?;
    if g.json {
        let rows: Vec<_> = all
            .iter()
            .map(|(id, s)| serde_json::json!({ "id": id.to_hex(), "snapshot": s }))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<16} {:<19} {:<16} {:<12} paths",
        "id", "time (UTC)", "host", "tags"
    );
    for (id, s) in &all {
        let secs = u64::try_from(s.time / 1_000_000_000).unwrap_or(0);
        let paths: Vec<String> = s
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(&p.to_bytes().unwrap_or_default()).into_owned())
            .collect();
        println!(
            "{:<16} {:<19} {:<16} {:<12} {}{}",
            &id.to_hex()[..16],
            super::key::utc_minutes(secs),
            s.hostname,
            s.tags.join(","),
            paths.join(" "),
            if s.incomplete { " (incomplete)" } else { "" }
        );
    }
    Ok(())
}

pub fn run_restore(g: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    let repo = g.open()?;
    let index = synced_index(&repo)?;
    let (id, snap) = snapshot::find(&repo, &args.snapshot)?;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let options = RestoreOptions {
        target: args.target.clone(),
        include: args.include.clone(),
        owners: nix::unistd::geteuid().is_root(),
    };
    let report = restore(&store, &snap.tree_id()?, &options)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if g.json {
        println!(
            "{}",
            serde_json::json!({"snapshot": id.to_hex(), "files": report.files, "dirs": report.dirs, "bytes": report.bytes, "warnings": report.warnings})
        );
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {:.1} MB",
            &id.to_hex()[..16],
            args.target.display(),
            report.files,
            report.dirs,
            report.bytes as f64 / 1e6
        );
    }
    Ok(())
}
