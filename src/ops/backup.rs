//! `backup`: one snapshot of the given paths. Walks each path, reuses the
//! content of files unchanged since the parent snapshot without reading
//! them, chunks the rest (data ranges only: holes cost nothing), stores
//! trees bottom-up, flushes, and commits by writing the snapshot last.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::chunkstore::commit::{Started, commit_check, writing_store};
use crate::chunkstore::index::ChunkIndex;
use crate::chunkstore::{ChunkStore, ChunkStoreOptions, SecureReport};
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::{RawPath, Snapshot, Summary, VERSION};
use crate::format::tree::{Content, Entry, Extent, Metadata, Payload};
use crate::id::{ChunkId, SnapshotId};
use crate::ops::progress::{CountingReader, NoProgress, Progress};
use crate::repository::Repository;
use crate::repository::snapshots;
use crate::snapshot::tree;
use crate::source::exclude::{ExcludeOptions, Excluder};
use crate::source::image::ZeroRunReader;
use crate::source::{NameCache, data_ranges, read_metadata};

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
}

/// What a backup did.
#[derive(Debug, Clone)]
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
    /// or copied (format-spec/12).
    pub secured: SecureReport,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// An in-memory directory of the root tree: the directories leading to
/// the backed-up paths, and the entries of those paths.
#[derive(Default)]
struct RootDir {
    meta: Metadata,
    children: BTreeMap<Vec<u8>, RootNode>,
}

enum RootNode {
    Dir(RootDir),
    Entry(Entry),
}

struct Walker<'s, 'r> {
    store: &'s ChunkStore<'r>,
    progress: &'s dyn Progress,
    excluder: Excluder,
    names: NameCache,
    summary: Summary,
    warnings: Vec<String>,
    /// The file system of the path being walked (for one_file_system).
    device: u64,
    one_file_system: bool,
}

/// Makes `path` absolute and lexically clean (no `.` or `..`).
fn clean_absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Walker<'_, '_> {
    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.summary.warnings += 1;
        self.warnings.push(message);
    }

    /// The entry for `path`; `None` if it cannot be read (with a warning)
    /// or is a directory holding an exclude marker.
    fn entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        parent: Option<&Entry>,
    ) -> Result<Option<Entry>> {
        let md = match fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let ft = md.file_type();
        if ft.is_dir() && self.excluder.marked(path) {
            return Ok(None);
        }
        let (meta, xattr_error) = read_metadata(path, &md, &mut self.names);
        if let Some(e) = xattr_error {
            self.warn(format!("{}: extended attributes: {e}", path.display()));
        }
        let payload = if ft.is_dir() {
            self.summary.dirs += 1;
            let parent_dir = match parent.map(|p| &p.payload) {
                Some(Payload::Dir(id)) => Some(*id),
                _ => None,
            };
            if self.one_file_system && md.dev() != self.device {
                Payload::Dir(tree::store_directory(self.store, Vec::new())?)
            } else {
                match self.directory(path, parent_dir)? {
                    Some(id) => Payload::Dir(id),
                    None => return Ok(None),
                }
            }
        } else if ft.is_file() {
            self.summary.files += 1;
            self.summary.bytes += meta.size;
            let reusable = match unchanged_content(parent, &meta) {
                Some(c) if tree::content_is_stored(self.store, &c, meta.size)? => Some(c),
                _ => None, // changed, or its data was lost: read it again
            };
            let content = if let Some(content) = reusable {
                self.summary.files_unchanged += 1;
                self.progress.bytes(meta.size);
                content
            } else {
                match self.file_content(path, &md)? {
                    Ok(content) => content,
                    Err(warning) => {
                        self.warn(format!("{}: {warning}", path.display()));
                        return Ok(None);
                    }
                }
            };
            self.progress.file_done();
            Payload::File(content)
        } else {
            self.summary.others += 1;
            if ft.is_symlink() {
                match fs::read_link(path) {
                    Ok(t) => Payload::Symlink(t.as_os_str().as_bytes().to_vec()),
                    Err(e) => {
                        self.warn(format!("{}: {e}", path.display()));
                        return Ok(None);
                    }
                }
            } else if ft.is_char_device() {
                Payload::CharDevice(md.rdev())
            } else if ft.is_block_device() {
                Payload::BlockDevice(md.rdev())
            } else if ft.is_fifo() {
                Payload::Fifo
            } else {
                Payload::Socket
            }
        };
        Ok(Some(Entry {
            name,
            meta,
            payload,
        }))
    }

    /// Stores directory `path` and returns its tree id, or `None` if it
    /// cannot be listed.
    fn directory(&mut self, path: &Path, parent: Option<ChunkId>) -> Result<Option<ChunkId>> {
        let listing = match fs::read_dir(path)
            .and_then(std::iter::Iterator::collect::<std::io::Result<Vec<_>>>)
        {
            Ok(l) => l,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let parent_entries: HashMap<Vec<u8>, Entry> = match parent {
            Some(id) => parent_tree(path, tree::load_directory(self.store, &id))?
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
            None => HashMap::new(),
        };
        let mut names: Vec<Vec<u8>> = listing
            .iter()
            .map(|d| d.file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            if self.excluder.excludes(&child) {
                continue;
            }
            if let Some(e) = self.entry(&child, name.clone(), parent_entries.get(&name))? {
                entries.push(e);
            }
        }
        tree::store_directory(self.store, entries).map(Some)
    }

    /// Chunks a file's data ranges; holes between them are recorded, not
    /// read. The inner error is a problem with the file (a warning), the
    /// outer one a problem with the repository (fatal).
    fn file_content(
        &mut self,
        path: &Path,
        md: &fs::Metadata,
    ) -> Result<std::result::Result<Content, String>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let size = md.len();
        let mut extents = Vec::new();
        let mut pos = 0u64;
        for (offset, len) in data_ranges(&file, size) {
            if offset > pos {
                extents.push(Extent::Hole { len: offset - pos });
                self.progress.bytes(offset - pos);
            }
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                return Ok(Err(e.to_string()));
            }
            let mut reader = WatchedReader {
                inner: CountingReader {
                    inner: (&mut file).take(len),
                    progress: self.progress,
                },
                error: None,
            };
            let refs = match self.store.put_stream(&mut reader) {
                Ok(refs) => refs,
                Err(_) if reader.error.is_some() => {
                    return Ok(Err(reader.error.unwrap_or_default()));
                }
                Err(e) => return Err(e),
            };
            let got: u64 = refs.iter().map(|r| u64::from(r.len)).sum();
            extents.extend(refs.into_iter().map(|r| Extent::Data {
                id: r.id,
                len: r.len,
            }));
            pos = offset + got;
            if got != len {
                return Ok(Err("changed while it was read (shrank)".into()));
            }
        }
        if pos < size {
            extents.push(Extent::Hole { len: size - pos });
            self.progress.bytes(size - pos);
        }
        match file.metadata() {
            Ok(after)
                if after.len() == size
                    && after.mtime() == md.mtime()
                    && after.mtime_nsec() == md.mtime_nsec() => {}
            Ok(_) => return Ok(Err("changed while it was read".into())),
            Err(e) => return Ok(Err(e.to_string())),
        }
        tree::store_content(self.store, extents).map(Ok)
    }
}

/// A reader that remembers its own failure, so a failed stream can be told
/// apart from a failed repository write.
struct WatchedReader<R> {
    inner: R,
    error: Option<String>,
}

impl<R: Read> Read for WatchedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| self.error = Some(e.to_string()))
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
    let same = p.meta.size == meta.size
        && p.meta.mtime == meta.mtime
        && p.meta.ctime == meta.ctime
        && p.meta.ino == meta.ino;
    same.then(|| content.clone())
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
    let time = now_ns();
    let mut paths: Vec<PathBuf> = options
        .paths
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<_>>()?;
    let stream_paths: Vec<PathBuf> = options
        .streams
        .iter()
        .map(|st| stream_path(&st.name))
        .collect::<Result<_>>()?;
    let image_paths: Vec<PathBuf> = options
        .images
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<_>>()?;
    paths.sort();
    paths.dedup();
    if paths.is_empty() && stream_paths.is_empty() && image_paths.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "nothing to back up: no paths given",
        ));
    }
    let raw_paths: Vec<RawPath> = paths
        .iter()
        .chain(&image_paths)
        .chain(&stream_paths)
        .map(|p| RawPath::from_bytes(p.as_os_str().as_bytes()))
        .collect();
    let parent = find_parent(repo, options, &raw_paths)?;
    tracing::debug!(parent = ?parent.as_ref().map(|p| p.0), "backup: parent chosen");
    let (store, adopted) = writing_store(repo, index, options.store)?;
    let mut walker = Walker {
        store: &store,
        progress,
        excluder: Excluder::new(&options.excludes)?,
        names: NameCache::default(),
        summary: Summary::default(),
        warnings: Vec::new(),
        device: 0,
        one_file_system: options.excludes.one_file_system,
    };
    let parent_root = parent.as_ref().map(|(_, s)| s.tree_id()).transpose()?;
    let mut root = RootDir::default();
    for path in &paths {
        walker.add_path(&mut root, path, parent_root)?;
        tracing::debug!(path = %path.display(), "backup: path stored");
    }
    for path in &image_paths {
        walker.add_image(&mut root, path)?;
    }
    for (source, path) in options.streams.iter().zip(&stream_paths) {
        let comps = components(path);
        let (name, dirs) = comps.split_last().expect("stream paths have a name");
        let entry = store_stream(&store, source, name.clone(), &mut walker.summary)?;
        insert_root(&mut root, dirs, entry, |_| stream_metadata(0o700, 0));
    }
    let tree_id = store_root(&store, root)?;
    store.flush()?;
    tracing::debug!("backup: flushed");
    let secured = commit_check(&store, &started)?;
    let stats = store.stats();
    let mut summary = walker.summary;
    summary.chunks_new = stats.chunks_new;
    summary.bytes_stored = stats.bytes_stored;
    let snap = Snapshot {
        version: VERSION,
        tree: tree_id.to_hex(),
        parent: parent.as_ref().map(|(id, _)| id.to_hex()),
        time,
        end_time: now_ns(),
        hostname: options.hostname.clone(),
        username: std::env::var("USER").unwrap_or_default(),
        paths: raw_paths,
        tags: options.tags.clone(),
        program: format!("kura {}", env!("CARGO_PKG_VERSION")),
        incomplete: summary.warnings > 0,
        summary,
        copy_of: None,
    };
    let id = snapshots::save(repo, &snap)?;
    Ok(BackupReport {
        snapshot: id,
        parent: parent.map(|(id, _)| id),
        summary,
        warnings: walker.warnings,
        packs_adopted: adopted.packs.len(),
        packs_refused: adopted
            .damaged
            .iter()
            .map(|(id, e)| format!("pack {id}: {e}"))
            .collect(),
        secured,
    })
}

fn find_parent(
    repo: &Repository,
    options: &BackupOptions,
    paths: &[RawPath],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match options.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(id) => Ok(Some((id, snapshots::load(repo, &id)?))),
        ParentChoice::Latest => Ok(snapshots::list(repo)?
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == options.hostname && s.paths == paths)),
    }
}

/// Puts `entry` into the root tree below `dirs`, creating the directories
/// on the way with the metadata `dir_meta` gives for their absolute path.
fn insert_root(
    root: &mut RootDir,
    dirs: &[Vec<u8>],
    entry: Entry,
    mut dir_meta: impl FnMut(&Path) -> Metadata,
) {
    let mut node = root;
    let mut real = PathBuf::from("/");
    for d in dirs {
        real.push(std::ffi::OsStr::from_bytes(d));
        let child = node.children.entry(d.clone()).or_insert_with(|| {
            let meta = dir_meta(&real);
            RootNode::Dir(RootDir {
                meta,
                children: BTreeMap::new(),
            })
        });
        node = match child {
            RootNode::Dir(d) => d,
            RootNode::Entry(_) => return, // an ancestor path was backed up whole
        };
    }
    node.children
        .insert(entry.name.clone(), RootNode::Entry(entry));
}

/// The components of an absolute, clean path, as bytes.
fn components(path: &Path) -> Vec<Vec<u8>> {
    path.components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect()
}

/// The absolute in-snapshot path of a stream named `name` (`db/site.sql`
/// becomes `/db/site.sql`); `..` and empty names are refused.
fn stream_path(name: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("stream name {} may not contain ..", name.display()),
                ));
            }
        }
    }
    if out.as_os_str().len() == 1 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a stream needs a file name",
        ));
    }
    Ok(out)
}

/// Metadata of a stream's file (or of a directory leading to it): owned by
/// the backing-up user, timestamped now.
fn stream_metadata(mode: u32, size: u64) -> Metadata {
    let now = now_ns();
    let time = (
        now.div_euclid(1_000_000_000),
        u32::try_from(now.rem_euclid(1_000_000_000)).unwrap_or(0),
    );
    Metadata {
        mode,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime: time,
        ctime: time,
        nlink: 1,
        size,
        ..Metadata::default()
    }
}

/// Stores a command's output (or standard input) as one file entry. A
/// command that fails aborts the backup, with its standard error in the
/// message, before anything is committed.
impl Walker<'_, '_> {
    /// Inserts `entry` into the root tree below the directories `dirs`,
    /// which take the metadata of the real directories.
    fn insert(&mut self, root: &mut RootDir, dirs: &[Vec<u8>], entry: Entry) {
        let names = &mut self.names;
        insert_root(root, dirs, entry, |real| {
            fs::symlink_metadata(real)
                .map(|md| read_metadata(real, &md, names).0)
                .unwrap_or_default()
        });
    }

    /// Backs up one path given on the command line into the root tree.
    fn add_path(&mut self, root: &mut RootDir, path: &Path, parent: Option<ChunkId>) -> Result<()> {
        let md = fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("backing up {}", path.display()), e))?;
        self.device = md.dev();
        let comps = components(path);
        let parent_entry = match parent {
            Some(id) => parent_tree(path, tree::lookup(self.store, id, &comps))?.flatten(),
            None => None,
        };
        let Some((name, dirs)) = comps.split_last() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "backing up / itself is not supported yet",
            ));
        };
        if let Some(entry) = self.entry(path, name.clone(), parent_entry.as_ref())? {
            self.insert(root, dirs, entry);
        }
        Ok(())
    }

    /// Backs up one image into the root tree.
    fn add_image(&mut self, root: &mut RootDir, path: &Path) -> Result<()> {
        let comps = components(path);
        let Some((name, dirs)) = comps.split_last() else {
            return Err(Error::new(ErrorKind::InvalidInput, "/ is not an image"));
        };
        let (entry, warning) = store_image(self.store, path, name.clone(), self)?;
        if let Some(w) = warning {
            self.warn(format!("{}: {w}", path.display()));
        }
        self.insert(root, dirs, entry);
        Ok(())
    }
}

/// Stores a disk image or block device, read once front to back; long
/// runs of zeros become holes (source::image). An image that cannot be read
/// fails the backup (it was named explicitly); one that changed while read
/// is stored with a warning.
fn store_image(
    store: &ChunkStore<'_>,
    path: &Path,
    name: Vec<u8>,
    walker: &mut Walker<'_, '_>,
) -> Result<(Entry, Option<String>)> {
    let err = |e| Error::io(format!("reading image {}", path.display()), e);
    let file = File::open(path).map_err(err)?;
    let md = file.metadata().map_err(err)?;
    if !(md.is_file() || md.file_type().is_block_device()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file nor a block device",
                path.display()
            ),
        ));
    }
    let mut reader = ZeroRunReader::new(CountingReader {
        inner: file,
        progress: walker.progress,
    });
    let mut extents = Vec::new();
    loop {
        let hole = reader.skip_zeros().map_err(err)?;
        if hole > 0 {
            extents.push(Extent::Hole { len: hole });
        }
        if reader.at_end().map_err(err)? {
            break;
        }
        let refs = store.put_stream(&mut reader)?;
        extents.extend(refs.into_iter().map(|r| Extent::Data {
            id: r.id,
            len: r.len,
        }));
    }
    let (mut meta, _) = read_metadata(path, &md, &mut walker.names);
    meta.size = reader.position();
    meta.nlink = 1;
    walker.summary.files += 1;
    walker.summary.bytes += meta.size;
    walker.progress.file_done();
    let changed = fs::metadata(path).ok().is_none_or(|after| {
        md.is_file()
            && (after.len(), after.mtime(), after.mtime_nsec())
                != (md.len(), md.mtime(), md.mtime_nsec())
    });
    let entry = Entry {
        name,
        meta,
        payload: Payload::File(tree::store_content(store, extents)?),
    };
    Ok((
        entry,
        changed.then(|| "changed while it was read".to_owned()),
    ))
}

fn store_stream(
    store: &ChunkStore<'_>,
    source: &StreamSource,
    name: Vec<u8>,
    summary: &mut Summary,
) -> Result<Entry> {
    let refs = match &source.command {
        None => store.put_stream(std::io::stdin())?,
        Some(cmd) => run_command(store, cmd)?,
    };
    let size: u64 = refs.iter().map(|r| u64::from(r.len)).sum();
    summary.files += 1;
    summary.bytes += size;
    let extents = refs
        .into_iter()
        .map(|r| Extent::Data {
            id: r.id,
            len: r.len,
        })
        .collect();
    Ok(Entry {
        name,
        meta: stream_metadata(0o600, size),
        payload: Payload::File(tree::store_content(store, extents)?),
    })
}

fn run_command(store: &ChunkStore<'_>, cmd: &str) -> Result<Vec<crate::chunkstore::ChunkRef>> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let stdout = child.stdout.take().expect("piped");
    let stored = store.put_stream(stdout);
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for {cmd:?}"), e))?;
    let text = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..])
            .trim()
            .to_owned();
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("command {cmd:?} failed ({status}); nothing was committed: {tail}"),
        ));
    }
    stored
}

fn store_root(store: &ChunkStore<'_>, dir: RootDir) -> Result<ChunkId> {
    let mut entries = Vec::with_capacity(dir.children.len());
    for (name, node) in dir.children {
        entries.push(match node {
            RootNode::Entry(e) => e,
            RootNode::Dir(d) => {
                let meta = Metadata {
                    size: 0,
                    ..d.meta.clone()
                };
                Entry {
                    name,
                    meta,
                    payload: Payload::Dir(store_root(store, d)?),
                }
            }
        });
    }
    tree::store_directory(store, entries)
}
