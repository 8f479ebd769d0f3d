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

use crate::chunkstore::{ChunkStore, ChunkStoreOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::{RawPath, Snapshot, Summary, VERSION};
use crate::format::tree::{Content, Entry, Extent, Metadata, Payload};
use crate::id::{ChunkId, SnapshotId};
use crate::index::ChunkIndex;
use crate::repo::Repository;
use crate::source::{NameCache, data_ranges, read_metadata};
use crate::{snapshot, tree};

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

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub hostname: String,
    pub parent: ParentChoice,
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
    names: NameCache,
    summary: Summary,
    warnings: Vec<String>,
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

    /// The entry for `path`, or `None` (with a warning) if it cannot be read.
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
        let (meta, xattr_error) = read_metadata(path, &md, &mut self.names);
        if let Some(e) = xattr_error {
            self.warn(format!("{}: extended attributes: {e}", path.display()));
        }
        let ft = md.file_type();
        let payload = if ft.is_dir() {
            self.summary.dirs += 1;
            let parent_dir = match parent.map(|p| &p.payload) {
                Some(Payload::Dir(id)) => Some(*id),
                _ => None,
            };
            match self.directory(path, parent_dir)? {
                Some(id) => Payload::Dir(id),
                None => return Ok(None),
            }
        } else if ft.is_file() {
            self.summary.files += 1;
            self.summary.bytes += meta.size;
            if let Some(content) = unchanged_content(parent, &meta) {
                self.summary.files_unchanged += 1;
                Payload::File(content)
            } else {
                match self.file_content(path, &md)? {
                    Ok(content) => Payload::File(content),
                    Err(warning) => {
                        self.warn(format!("{}: {warning}", path.display()));
                        return Ok(None);
                    }
                }
            }
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
            Some(id) => tree::load_directory(self.store, &id)?
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
            }
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                return Ok(Err(e.to_string()));
            }
            let mut reader = WatchedReader {
                inner: (&mut file).take(len),
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
    let time = now_ns();
    let mut paths: Vec<PathBuf> = options
        .paths
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<_>>()?;
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "nothing to back up: no paths given",
        ));
    }
    let raw_paths: Vec<RawPath> = paths
        .iter()
        .map(|p| RawPath::from_bytes(p.as_os_str().as_bytes()))
        .collect();
    let parent = find_parent(repo, options, &raw_paths)?;
    let store = ChunkStore::new(repo, index, options.store);
    let mut walker = Walker {
        store: &store,
        names: NameCache::default(),
        summary: Summary::default(),
        warnings: Vec::new(),
    };
    let parent_root = parent.as_ref().map(|(_, s)| s.tree_id()).transpose()?;
    let mut root = RootDir::default();
    for path in &paths {
        fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("backing up {}", path.display()), e))?;
        let comps: Vec<Vec<u8>> = path
            .components()
            .skip(1)
            .map(|c| c.as_os_str().as_bytes().to_vec())
            .collect();
        let parent_entry = match parent_root {
            Some(id) => find_entry(&store, id, &comps)?,
            None => None,
        };
        let Some((name, dirs)) = comps.split_last() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "backing up / itself is not supported yet",
            ));
        };
        let Some(entry) = walker.entry(path, name.clone(), parent_entry.as_ref())? else {
            continue;
        };
        insert_root(&mut root, dirs, entry, &mut walker.names);
    }
    let tree_id = store_root(&store, root)?;
    store.flush()?;
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
    };
    let id = snapshot::save(repo, &snap)?;
    Ok(BackupReport {
        snapshot: id,
        parent: parent.map(|(id, _)| id),
        summary,
        warnings: walker.warnings,
    })
}

fn find_parent(
    repo: &Repository,
    options: &BackupOptions,
    paths: &[RawPath],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match options.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(id) => Ok(Some((id, snapshot::load(repo, &id)?))),
        ParentChoice::Latest => Ok(snapshot::list(repo)?
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == options.hostname && s.paths == paths)),
    }
}

/// The entry at `comps` below the root tree `root`, if there is one.
fn find_entry(store: &ChunkStore<'_>, root: ChunkId, comps: &[Vec<u8>]) -> Result<Option<Entry>> {
    let mut dir = root;
    for (i, name) in comps.iter().enumerate() {
        let Some(e) = tree::load_directory(store, &dir)?
            .into_iter()
            .find(|e| &e.name == name)
        else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(e));
        }
        let Payload::Dir(id) = e.payload else {
            return Ok(None);
        };
        dir = id;
    }
    Ok(None)
}

fn insert_root(root: &mut RootDir, dirs: &[Vec<u8>], entry: Entry, names: &mut NameCache) {
    let mut node = root;
    let mut real = PathBuf::from("/");
    for d in dirs {
        real.push(std::ffi::OsStr::from_bytes(d));
        let child = node.children.entry(d.clone()).or_insert_with(|| {
            let meta = fs::symlink_metadata(&real)
                .map(|md| read_metadata(&real, &md, names).0)
                .unwrap_or_default();
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
