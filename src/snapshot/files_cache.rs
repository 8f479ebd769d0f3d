//! Snapshot layer: the files cache (format-spec/06, "Local cache"). For
//! each set of sources a backup remembers, per regular file it stored,
//! the size, times and inode it saw and the content it recorded, so that a
//! backup that cannot read its parent's trees (a put-only key) still skips
//! unchanged files. A cache entry is only a hint: the backup takes it only
//! when every chunk it names is in the index, and anything wrong with the
//! cache (missing, damaged, foreign) costs re-reading, never a wrong
//! snapshot.
//!
//! The cache is a redb file per source set. A backup writes the new one
//! beside the old as it goes (in bounded batches) and renames it into
//! place only after its snapshot is committed ([`Writer::commit`]).

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use crate::error::Result;
use crate::format::snapshot::RawPath;
use crate::format::tree::{Content, Extent, decode_extents, put_extents};
use crate::format::{ByteReader, put_len};
use crate::id::{ChunkId, RepoId};

const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files-v1");

/// Entries written per transaction of the new cache.
const BATCH: usize = 4096;

/// redb's page cache for a files cache (its default is 1 GiB).
const CACHE_BYTES: usize = 8 << 20;

/// Extents a cached entry may hold (about 6 GiB of 32 KiB chunks at the
/// most; a larger file is read again each time).
pub const EXTENTS_MAX: usize = 200_000;

/// What the cache knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
    /// The content as the tree entry records it.
    pub content: Content,
    /// Every extent of the content, in order.
    pub extents: Vec<Extent>,
}

impl CachedFile {
    /// The ids the index must list for the entry to be used: the extent
    /// lists' and the data chunks'.
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        let lists = match &self.content {
            Content::Inline(_) => &[][..],
            Content::Indirect(ids) => &ids[..],
        };
        let data = self.extents.iter().filter_map(|e| match e {
            Extent::Data { id, .. } => Some(*id),
            Extent::Hole { .. } => None,
        });
        lists.iter().copied().chain(data).collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 37 * self.extents.len());
        out.extend_from_slice(&self.size.to_le_bytes());
        for (s, ns) in [self.mtime, self.ctime] {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&ns.to_le_bytes());
        }
        out.extend_from_slice(&self.ino.to_le_bytes());
        match &self.content {
            Content::Inline(_) => out.push(0),
            Content::Indirect(ids) => {
                out.push(1);
                put_len(&mut out, ids.len());
                for id in ids {
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        put_extents(&mut out, &self.extents);
        out
    }

    /// `None` for bytes that are not an entry this code wrote, or whose
    /// extents do not add up to its size.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = ByteReader::new(bytes, "files cache entry");
        let size = r.u64().ok()?;
        let mut time = || Some((i64::from_le_bytes(r.array().ok()?), r.u32().ok()?));
        let (mtime, ctime) = (time()?, time()?);
        let ino = r.u64().ok()?;
        let lists = match r.u8().ok()? {
            0 => None,
            1 => {
                let n = r.count(32).ok()?;
                Some(
                    (0..n)
                        .map(|_| r.id().map(ChunkId))
                        .collect::<Result<Vec<_>>>()
                        .ok()?,
                )
            }
            _ => return None,
        };
        let extents = decode_extents(&mut r).ok()?;
        r.finish().ok()?;
        let total = extents
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.len()))?;
        if total != size || extents.len() > EXTENTS_MAX {
            return None;
        }
        let content = lists.map_or_else(|| Content::Inline(extents.clone()), Content::Indirect);
        Some(Self {
            size,
            mtime,
            ctime,
            ino,
            content,
            extents,
        })
    }
}

/// Where the files cache of a source set lives: one file per repository,
/// host and list of snapshot paths.
pub fn cache_file(cache_root: &Path, repo: &RepoId, host: &str, paths: &[RawPath]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(b"kura files cache v1\0");
    h.update(&(host.len() as u64).to_le_bytes());
    h.update(host.as_bytes());
    for p in paths {
        let bytes = p.to_bytes().unwrap_or_default();
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let name = hex::encode(&h.finalize().as_bytes()[..16]);
    cache_root
        .join(repo.to_hex())
        .join("files")
        .join(format!("{name}.redb"))
}

/// The previous backup's cache of a source set, read-only.
pub struct Lookup {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Kept open while the table is read (dropped after it).
    _db: Database,
}

impl Lookup {
    /// The cache at `file`; `None` (with a note in the log) if there is
    /// none or it cannot be read.
    pub fn open(file: &Path) -> Option<Self> {
        if !file.exists() {
            return None;
        }
        let opened = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(file)
            .map_err(|e| e.to_string())
            .and_then(|db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = txn.open_table(FILES).map_err(|e| e.to_string())?;
                Ok((db, table))
            });
        match opened {
            Ok((db, table)) => Some(Self { table, _db: db }),
            Err(e) => {
                tracing::warn!(
                    "{}: the files cache is unreadable ({e}); unchanged files are read again",
                    file.display()
                );
                None
            }
        }
    }

    /// What the cache holds for the file at `path`, if anything usable.
    pub fn get(&self, path: &Path) -> Option<CachedFile> {
        use std::os::unix::ffi::OsStrExt;
        let value = self.table.get(path.as_os_str().as_bytes()).ok()??;
        CachedFile::decode(value.value())
    }
}

/// The cache a backup is writing: `<file>.new` until [`Writer::commit`].
pub struct Writer {
    db: Database,
    file: PathBuf,
    new: PathBuf,
    batch: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writer {
    /// Starts a new cache for `file` (a stale `.new` of a failed backup
    /// is replaced); `None`, with a note in the log, if it cannot be made.
    pub fn create(file: &Path) -> Option<Self> {
        let new = file.with_extension("redb.new");
        let made = (|| {
            if let Some(dir) = file.parent() {
                private_dirs(dir)?;
            }
            match std::fs::remove_file(&new) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
                _ => {}
            }
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&new)
                .map_err(|e| e.to_string())
        })();
        match made {
            Ok(db) => Some(Self {
                db,
                file: file.to_owned(),
                new,
                batch: Vec::new(),
            }),
            Err(e) => {
                tracing::warn!("{}: no files cache written: {e}", file.display());
                None
            }
        }
    }

    /// Records `entry` for the file at `path`.
    ///
    /// # Errors
    /// A message if the batch could not be written (the cache is then
    /// abandoned by the caller).
    pub fn put(&mut self, path: &Path, entry: &CachedFile) -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        if entry.extents.len() > EXTENTS_MAX {
            return Ok(());
        }
        self.batch
            .push((path.as_os_str().as_bytes().to_vec(), entry.encode()));
        if self.batch.len() >= BATCH {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), String> {
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(Durability::None)
            .map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(FILES).map_err(|e| e.to_string())?;
            for (k, v) in self.batch.drain(..) {
                table.insert(&k[..], &v[..]).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }

    /// Writes what is left, durably, and puts the new cache in place of
    /// the old. Call it only once the snapshot is committed.
    ///
    /// # Errors
    /// A message; the old cache stays.
    pub fn commit(mut self) -> Result<(), String> {
        self.write_batch()?;
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| e.to_string())?;
        txn.open_table(FILES).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        drop(self.db);
        std::fs::rename(&self.new, &self.file).map_err(|e| e.to_string())
    }
}

/// Creates `dir` and its missing parents 0700.
fn private_dirs(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn entry(content: Content, extents: Vec<Extent>) -> CachedFile {
        CachedFile {
            size: extents.iter().map(Extent::len).sum(),
            mtime: (1_700_000_000, 5),
            ctime: (-3, 999_999_999),
            ino: 42,
            content,
            extents,
        }
    }

    #[test]
    fn entries_round_trip_and_name_every_chunk() {
        let extents = vec![
            Extent::Data { id: id(1), len: 10 },
            Extent::Hole { len: 4096 },
            Extent::Data { id: id(2), len: 7 },
        ];
        let inline = entry(Content::Inline(extents.clone()), extents.clone());
        assert_eq!(CachedFile::decode(&inline.encode()), Some(inline.clone()));
        assert_eq!(inline.chunk_ids(), vec![id(1), id(2)]);
        let indirect = entry(Content::Indirect(vec![id(9)]), extents);
        assert_eq!(
            CachedFile::decode(&indirect.encode()),
            Some(indirect.clone())
        );
        assert_eq!(indirect.chunk_ids(), vec![id(9), id(1), id(2)]);
    }

    #[test]
    fn damaged_entries_are_refused() {
        let extents = vec![Extent::Data { id: id(1), len: 10 }];
        let good = entry(Content::Inline(extents.clone()), extents).encode();
        for cut in 0..good.len() {
            assert_eq!(CachedFile::decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(CachedFile::decode(&longer), None);
        let mut wrong_size = good;
        wrong_size[0] ^= 1;
        assert_eq!(CachedFile::decode(&wrong_size), None, "size != extents");
        let mut huge = vec![0u8; 41]; // the fixed fields and an inline tag
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(CachedFile::decode(&huge), None, "a count beyond the bytes");
    }

    #[test]
    fn a_committed_cache_is_found_and_a_failed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([7; 32]);
        let file = cache_file(dir.path(), &repo, "web1", &[RawPath::from_bytes(b"/srv")]);
        let other = cache_file(dir.path(), &repo, "web2", &[RawPath::from_bytes(b"/srv")]);
        assert_ne!(file, other, "another host's sources have their own cache");
        assert!(Lookup::open(&file).is_none());
        let extents = vec![Extent::Data { id: id(1), len: 3 }];
        let e = entry(Content::Inline(extents.clone()), extents);
        let mut w = Writer::create(&file).unwrap();
        w.put(Path::new("/srv/a"), &e).unwrap();
        drop(w); // a backup that failed: nothing in place
        assert!(Lookup::open(&file).is_none());
        let mut w = Writer::create(&file).unwrap();
        for i in 0..(BATCH + 3) {
            w.put(Path::new(&format!("/srv/{i}")), &e).unwrap();
        }
        w.commit().unwrap();
        let found = Lookup::open(&file).unwrap();
        assert_eq!(found.get(Path::new("/srv/7")), Some(e.clone()));
        assert_eq!(
            found.get(Path::new(&format!("/srv/{}", BATCH + 2))),
            Some(e)
        );
        assert_eq!(found.get(Path::new("/srv/a")), None);
        std::fs::write(&file, b"not a database").unwrap();
        assert!(Lookup::open(&file).is_none(), "damage is a miss");
    }
}
