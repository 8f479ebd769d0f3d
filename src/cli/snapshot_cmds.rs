//! `kura backup`, `kura snapshots`, `kura restore`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::ops::backup::{BackupOptions, ParentChoice, StreamSource, backup_with_progress};
use kura::ops::ls::ls;
use kura::ops::restore::{
    ImageRestoreOptions, RestoreOptions, restore_image, restore_with_progress,
};
use kura::snapshot;

use super::GlobalArgs;
use super::names::escaped;
use super::output::{Document, print_json};
use super::progress::Bar;

#[derive(Args, Debug)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required_unless_present_any = ["stdin", "stdin_from_command", "image"])]
    pub paths: Vec<PathBuf>,
    /// Back up a disk image or block device (e.g. /dev/vdb) by reading its
    /// content, streamed straight into the repository; runs of zeros are
    /// stored as holes (repeatable).
    #[arg(long, value_name = "DEVICE|FILE")]
    pub image: Vec<PathBuf>,
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
    /// Leave out paths matching this glob (repeatable): starting with `/`
    /// it is matched against the absolute path, with another `/` against
    /// the path's end at any depth, without one against file names.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read exclude globs from a file, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out directories that contain a file of this name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Stay on the file system of each path given: directories where
    /// another file system is mounted are kept empty.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Threads reading small files (up to 1 MiB) ahead of the walk, which
    /// hides the disk's latency; 0 reads every file on the walk's thread.
    /// The snapshot is the same either way. Default: one per core, at
    /// most 4.
    #[arg(long, value_name = "N")]
    pub read_ahead: Option<usize>,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
pub struct RestoreArgs {
    /// Snapshot id prefix, or `latest` (the default).
    #[arg(default_value = "latest", conflicts_with = "at")]
    pub snapshot: String,
    /// Restore the newest snapshot taken at or before this time:
    /// `YYYY-MM-DD[ HH:MM[:SS]]`, UTC as `kura snapshots` shows it.
    #[arg(long)]
    pub at: Option<String>,
    /// With --at: only snapshots of this host.
    #[arg(long, requires = "at")]
    pub host: Option<String>,
    /// With --at: only snapshots with this tag.
    #[arg(long, requires = "at")]
    pub tag: Option<String>,
    /// Directory to restore into.
    #[arg(long, short, required_unless_present = "image")]
    pub target: Option<PathBuf>,
    /// Restore only this path of the snapshot (repeatable).
    #[arg(long, conflicts_with = "image")]
    pub include: Vec<PathBuf>,
    /// Restore one file of the snapshot, a disk image such as `/dev/vdb`,
    /// to the device or file given by --to.
    #[arg(long, requires = "to", conflicts_with = "target", value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// With --image: a block device (written in place; holes are zeroed)
    /// or a file (created or replaced, sparse).
    #[arg(long, requires = "image", value_name = "DEVICE|FILE")]
    pub to: Option<PathBuf>,
    /// Do not set owners (by default root restores each file's owner).
    #[arg(long, conflicts_with = "image")]
    pub no_owners: bool,
    /// Keep setuid/setgid bits and file capabilities (root restoring
    /// owners only; otherwise they are always dropped).
    #[arg(long, conflicts_with_all = ["image", "no_owners"])]
    pub keep_setuid: bool,
    /// Do not create device nodes and FIFOs; they are counted instead.
    #[arg(long, conflicts_with = "image")]
    pub no_devices: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
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

pub(super) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The backup `args` ask for in `repo`.
///
/// # Errors
/// A parent that is not found, an exclude file that cannot be read, a bad
/// `KURA_NOW`.
pub fn backup_options(
    repo: &kura::repository::Repository,
    args: &BackupArgs,
    store: ChunkStoreOptions,
) -> Result<BackupOptions> {
    let parent = match (&args.parent, args.no_parent) {
        (_, true) => ParentChoice::None,
        (Some(p), false) => ParentChoice::Id(snapshot::find(repo, p)?.0),
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
    let mut patterns = args.exclude.clone();
    for file in &args.exclude_file {
        patterns.extend(kura::source::exclude::read_exclude_file(file)?);
    }
    let excludes = kura::source::exclude::ExcludeOptions {
        patterns,
        if_present: args.exclude_if_present.clone(),
        one_file_system: args.one_file_system,
    };
    let options = BackupOptions {
        paths: args.paths.clone(),
        streams,
        images: args.image.clone(),
        excludes,
        tags: args.tags.clone(),
        hostname: args.host.clone().unwrap_or_else(hostname),
        parent,
        store,
        clock: super::clock_from_env()?,
        files_cache: super::cache_root(),
        read_ahead: args.read_ahead,
    };
    Ok(options)
}

/// Runs a backup; `Ok(true)` if the snapshot is incomplete.
pub fn run_backup(g: &GlobalArgs, args: &BackupArgs) -> Result<bool> {
    let repo = g.open()?;
    tracing::debug!("repository opened");
    let alarm = super::history_alarm(&repo)?;
    let index = g.synced_index(&repo)?;
    tracing::debug!("index synced");
    let options = backup_options(&repo, args, g.store_options())?;
    let bar = Bar::new(!args.quiet && !g.json);
    let report = std::thread::scope(|scope| {
        if bar.visible() {
            // Count what will be read, for the total and time left.
            scope.spawn(|| {
                let totals = kura::source::scan::estimate(
                    &options.paths,
                    &options.images,
                    &options.excludes,
                );
                if let Ok((files, bytes)) = totals {
                    kura::ops::progress::Progress::set_total(&bar, files, bytes);
                }
            });
        }
        backup_with_progress(&repo, &index, &options, &bar)
    });
    bar.finish();
    let report = report?;
    kura::ops::history::remember_snapshot(&repo, super::cache_root().as_deref(), report.snapshot);
    let s = report.summary;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.packs_refused {
        eprintln!("warning: unindexed {p} (not reused)");
    }
    let sec = report.secured;
    if sec.packs_copied + sec.packs_resurrected > 0 {
        eprintln!(
            "note: a prune condemned {} packs this backup used while it ran: {} taken back, {} copied ({:.1} MB)",
            sec.packs_copied + sec.packs_resurrected,
            sec.packs_resurrected,
            sec.packs_copied,
            sec.bytes_copied as f64 / 1e6
        );
    }
    if g.json {
        Document::of(&report)
            .with("incomplete", !report.warnings.is_empty())
            .print()?;
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
    super::raise(alarm)?;
    Ok(!report.warnings.is_empty())
}

/// One row of `snapshots --json`.
#[derive(serde::Serialize)]
struct Listed<'a> {
    id: kura::id::SnapshotId,
    /// Who wrote it, as its author block says (format-spec/11).
    writer: Option<kura::format::author::Writer>,
    /// Dated more than a day after now (format-spec/11, "Dates").
    future: bool,
    snapshot: &'a kura::format::snapshot::Snapshot,
}

/// The writer of snapshot `id`, as its author block said when loaded.
fn writer_of(
    repo: &kura::repository::Repository,
    id: &kura::id::SnapshotId,
) -> Option<kura::format::author::Writer> {
    repo.authorship(kura::format::envelope::ObjectType::Snapshot, id.as_bytes())
        .map(|a| a.writer)
}

pub fn run_snapshots(g: &GlobalArgs, filter: &super::browse_cmds::FilterArgs) -> Result<()> {
    let repo = g.open_admin("snapshots")?;
    let alarm = super::history_alarm(&repo)?;
    let all = snapshot::select::choose(&repo, &[], &filter.filter())?;
    let now = repo.clock().now_ns();
    if g.json {
        let rows: Vec<Listed> = all
            .iter()
            .map(|(id, snapshot)| Listed {
                id: *id,
                writer: writer_of(&repo, id),
                future: snapshot::is_future(snapshot, now),
                snapshot,
            })
            .collect();
        print_json(&rows)?;
        return super::raise(alarm);
    }
    println!(
        "{:<16} {:<19} {:<16} {:<12} {:<22} paths",
        "id", "time (UTC)", "host", "tags", "writer"
    );
    for (id, s) in &all {
        let secs = u64::try_from(s.time / 1_000_000_000).unwrap_or(0);
        let paths: Vec<String> = s
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(&p.to_bytes().unwrap_or_default()).into_owned())
            .collect();
        let writer = writer_of(&repo, id).map_or_else(|| "?".into(), |w| w.to_string());
        println!(
            "{:<16} {:<19} {:<16} {:<12} {:<22} {}{}{}",
            &id.to_hex()[..16],
            super::key::utc_minutes(secs),
            s.hostname,
            s.tags.join(","),
            writer,
            paths.join(" "),
            if s.incomplete { " (incomplete)" } else { "" },
            if snapshot::is_future(s, now) {
                " (future)"
            } else {
                ""
            }
        );
    }
    super::raise(alarm)
}

pub fn run_restore(g: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    let repo = g.open_admin("restore")?;
    let index = g.synced_index(&repo)?;
    let (id, snap) = match &args.at {
        Some(at) => {
            let filter = snapshot::Filter {
                host: args.host.clone(),
                tags: args.tag.clone().into_iter().collect(),
                paths: Vec::new(),
            };
            snapshot::newest_at(&repo, snapshot::parse_utc(at)?, &filter)?
        }
        None => snapshot::find(&repo, &args.snapshot)?,
    };
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    if let (Some(image), Some(to)) = (&args.image, &args.to) {
        let options = ImageRestoreOptions {
            path: image.clone(),
            to: to.clone(),
        };
        let bar = Bar::new(!args.quiet && !g.json);
        let report = restore_image(&store, &snap.tree_id()?, &options, &bar);
        bar.finish();
        let report = report?;
        if g.json {
            Document::object()
                .with("snapshot", id)
                .with("size", report.size)
                .with("bytes", report.bytes)
                .print()?;
        } else if !args.quiet {
            println!(
                "restored {} of snapshot {} to {}: {:.1} MB, {:.1} MB of data",
                image.display(),
                &id.to_hex()[..16],
                to.display(),
                report.size as f64 / 1e6,
                report.bytes as f64 / 1e6
            );
        }
        return Ok(());
    }
    let target = args
        .target
        .clone()
        .expect("clap requires --target without --image");
    let options = RestoreOptions {
        target: target.clone(),
        include: args.include.clone(),
        owners: nix::unistd::geteuid().is_root() && !args.no_owners,
        keep_setuid: args.keep_setuid,
        skip_devices: args.no_devices,
    };
    let bar = Bar::new(!args.quiet && !g.json);
    let report = restore_with_progress(&store, &snap.tree_id()?, &options, &bar);
    bar.finish();
    let report = report?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if g.json {
        Document::of(&report).with("snapshot", id).print()?;
    } else if !args.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({} already intact), {} dirs, {:.1} MB",
            &id.to_hex()[..16],
            target.display(),
            report.files,
            report.files_intact,
            report.dirs,
            report.bytes as f64 / 1e6
        );
        let dropped = (report.setuid_dropped, report.capabilities_dropped);
        if dropped != (0, 0) {
            println!(
                "dropped setuid/setgid bits of {} files and capabilities of {} (--keep-setuid keeps them)",
                dropped.0, dropped.1
            );
        }
        if report.devices_skipped > 0 {
            println!(
                "skipped {} devices and FIFOs (--no-devices)",
                report.devices_skipped
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix, or `latest`.
    pub snapshot: String,
    /// A directory or file of the snapshot (default: everything).
    pub path: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id prefix, or `latest`.
    pub snapshot: String,
    /// The file to write to standard output, e.g. `db/site.sql`; a
    /// directory, or `/` for the whole snapshot, is written as a tar
    /// stream (paths without the leading `/`).
    pub path: PathBuf,
}

fn not_found(what: &str) -> anyhow::Error {
    kura::Error::new(kura::ErrorKind::NotFound, what.to_owned()).into()
}

/// One line of `ls --json`: the path and names as (lossy) text, and the
/// path's exact bytes where it is not UTF-8.
#[derive(serde::Serialize)]
struct ListedEntry<'a> {
    path: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    user: std::borrow::Cow<'a, str>,
    group: std::borrow::Cow<'a, str>,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
}

impl<'a> ListedEntry<'a> {
    fn new(path: &'a [u8], e: &'a kura::format::tree::Entry) -> Self {
        Self {
            path: String::from_utf8_lossy(path),
            path_hex: super::names::hex_unless_utf8(path),
            kind: e.payload.entry_type().name(),
            mode: e.meta.mode,
            uid: e.meta.uid,
            gid: e.meta.gid,
            user: String::from_utf8_lossy(&e.meta.user),
            group: String::from_utf8_lossy(&e.meta.group),
            size: e.meta.size,
            mtime: e.meta.mtime.0,
            mtime_nsec: e.meta.mtime.1,
        }
    }
}

pub fn run_ls(g: &GlobalArgs, args: &LsArgs) -> Result<()> {
    let repo = g.open_admin("ls")?;
    let index = g.synced_index(&repo)?;
    let (_, snap) = snapshot::find(&repo, &args.snapshot)?;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let comps = args
        .path
        .as_deref()
        .map(kura::ops::snapshot_path)
        .unwrap_or_default();
    let listing = ls(&store, &snap.tree_id()?, &comps)?;
    let mut out = std::io::stdout().lock();
    for listed in listing {
        let kura::ops::ls::ListedEntry { path, entry: e } = listed?;
        let kind = e.payload.entry_type();
        let line = if g.json {
            // One JSON object per line, as `restic ls --json` does.
            serde_json::to_string(&ListedEntry::new(&path, &e))?
        } else {
            format!(
                "{}{:04o} {:>8} {:>8} {:>12} {} {}",
                kind.letter(),
                e.meta.mode,
                escaped(&e.meta.user),
                escaped(&e.meta.group),
                e.meta.size,
                super::key::utc_minutes(u64::try_from(e.meta.mtime.0).unwrap_or(0)),
                escaped(&path)
            )
        };
        if writeln_or_pipe(&mut out, &line)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes a line; `Ok(true)` if the reader went away (not an error).
pub(super) fn writeln_or_pipe(out: &mut impl std::io::Write, line: &str) -> Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e.into()),
    }
}

pub fn run_dump(g: &GlobalArgs, args: &DumpArgs) -> Result<()> {
    use kura::format::tree::Payload;
    let repo = g.open_admin("dump")?;
    let index = g.synced_index(&repo)?;
    let (_, snap) = snapshot::find(&repo, &args.snapshot)?;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let comps = kura::ops::snapshot_path(&args.path);
    let entry = if comps.is_empty() {
        None
    } else {
        Some(
            kura::snapshot::tree::lookup(&store, snap.tree_id()?, &comps)?
                .ok_or_else(|| not_found("no such path in the snapshot"))?,
        )
    };
    if let Some(e) = &entry
        && let Payload::File(content) = &e.payload
    {
        let mut out = std::io::stdout().lock();
        return match kura::snapshot::tree::write_content(&store, content, e.meta.size, &mut out) {
            Ok(_) => Ok(()),
            Err(e) if is_broken_pipe(&e) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    dump_tar(&store, &snap.tree_id()?, comps)
}

/// Writes a directory (or the whole snapshot) as a tar stream to stdout.
fn dump_tar(store: &ChunkStore<'_>, root: &kura::id::ChunkId, path: Vec<Vec<u8>>) -> Result<()> {
    use std::io::{IsTerminal, Write};
    if std::io::stdout().is_terminal() {
        anyhow::bail!("refusing to write a tar stream to a terminal: redirect or pipe it");
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let options = kura::ops::tar::TarOptions { path };
    let written = kura::ops::tar::dump_tar(store, root, &options, &mut out).and_then(|report| {
        out.flush()
            .map_err(|e| kura::Error::io("writing the tar stream", e))?;
        Ok(report)
    });
    match written {
        Ok(report) => {
            for p in &report.skipped {
                eprintln!(
                    "warning: {}: a socket cannot be stored in tar; left out",
                    escaped(p)
                );
            }
            Ok(())
        }
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn is_broken_pipe(e: &kura::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
