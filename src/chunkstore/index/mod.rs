//! Chunk index layer: which pack holds each blob. The repository's index
//! files are the truth; this module keeps a redb cache of them on local
//! disk so lookups stay cheap and memory stays flat as the repository grows.
//! The cache is never authoritative: [`ChunkIndex::sync`] reconciles it with
//! the index files listed, and [`ChunkIndex::rebuild_from_pack_headers`]
//! refills it from the packs themselves when index files are lost.
//!
//! Besides the index the cache remembers, per pack, what `check` learnt
//! (when it was last verified whole; whether it was found damaged), and
//! every place a blob stored more than once can be read from, so that a
//! lost copy is not the only one a reader tries; and, bounded in size,
//! sealed tree blobs by id, so that a snapshot walked again (ls, restore,
//! a backup's parent) costs no reads of a remote repository.
//!
//! The cache is a cache: no failure of it stops an operation or changes a
//! result. A cache file that does not open (held by another process,
//! corrupt, its directory not creatable) is replaced by one in memory at
//! [`ChunkIndex::open`]. A write that fails later (disk full, read-only,
//! I/O error; redb refuses every further use of a file after one) swaps
//! the handle, once, for an empty database in memory with one warning;
//! the change is dropped, and the next [`ChunkIndex::sync`] (or
//! [`ChunkIndex::refill`], which writers call after each write) loads the
//! repository's index files into it again. What only the cache knew
//! (health marks, cached trees) is forgotten, as with no cache at all.
//!
//! A `copy_translations` table that caches written by earlier versions
//! hold is left alone: `copy` keeps its translations in a store of its own
//! (`ops::copy`), so the table is never read, written or cleared here.

mod adopt;
mod chunk_set;
mod current;
mod files;
mod health;
mod sync;
mod trees;

pub use chunk_set::{ChunkSet, ChunkSetReader};
pub use current::{
    CurrentIndexFiles, IndexFileVisitor, summarize_current_index_files, visit_current_index_files,
};
pub use files::{read_index_file, write_index_file, write_index_file_as};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::{PackEntry, PackKind};
use crate::id::{ChunkId, IndexId, PackId, RepoId};

const CHUNKS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("chunks");
const LOADED: TableDefinition<[u8; 32], ()> = TableDefinition::new("loaded_index_files");
/// Index files named in the supersedes list of a loaded one: never loaded.
const SUPERSEDED: TableDefinition<[u8; 32], ()> = TableDefinition::new("superseded_index_files");
/// Every pack some loaded index file (or adoption) names: pack id -> kind.
const PACKS: TableDefinition<[u8; 32], u8> = TableDefinition::new("packs");
/// Every such pack's size in bytes, so that reads can be widened to
/// aligned windows without reaching past a pack's end
/// ([`crate::chunkstore::READ_WINDOW`]).
const PACK_SIZES: TableDefinition<[u8; 32], u64> = TableDefinition::new("pack_sizes");
/// When `check --read-data` last verified each pack (Unix seconds), so that
/// partial checks take the packs verified longest ago first.
const VERIFIED: TableDefinition<[u8; 32], u64> = TableDefinition::new("verified_packs");
/// Packs `check` found missing or damaged (Unix seconds when it did), until
/// a check reads them whole again. Like `VERIFIED`, about packs: it
/// survives rebuilds.
const DAMAGED: TableDefinition<[u8; 32], u64> = TableDefinition::new("damaged_packs");
/// Further locations of blobs that more than one pack holds (the location
/// in `CHUNKS` is the one loaded last). New tables need no schema change:
/// a cache without them only lacks what they would have recorded.
const ALSO_AT: MultimapTableDefinition<[u8; 32], [u8; LOCATION_LEN]> =
    MultimapTableDefinition::new("duplicate_locations");
/// Sealed tree blobs (envelopes as read from their packs) by chunk id, so
/// that walking a snapshot again reads no tree from the repository. A
/// chunk id always names the same bytes, so entries never go stale and
/// survive refills; each use authenticates them again (the chunk store).
const TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tree_blobs");
/// Bytes of envelopes `TREES` holds, under [`TREE_BYTES_KEY`].
const TREES_SIZE: TableDefinition<&str, u64> = TableDefinition::new("tree_blobs_size");
const TREE_BYTES_KEY: &str = "bytes";
/// Default bound of the tree blob cache: the trees of a few million files.
pub const DEFAULT_TREE_CACHE_LIMIT: u64 = 512 << 20;
/// Cache layout version; a cache of another version is emptied and refilled.
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema";
const SCHEMA: u32 = 3;

/// Bytes of an encoded [`BlobLocation`] in the cache.
const LOCATION_LEN: usize = 49;

/// Where a chunk is stored: its group's envelope in a pack, and its place
/// in the group's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: PackKind,
    /// The group's envelope: offset in the pack, and stored length.
    pub offset: u32,
    pub stored_len: u32,
    /// The chunk in the group's plaintext.
    pub raw_offset: u32,
    pub raw_len: u32,
}

impl BlobLocation {
    fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut v = [0u8; LOCATION_LEN];
        v[..32].copy_from_slice(self.pack.as_bytes());
        v[32..36].copy_from_slice(&self.offset.to_le_bytes());
        v[36..40].copy_from_slice(&self.stored_len.to_le_bytes());
        v[40..44].copy_from_slice(&self.raw_len.to_le_bytes());
        v[44] = self.kind as u8;
        v[45..49].copy_from_slice(&self.raw_offset.to_le_bytes());
        v
    }

    fn decode(v: &[u8; LOCATION_LEN]) -> Result<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
        Ok(Self {
            pack: PackId::from_slice(v),
            offset: u32_at(32),
            stored_len: u32_at(36),
            raw_len: u32_at(40),
            kind: PackKind::from_u8(v[44])?,
            raw_offset: u32_at(45),
        })
    }

    pub fn from_entry(pack: PackId, kind: PackKind, e: &PackEntry) -> Self {
        Self {
            pack,
            kind,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_offset: e.raw_offset,
            raw_len: e.raw_len,
        }
    }

    /// Whether `other` is in the same group (envelope) as this chunk.
    pub fn same_group(&self, other: &Self) -> bool {
        self.pack == other.pack && self.offset == other.offset
    }
}

/// What [`ChunkIndex::sync`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub index_files_loaded: usize,
    pub rebuilt: bool,
    /// Index files that failed authentication or decoding: skipped (the
    /// packs they list are orphans until `repair index` or adoption).
    pub index_files_damaged: usize,
}

/// What [`ChunkIndex::rebuild_from_pack_headers`] found.
#[derive(Debug)]
pub struct RebuildReport {
    /// Packs whose headers were read and indexed.
    pub packs: Vec<IndexedPack>,
    /// Packs whose headers could not be read (or that a check found
    /// damaged, for adoption), with why.
    pub damaged: Vec<(PackId, Error)>,
    /// Packs the cache knew that the listing of `data/` lacks (adoption
    /// only; a rebuild forgets them).
    pub missing: Vec<PackId>,
}

/// The local cache of the repository's index.
pub struct ChunkIndex {
    /// Swapped for a database in memory on the first failed write.
    db: RwLock<Database>,
    /// Whether `db` is a file (a failed write may then fall back).
    on_disk: AtomicBool,
    /// Set when `db` was swapped for an empty one: a refill is due.
    stale: AtomicBool,
    /// Bytes of sealed tree blobs kept at most; 0 keeps none.
    tree_limit: u64,
    /// The page cache it was opened with ([`Self::cache_bytes`]).
    cache_bytes: usize,
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    Error::with_source(ErrorKind::Io, "index cache", e)
}

impl ChunkIndex {
    /// Opens (creating if needed) the cache file at `path`, or a cache in
    /// memory for `None`. A cache held by another process, or one that does
    /// not open, is replaced by one in memory rather than failing.
    ///
    /// # Errors
    /// Only if even an in-memory database cannot be created.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        Self::open_with_cache(path, CACHE_BYTES)
    }

    /// [`ChunkIndex::open`] with a page cache of `cache_bytes` for the
    /// cache file (redb's; what it holds of the file in memory).
    ///
    /// # Errors
    /// Only if even an in-memory database cannot be created.
    pub fn open_with_cache(path: Option<&Path>, cache_bytes: usize) -> Result<Self> {
        let on_disk = path.and_then(|p| {
            if let Err(e) = create_private_dir(p.parent()?) {
                tracing::warn!("index cache {} unusable ({e}); using memory", p.display());
                return None;
            }
            match Database::builder().set_cache_size(cache_bytes).create(p) {
                Ok(db) => Some(db),
                Err(e) => {
                    tracing::warn!("index cache {} unusable ({e}); using memory", p.display());
                    None
                }
            }
        });
        let is_file = on_disk.is_some();
        let db = match on_disk {
            Some(db) => db,
            None => in_memory()?,
        };
        let index = Self {
            db: RwLock::new(db),
            on_disk: AtomicBool::new(is_file),
            stale: AtomicBool::new(false),
            tree_limit: DEFAULT_TREE_CACHE_LIMIT,
            cache_bytes,
        };
        index.write(|_| Ok(()))?; // creates the tables
        if index.schema()? != Some(SCHEMA) {
            index.clear()?;
        }
        Ok(index)
    }

    /// The page cache this index was opened with: the tables that work
    /// beside it (prune's live set, copy's translations) take the same, so
    /// that `--memory` sets them all.
    #[must_use]
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Commits a change to the cache without waiting for the disk: a crash
    /// may take the last changes back to the last [`Self::persist`], which
    /// is harmless because the cache is checked against the repository's
    /// listing on every sync.
    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        self.write_with(Durability::None, f)
    }

    /// Commits `f` with `durability`. If the cache file fails, the handle
    /// falls back to memory (see the module doc) and the change is dropped.
    fn write_with(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        match self.try_write(durability, f) {
            Err(e) if self.on_disk.swap(false, Ordering::SeqCst) => self.fall_back(&e),
            done => done,
        }
    }

    /// Replaces the failed cache file by an empty database in memory, due
    /// for a refill, with one warning.
    fn fall_back(&self, cause: &Error) -> Result<()> {
        tracing::warn!("index cache failed ({cause}); working without it, in memory");
        let db = in_memory()?;
        *self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = db;
        self.stale.store(true, Ordering::SeqCst);
        self.try_write(Durability::None, |_| Ok(()))?;
        self.clear()
    }

    /// The database in use (a file, or memory after a failure).
    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the repository's index files again if the cache fell back to
    /// an empty database since the last sync; a no-op otherwise.
    ///
    /// # Errors
    /// As [`Self::sync`].
    pub fn refill(&self, repo: &crate::repository::Repository) -> Result<()> {
        if self.stale.load(Ordering::SeqCst) {
            self.sync(repo)?;
        }
        Ok(())
    }

    /// Whether the cache fell back to memory and awaits a refill; clears
    /// the mark.
    fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::SeqCst)
    }

    fn try_write(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let mut txn = self.db().begin_write().map_err(db_err)?;
        txn.set_durability(durability).map_err(db_err)?;
        txn.open_table(CHUNKS).map_err(db_err)?;
        txn.open_table(LOADED).map_err(db_err)?;
        txn.open_table(SUPERSEDED).map_err(db_err)?;
        txn.open_table(PACKS).map_err(db_err)?;
        txn.open_table(PACK_SIZES).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.open_table(VERIFIED).map_err(db_err)?;
        txn.open_table(DAMAGED).map_err(db_err)?;
        txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
        txn.open_table(TREES).map_err(db_err)?;
        txn.open_table(TREES_SIZE).map_err(db_err)?;
        f(&txn)?;
        txn.commit().map_err(db_err)
    }

    fn schema(&self) -> Result<Option<u32>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(META).map_err(db_err)?;
        Ok(table.get(SCHEMA_KEY).map_err(db_err)?.map(|v| v.value()))
    }

    /// Makes every change so far durable (one synced commit), so that the
    /// next run starts from it instead of reloading index files.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn persist(&self) -> Result<()> {
        self.write_with(Durability::Immediate, |_| Ok(()))
    }

    /// Where blob `id` is stored, if the cache knows it.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn lookup(&self, id: &ChunkId) -> Result<Option<BlobLocation>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(CHUNKS).map_err(db_err)?;
        match table.get(id.as_bytes()).map_err(db_err)? {
            Some(v) => Ok(Some(BlobLocation::decode(&v.value())?)),
            None => Ok(None),
        }
    }

    /// The size of pack `pack` as its index file gives it, if known.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn pack_size(&self, pack: &PackId) -> Result<Option<u64>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(PACK_SIZES).map_err(db_err)?;
        Ok(table
            .get(pack.as_bytes())
            .map_err(db_err)?
            .map(|v| v.value()))
    }

    /// Looks up many ids in one read transaction.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn lookup_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<BlobLocation>>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(CHUNKS).map_err(db_err)?;
        ids.iter()
            .map(|id| match table.get(id.as_bytes()).map_err(db_err)? {
                Some(v) => Ok(Some(BlobLocation::decode(&v.value())?)),
                None => Ok(None),
            })
            .collect()
    }

    /// Every location of blob `id` the cache knows, the one
    /// [`Self::lookup`] gives first; empty if none.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn locations(&self, id: &ChunkId) -> Result<Vec<BlobLocation>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(CHUNKS).map_err(db_err)?;
        let Some(first) = table.get(id.as_bytes()).map_err(db_err)? else {
            return Ok(Vec::new());
        };
        let first = first.value();
        let mut out = vec![BlobLocation::decode(&first)?];
        let also_at = txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
        for v in also_at.get(id.as_bytes()).map_err(db_err)? {
            let v = v.map_err(db_err)?.value();
            if v != first {
                out.push(BlobLocation::decode(&v)?);
            }
        }
        Ok(out)
    }

    /// Number of blobs the cache knows.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn len(&self) -> Result<u64> {
        let txn = self.db().begin_read().map_err(db_err)?;
        txn.open_table(CHUNKS)
            .map_err(db_err)?
            .len()
            .map_err(db_err)
    }

    /// Whether the cache knows no blob.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Records the packs of index file `id` (already written to the
    /// repository) in one transaction.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn insert(&self, id: Option<&IndexId>, packs: &[IndexedPack]) -> Result<()> {
        self.write(|txn| insert_in(txn, id, packs))
    }

    /// Records several index files in one transaction (fewer commits:
    /// each rewrites the pages it touched).
    ///
    /// Chunk entries go in in chunk-id order: the table's pages are then
    /// visited once each, in order, where the files' order (random ids)
    /// touched a page per entry; on a cache of millions of entries with a
    /// small page cache that was most of a cold sync's time.
    fn insert_files(&self, files: &[(IndexId, IndexFile)]) -> Result<()> {
        self.write(|txn| {
            for (id, file) in files {
                insert_packs_in(txn, Some(id), &file.packs)?;
            }
            // Stable: of two entries for one chunk, the later still wins.
            let mut entries: Vec<(&ChunkId, [u8; LOCATION_LEN])> = files
                .iter()
                .flat_map(|(_, file)| chunk_entries(&file.packs))
                .collect();
            entries.sort_by_key(|(id, _)| *id);
            insert_chunks_in(txn, entries)
        })
    }

    fn clear(&self) -> Result<()> {
        self.write(|txn| {
            for table in [LOADED, SUPERSEDED] {
                txn.delete_table(table).map_err(db_err)?;
                txn.open_table(table).map_err(db_err)?;
            }
            txn.delete_table(CHUNKS).map_err(db_err)?;
            txn.open_table(CHUNKS).map_err(db_err)?;
            txn.delete_table(PACKS).map_err(db_err)?;
            txn.open_table(PACKS).map_err(db_err)?;
            txn.delete_table(PACK_SIZES).map_err(db_err)?;
            txn.open_table(PACK_SIZES).map_err(db_err)?;
            txn.delete_multimap_table(ALSO_AT).map_err(db_err)?;
            txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
            txn.open_table(META)
                .map_err(db_err)?
                .insert(SCHEMA_KEY, SCHEMA)
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn ids(&self, which: TableDefinition<[u8; 32], ()>) -> Result<HashSet<IndexId>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(which).map_err(db_err)?;
        let mut out = HashSet::new();
        for item in table.iter().map_err(db_err)? {
            out.insert(IndexId(item.map_err(db_err)?.0.value()));
        }
        Ok(out)
    }
}

/// [`ChunkIndex::insert`] within transaction `txn`.
fn insert_in(
    txn: &redb::WriteTransaction,
    id: Option<&IndexId>,
    packs: &[IndexedPack],
) -> Result<()> {
    insert_packs_in(txn, id, packs)?;
    insert_chunks_in(txn, chunk_entries(packs))
}

/// The chunk entries of `packs`, in order, as the cache stores them.
fn chunk_entries(packs: &[IndexedPack]) -> impl Iterator<Item = (&ChunkId, [u8; LOCATION_LEN])> {
    packs.iter().flat_map(|pack| {
        pack.entries.iter().map(|e| {
            (
                &e.id,
                BlobLocation::from_entry(pack.id, pack.kind, e).encode(),
            )
        })
    })
}

/// The packs of [`ChunkIndex::insert`] (not their chunks), and index file
/// `id` as loaded, within transaction `txn`.
fn insert_packs_in(
    txn: &redb::WriteTransaction,
    id: Option<&IndexId>,
    packs: &[IndexedPack],
) -> Result<()> {
    let mut known = txn.open_table(PACKS).map_err(db_err)?;
    let mut sizes = txn.open_table(PACK_SIZES).map_err(db_err)?;
    for pack in packs {
        known
            .insert(pack.id.as_bytes(), pack.kind as u8)
            .map_err(db_err)?;
        sizes
            .insert(pack.id.as_bytes(), pack.size)
            .map_err(db_err)?;
    }
    if let Some(id) = id {
        txn.open_table(LOADED)
            .map_err(db_err)?
            .insert(id.as_bytes(), ())
            .map_err(db_err)?;
    }
    Ok(())
}

/// Chunk entries, in the order given (a later one for the same chunk
/// takes its place; the one displaced is kept as another copy), within
/// transaction `txn`.
fn insert_chunks_in<'a>(
    txn: &redb::WriteTransaction,
    entries: impl IntoIterator<Item = (&'a ChunkId, [u8; LOCATION_LEN])>,
) -> Result<()> {
    let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
    let mut also_at = txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
    for (id, loc) in entries {
        let displaced = chunks
            .insert(id.as_bytes(), loc)
            .map_err(db_err)?
            .map(|old| old.value());
        if let Some(old) = displaced.filter(|old| *old != loc) {
            also_at.insert(id.as_bytes(), old).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Memory redb may hold for the pages of an on-disk table (the index
/// cache, prune's live set, copy's translations; `--memory small` halves
/// it). redb's default, 1 GiB, let a first backup's peak memory grow with
/// the data it stored (pages written stay cached: about 5 MB more per GB
/// here), and at 32 MiB restore and copy still grew up to the cap. Lookups
/// by chunk id are spread over the whole table, so a cache smaller than
/// the table saves few reads; those past it come from the operating
/// system's page cache, and at 4 MiB backup, restore and check measured
/// no slower on 1-16 GB (benches/README.md, "Memory").
pub const CACHE_BYTES: usize = 4 << 20;

/// An empty database in memory.
fn in_memory() -> Result<Database> {
    Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(db_err)
}

/// Where the cache of repository `repo` lives under a cache root
/// (format-spec/06-index.md): `<root>/<repository id>/index.redb`.
pub fn cache_file(root: &Path, repo: &RepoId) -> PathBuf {
    root.join(repo.to_hex()).join("index.redb")
}

/// Creates `dir` (and parents) readable by its owner only: the cache holds
/// decrypted metadata.
///
/// # Errors
/// The directory cannot be created or its mode set.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
