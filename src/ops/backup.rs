//! Operations layer: `backup`, one snapshot of the given paths. Chooses
//! the parent snapshot, walks each path with the source layer's walker,
//! reuses the content of files unchanged since the parent without reading
//! them, puts the rest (data ranges only: holes cost nothing), images and
//! streams into the chunk store (small files read, cut and hashed ahead
//! by worker threads, [`read_ahead`], and put in walk order), stores
//! trees bottom-up, flushes, and commits by the chunk store's commit
//! protocol, writing the snapshot last.
//!
//! Owned invariant: the snapshot is written only after everything it
//! refers to is durable, indexed and secured against concurrent prunes
//! (`chunkstore::commit`).

mod read_ahead;
mod root;
mod sink;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::chunkstore::commit::{Started, commit_check, writing_store};
use crate::chunkstore::index::{ChunkIndex, RebuildReport};
use crate::chunkstore::{ChunkStore, ChunkStoreOptions, SecureReport};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::{RawPath, Snapshot, Summary, VERSION};
use crate::format::tree::{Content, Entry, Extent, Metadata, Payload};
use crate::id::{ChunkId, SnapshotId};
use crate::ops::progress::{NoProgress, Progress};
use crate::repository::Repository;
use crate::repository::snapshots;
use crate::snapshot::tree::ContentBuilder;
use crate::snapshot::{files_cache, tree};
use crate::source::command::{run_command, stream_metadata, stream_path};
use crate::source::exclude::ExcludeOptions;
use crate::source::file::read_file;
use crate::source::image::read_image;
use crate::source::walk::{Found, Visitor, Walker, clean_absolute, components};
use crate::source::{ContentSink, NameCache, lstat_metadata, read_metadata, special_payload};
use read_ahead::{Candidate, ReadAhead, Stamp};
use root::{RootDir, insert_root, store_root};
use sink::StoreSink;

/// Which snapshot unchanged files are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Latest,
    /// Read every file.
    None,
    Id(SnapshotId),
}

/// A stream stored as one file of the snapshot: a command's standard
/// output (a database dump) or this process's standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSource {
    /// Where the stream appears in the snapshot, e.g. `db/site.sql`.
    pub name: PathBuf,
    /// A shell command whose output is stored; `None` reads standard input.
    pub command: Option<String>,
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub streams: Vec<StreamSource>,
    /// Disk images or block devices, read whole with zero runs as holes
    /// (source::image); stored as regular files at their absolute paths.
    pub images: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub hostname: String,
    pub parent: ParentChoice,
    pub excludes: ExcludeOptions,
    pub store: ChunkStoreOptions,
    /// The snapshot's start and end times, and streams' mtimes.
    pub clock: Clock,
    /// The cache root under which a put-only key's backup keeps its files
    /// cache (`snapshot::files_cache`); `None` keeps none.
    pub files_cache: Option<PathBuf>,
    /// Threads reading small files ahead of the walk ([`read_ahead`]; 0:
    /// every file is read on the walk's own thread); `None`: one per core,
    /// at most 4. The snapshot is the same either way.
    pub read_ahead: Option<usize>,
}

/// What a backup did. Serialized as `kura backup --json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub summary: Summary,
    /// Files that could not be read, or changed while read.
    pub warnings: Vec<String>,
    /// Orphan packs of an interrupted backup that were indexed and reused.
    pub packs_adopted: usize,
    /// Unindexed packs whose header did not authenticate (left alone).
    pub packs_refused: Vec<String>,
    /// Packs a concurrent prune condemned that the commit check took back
    /// or copied (format-spec/12). Its counts sit beside the others.
    #[serde(flatten)]
    pub secured: SecureReport,
}

/// Backs up `options.paths` into a new snapshot of `repo`.
///
/// # Errors
/// Repository errors; a path that does not exist at all is an error, files
/// that cannot be read are warnings (the snapshot is marked incomplete).
pub fn backup(
    repo: &Repository,
    index: &ChunkIndex,
    options: &BackupOptions,
) -> Result<BackupReport> {
    backup_with_progress(repo, index, options, &NoProgress)
}

/// [`backup`], reporting progress to `progress`.
///
/// # Errors
/// As [`backup`].
pub fn backup_with_progress(
    repo: &Repository,
    index: &ChunkIndex,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Started::now();
    let time = options.clock.now_ns();
    let sources = Sources::resolve(options)?;
    let raw_paths = sources.raw_paths();
    let parent = find_parent(repo, options, &raw_paths)?;
    tracing::debug!(parent = ?parent.as_ref().map(|p| p.0), "backup: parent chosen");
    let (store, adopted) = writing_store(repo, index, options.store)?;
    let mut walker = Walker::new(&options.excludes)?;
    let mut archiver = Archiver::new(&store, progress, options.clock);
    let cache_file = files_cache_file(repo, options, &raw_paths);
    if let Some(file) = &cache_file {
        if parent.is_none() && options.parent == ParentChoice::Latest {
            archiver.cache_in = files_cache::Lookup::open(file);
        }
        archiver.cache_out = files_cache::Writer::create(file);
    }
    let parent_root = parent.as_ref().map(|(_, s)| s.tree_id()).transpose()?;
    let readers = options.read_ahead.unwrap_or_else(read_ahead_workers);
    let root = read_ahead::run(&store, readers, |ahead| {
        archiver.ahead = Some(ahead.clone());
        let root = archiver.root(&mut walker, options, &sources, parent_root);
        archiver.ahead = None;
        root
    })?;
    let tree_id = store_root(&store, root)?;
    store.flush()?;
    tracing::debug!("backup: flushed");
    let secured = commit_check(&store, &started)?;
    let stats = store.stats();
    let mut summary = archiver.summary;
    summary.chunks_new = stats.chunks_new;
    summary.bytes_stored = stats.bytes_stored;
    let parent = parent.map(|(id, _)| id);
    let snap = new_snapshot(options, tree_id, parent, raw_paths, time, summary);
    let id = snapshots::save(repo, &snap)?;
    if let (Some(cache), Some(file)) = (archiver.cache_out.take(), &cache_file)
        && let Err(e) = cache.commit()
    {
        tracing::warn!("{}: the files cache was not updated: {e}", file.display());
    }
    Ok(BackupReport {
        snapshot: id,
        parent,
        summary,
        warnings: archiver.warnings,
        packs_adopted: adopted.packs.len(),
        packs_refused: refused_packs(&adopted),
        secured,
    })
}

/// Threads reading small files ahead of the walk: one per core, at most 4
/// (the walk's thread and the sealing pool share the cores with them).
fn read_ahead_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The files cache of this backup's sources, for a put-only key that
/// has a cache root: it cannot read its parents' trees. An admin's backup
/// reads its parent's trees instead and keeps none.
fn files_cache_file(
    repo: &Repository,
    options: &BackupOptions,
    paths: &[RawPath],
) -> Option<PathBuf> {
    let root = options
        .files_cache
        .as_deref()
        .filter(|_| !repo.is_admin())?;
    Some(files_cache::cache_file(
        root,
        repo.id(),
        &options.hostname,
        paths,
    ))
}

/// The unindexed packs adoption refused, with why.
fn refused_packs(adopted: &RebuildReport) -> Vec<String> {
    adopted
        .damaged
        .iter()
        .map(|(id, e)| format!("pack {id}: {e}"))
        .collect()
}

/// The snapshot that commits a backup of `tree` started at `time`.
fn new_snapshot(
    options: &BackupOptions,
    tree: ChunkId,
    parent: Option<SnapshotId>,
    paths: Vec<RawPath>,
    time: i64,
    summary: Summary,
) -> Snapshot {
    Snapshot {
        version: VERSION,
        tree: tree.to_hex(),
        parent: parent.map(|id| id.to_hex()),
        time,
        end_time: options.clock.now_ns(),
        hostname: options.hostname.clone(),
        username: std::env::var("USER").unwrap_or_default(),
        paths,
        tags: options.tags.clone(),
        program: format!("kura {}", env!("CARGO_PKG_VERSION")),
        incomplete: summary.warnings > 0,
        summary,
        copy_of: None,
    }
}

/// The absolute, clean paths of what is backed up.
struct Sources {
    /// Paths walked, sorted, each once.
    paths: Vec<PathBuf>,
    images: Vec<PathBuf>,
    /// Where the streams appear in the snapshot, in the order given.
    streams: Vec<PathBuf>,
}

impl Sources {
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if nothing is given or a stream name is
    /// refused; a working directory that cannot be read.
    fn resolve(options: &BackupOptions) -> Result<Self> {
        let mut paths: Vec<PathBuf> = options
            .paths
            .iter()
            .map(|p| clean_absolute(p))
            .collect::<Result<_>>()?;
        let streams: Vec<PathBuf> = options
            .streams
            .iter()
            .map(|st| stream_path(&st.name))
            .collect::<Result<_>>()?;
        let images: Vec<PathBuf> = options
            .images
            .iter()
            .map(|p| clean_absolute(p))
            .collect::<Result<_>>()?;
        paths.sort();
        paths.dedup();
        if paths.is_empty() && streams.is_empty() && images.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "nothing to back up: no paths given",
            ));
        }
        Ok(Self {
            paths,
            images,
            streams,
        })
    }

    /// The snapshot's paths: walked paths, images, then streams.
    fn raw_paths(&self) -> Vec<RawPath> {
        self.paths
            .iter()
            .chain(&self.images)
            .chain(&self.streams)
            .map(|p| RawPath::from_bytes(p.as_os_str().as_bytes()))
            .collect()
    }
}

fn find_parent(
    repo: &Repository,
    options: &BackupOptions,
    paths: &[RawPath],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match options.parent {
        ParentChoice::None => Ok(None),
        // A put-only key cannot open snapshots (format-spec/08): no
        // parent, every file is read again; correct, only slower.
        ParentChoice::Latest if !repo.is_admin() => Ok(None),
        ParentChoice::Id(id) => Ok(Some((id, snapshots::load(repo, &id)?))),
        ParentChoice::Latest => Ok(snapshots::list(repo)?.into_iter().rev().find(|(_, s)| {
            let future = crate::snapshot::is_future(s, options.clock.now_ns());
            s.hostname == options.hostname && s.paths == paths && !future
        })),
    }
}

/// What a backup keeps while it walks: where content goes, the counts and
/// the warnings. As a [`Visitor`] of the source walker it turns each path
/// into a tree entry, storing content and trees on the way.
struct Archiver<'s, 'r> {
    store: &'s ChunkStore<'r>,
    /// Streams' mtimes.
    clock: Clock,
    progress: &'s dyn Progress,
    names: NameCache,
    summary: Summary,
    warnings: Vec<String>,
    /// The previous backup's files cache, read when there is no parent.
    cache_in: Option<files_cache::Lookup>,
    /// The files cache this backup writes.
    cache_out: Option<files_cache::Writer>,
    /// Workers reading small files ahead, while the walk runs.
    ahead: Option<ReadAhead>,
}

/// A directory being walked: its metadata, its tree in the parent, and
/// its number in the read-ahead if its files were planned there.
struct DirVisit {
    meta: Metadata,
    parent: Option<ChunkId>,
    ahead: Option<u64>,
}

impl Visitor for Archiver<'_, '_> {
    type Entry = Entry;
    /// The path's entry in the parent snapshot.
    type Known = Entry;
    type Dir = DirVisit;

    fn unreadable(&mut self, path: &Path, error: &io::Error) {
        self.warn(format!("{}: {error}", path.display()));
    }

    fn leaf(&mut self, found: &Found<'_>, known: Option<&Entry>) -> Result<Option<Entry>> {
        let mut meta = self.metadata(found);
        let payload = if found.lstat.is_file() {
            match self.file(found, &mut meta, known)? {
                Some(content) => Payload::File(content),
                None => return Ok(None),
            }
        } else {
            self.summary.others += 1;
            match special_payload(found.path, found.lstat) {
                Ok(payload) => payload,
                Err(e) => {
                    self.unreadable(found.path, &e);
                    return Ok(None);
                }
            }
        };
        Ok(Some(Entry {
            name: found.name.to_vec(),
            meta,
            payload,
        }))
    }

    fn enter(&mut self, found: &Found<'_>, known: Option<&Entry>) -> Result<DirVisit> {
        let meta = self.metadata(found);
        self.summary.dirs += 1;
        let parent = match known.map(|p| &p.payload) {
            Some(Payload::Dir(id)) => Some(*id),
            _ => None,
        };
        Ok(DirVisit {
            meta,
            parent,
            ahead: None,
        })
    }

    fn known_children(&mut self, path: &Path, dir: &DirVisit) -> Result<HashMap<Vec<u8>, Entry>> {
        let Some(id) = dir.parent else {
            return Ok(HashMap::new());
        };
        Ok(parent_tree(path, tree::load_directory(self.store, &id))?
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect())
    }

    fn upcoming(
        &mut self,
        path: &Path,
        dir: &mut DirVisit,
        names: &[Vec<u8>],
        known: &HashMap<Vec<u8>, Entry>,
    ) {
        let Some(ahead) = &self.ahead else {
            return;
        };
        let files = names
            .iter()
            .filter(
                |name| !matches!(known.get(*name), Some(e) if matches!(e.payload, Payload::Dir(_))),
            )
            .take(read_ahead::PLAN_MAX)
            .map(|name| {
                let path = path.join(std::ffi::OsStr::from_bytes(name));
                let known = match known.get(name) {
                    Some(Entry {
                        meta,
                        payload: Payload::File(_),
                        ..
                    }) => Some(Stamp::of_entry(meta)),
                    Some(_) => None,
                    None => self
                        .cache_in
                        .as_ref()
                        .and_then(|c| c.get(&path))
                        .map(|c| Stamp::of_cached(&c)),
                };
                Candidate { path, known }
            })
            .collect();
        dir.ahead = ahead.plan(files);
    }

    fn leave(&mut self, found: &Found<'_>, dir: DirVisit, children: Vec<Entry>) -> Result<Entry> {
        if let (Some(ahead), Some(n)) = (&self.ahead, dir.ahead) {
            ahead.forget(n);
        }
        Ok(Entry {
            name: found.name.to_vec(),
            meta: dir.meta,
            payload: Payload::Dir(tree::store_directory(self.store, children)?),
        })
    }
}

impl<'s, 'r> Archiver<'s, 'r> {
    fn new(store: &'s ChunkStore<'r>, progress: &'s dyn Progress, clock: Clock) -> Self {
        Self {
            store,
            clock,
            progress,
            names: NameCache::default(),
            summary: Summary::default(),
            warnings: Vec::new(),
            cache_in: None,
            cache_out: None,
            ahead: None,
        }
    }

    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.summary.warnings += 1;
        self.warnings.push(message);
    }

    /// Where the content of one file read from the sources goes; with
    /// `keep`, its extents are kept for the files cache too.
    fn sink(&self, keep: bool) -> StoreSink<'s, 'r> {
        StoreSink {
            store: self.store,
            progress: self.progress,
            content: ContentBuilder::new(self.store),
            kept: keep.then(Vec::new),
        }
    }

    /// The entry metadata of a found path; extended attributes that cannot
    /// be read are left out with a warning.
    fn metadata(&mut self, found: &Found<'_>) -> Metadata {
        let (meta, xattr_error) = read_metadata(found.path, found.lstat, &mut self.names);
        if let Some(e) = xattr_error {
            self.warn(format!(
                "{}: extended attributes: {e}",
                found.path.display()
            ));
        }
        meta
    }

    /// A regular file's content: the parent's if the file is unchanged and
    /// that content is still stored, else read again. A file that changed
    /// while read is stored as read (`meta.size` set to what was read),
    /// with a warning. One that cannot be read keeps the parent's version
    /// (its metadata too), with a warning; `None` if there is none.
    fn file(
        &mut self,
        found: &Found<'_>,
        meta: &mut Metadata,
        known: Option<&Entry>,
    ) -> Result<Option<Content>> {
        self.summary.files += 1;
        self.summary.bytes += meta.size;
        let reusable = match unchanged_content(known, meta) {
            Some(c) if tree::content_is_stored(self.store, &c, meta.size)? => Some((c, None)),
            _ => match known {
                None => self.cached_content(found.path, meta)?,
                Some(_) => None, // changed, or its data was lost: read it again
            },
        };
        let (content, extents) = if let Some(reused) = reusable {
            self.summary.files_unchanged += 1;
            self.progress.bytes(meta.size);
            reused
        } else {
            let mut sink = self.sink(self.cache_out.is_some());
            let taken = self
                .ahead
                .as_ref()
                .and_then(|a| a.take(found.path, Stamp::of(found.lstat)));
            let read = match taken {
                Some(Ok((prepared, read))) => {
                    sink.prepared(prepared)?;
                    Ok(read)
                }
                Some(Err(warning)) => Err(warning),
                None => read_file(found.path, found.lstat, &mut sink)?,
            };
            match read {
                Ok(read) => {
                    if let Some(why) = &read.changed {
                        self.warn(format!("{}: {why}", found.path.display()));
                        meta.size = read.size;
                    }
                    let (content, extents) = sink.finish()?;
                    // A file that changed while read is not cached: its
                    // times may not say so next time.
                    (content, extents.filter(|_| read.changed.is_none()))
                }
                Err(warning) => return self.kept_from_parent(found, meta, known, &warning),
            }
        };
        if let Some(extents) = extents {
            self.cache(found.path, meta, &content, extents);
        }
        self.progress.file_done();
        Ok(Some(content))
    }

    /// The files cache's content for an unchanged file (same size, times
    /// and inode), with its extents, if the index still lists every chunk
    /// it names; `None` means read the file.
    fn cached_content(
        &mut self,
        path: &Path,
        meta: &Metadata,
    ) -> Result<Option<(Content, Option<Vec<Extent>>)>> {
        let Some(cached) = self.cache_in.as_ref().and_then(|c| c.get(path)) else {
            return Ok(None);
        };
        let same = Stamp::of_cached(&cached) == Stamp::of_entry(meta);
        if !same || !self.store.all_stored(&cached.chunk_ids())? {
            return Ok(None);
        }
        Ok(Some((cached.content, Some(cached.extents))))
    }

    /// Records a stored file in the files cache being written; a cache
    /// that cannot be written is abandoned with a warning in the log.
    fn cache(&mut self, path: &Path, meta: &Metadata, content: &Content, extents: Vec<Extent>) {
        let Some(out) = self.cache_out.as_mut() else {
            return;
        };
        let entry = files_cache::CachedFile {
            size: meta.size,
            mtime: meta.mtime,
            ctime: meta.ctime,
            ino: meta.ino,
            content: content.clone(),
            extents,
        };
        if let Err(e) = out.put(path, &entry) {
            tracing::warn!("the files cache is not written: {e}");
            self.cache_out = None;
        }
    }

    /// The parent's version of a file that could not be read (with its
    /// metadata, so size and content agree), if the parent has one still
    /// stored; `None` otherwise. Either way with a warning.
    fn kept_from_parent(
        &mut self,
        found: &Found<'_>,
        meta: &mut Metadata,
        known: Option<&Entry>,
        warning: &str,
    ) -> Result<Option<Content>> {
        let path = found.path.display();
        let older = match known {
            Some(Entry {
                payload: Payload::File(content),
                meta: old,
                ..
            }) if tree::content_is_stored(self.store, content, old.size)? => {
                Some((content.clone(), old.clone()))
            }
            _ => None,
        };
        let Some((content, old)) = older else {
            self.warn(format!("{path}: {warning}"));
            return Ok(None);
        };
        self.warn(format!(
            "{path}: {warning}; the parent snapshot's version kept"
        ));
        *meta = old;
        self.progress.file_done();
        Ok(Some(content))
    }

    /// The root tree of the snapshot: the walked paths, the images and the
    /// streams, below the directories leading to them.
    fn root(
        &mut self,
        walker: &mut Walker,
        options: &BackupOptions,
        sources: &Sources,
        parent_root: Option<ChunkId>,
    ) -> Result<RootDir> {
        let mut root = RootDir::default();
        for path in &sources.paths {
            self.add_path(walker, &mut root, path, parent_root)?;
            tracing::debug!(path = %path.display(), "backup: path stored");
        }
        for path in &sources.images {
            self.add_image(&mut root, path)?;
        }
        for (source, path) in options.streams.iter().zip(&sources.streams) {
            let comps = components(path);
            let (name, dirs) = comps.split_last().expect("stream paths have a name");
            let entry = self.store_stream(source, name.clone())?;
            insert_root(&mut root, dirs, entry, |_| {
                stream_metadata(0o700, 0, self.clock.now_ns())
            });
        }
        Ok(root)
    }

    /// Inserts `entry` into the root tree below the directories `dirs`,
    /// which take the metadata of the real directories.
    fn insert(&mut self, root: &mut RootDir, dirs: &[Vec<u8>], entry: Entry) {
        let names = &mut self.names;
        insert_root(root, dirs, entry, |real| lstat_metadata(real, names));
    }

    /// Backs up one path given on the command line into the root tree.
    fn add_path(
        &mut self,
        walker: &mut Walker,
        root: &mut RootDir,
        path: &Path,
        parent: Option<ChunkId>,
    ) -> Result<()> {
        let md = fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("backing up {}", path.display()), e))?;
        let comps = components(path);
        let parent_entry = match parent {
            Some(id) => parent_tree(path, tree::lookup(self.store, id, &comps))?.flatten(),
            None => None,
        };
        let Some((_, dirs)) = comps.split_last() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "backing up / itself is not supported yet",
            ));
        };
        if let Some(entry) = walker.walk(self, path, &md, parent_entry.as_ref())? {
            self.insert(root, dirs, entry);
        }
        Ok(())
    }

    /// Backs up one disk image or block device into the root tree. An
    /// image that cannot be read fails the backup (it was named
    /// explicitly); one that changed while read is stored with a warning.
    fn add_image(&mut self, root: &mut RootDir, path: &Path) -> Result<()> {
        let comps = components(path);
        let Some((name, dirs)) = comps.split_last() else {
            return Err(Error::new(ErrorKind::InvalidInput, "/ is not an image"));
        };
        let mut sink = self.sink(false);
        let image = read_image(path, &mut self.names, &mut sink)?;
        let (content, _) = sink.finish()?;
        self.summary.files += 1;
        self.summary.bytes += image.meta.size;
        self.progress.file_done();
        let entry = Entry {
            name: name.clone(),
            meta: image.meta,
            payload: Payload::File(content),
        };
        if image.changed {
            self.warn(format!("{}: changed while it was read", path.display()));
        }
        self.insert(root, dirs, entry);
        Ok(())
    }

    /// Stores a command's output (or standard input) as one file entry. A
    /// command that fails aborts the backup, with its standard error in the
    /// message, before anything is committed.
    fn store_stream(&mut self, source: &StreamSource, name: Vec<u8>) -> Result<Entry> {
        // Streams are not in the scan's total: no progress for them.
        let mut sink = StoreSink {
            progress: &NoProgress,
            ..self.sink(false)
        };
        let size = match &source.command {
            None => sink.data(&mut std::io::stdin())?,
            Some(cmd) => run_command(cmd, |mut stdout| sink.data(&mut stdout))?,
        };
        let (content, _) = sink.finish()?;
        self.summary.files += 1;
        self.summary.bytes += size;
        Ok(Entry {
            name,
            meta: stream_metadata(0o600, size, self.clock.now_ns()),
            payload: Payload::File(content),
        })
    }
}

/// What the parent snapshot has for `path`; `None` if its trees are lost
/// or damaged (the files below are then read again, as without a parent).
fn parent_tree<T>(path: &Path, loaded: Result<T>) -> Result<Option<T>> {
    match loaded {
        Ok(t) => Ok(Some(t)),
        Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
            tracing::warn!(
                "{}: the parent snapshot's tree is unreadable ({e}); reading again",
                path.display()
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The parent's content for a file whose size, times and inode are those
/// recorded in the parent snapshot.
fn unchanged_content(parent: Option<&Entry>, meta: &Metadata) -> Option<Content> {
    let p = parent?;
    let Payload::File(content) = &p.payload else {
        return None;
    };
    (Stamp::of_entry(&p.meta) == Stamp::of_entry(meta)).then(|| content.clone())
}
