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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

use crate::error::{Error, ErrorKind, Result};
use crate::format::envelope::ObjectType;
use crate::format::index::{self, IndexFile, IndexedPack};
use crate::format::layout;
use crate::format::pack::{PackEntry, PackKind};
use crate::id::{ChunkId, IndexId, PackId, RepoId};
use crate::pack::read_header;
use crate::repo::Repository;

/// How many times [`ChunkIndex::sync`] lists `index/` before it gives up on
/// index files that keep going away between listing and reading.
const SYNC_ROUNDS: usize = 8;

const CHUNKS: TableDefinition<[u8; 32], [u8; 45]> = TableDefinition::new("chunks");
const LOADED: TableDefinition<[u8; 32], ()> = TableDefinition::new("loaded_index_files");
/// Index files named in the supersedes list of a loaded one: never loaded.
const SUPERSEDED: TableDefinition<[u8; 32], ()> = TableDefinition::new("superseded_index_files");
/// Every pack some loaded index file (or adoption) names: pack id -> kind.
const PACKS: TableDefinition<[u8; 32], u8> = TableDefinition::new("packs");
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
const ALSO_AT: MultimapTableDefinition<[u8; 32], [u8; 45]> =
    MultimapTableDefinition::new("duplicate_locations");
/// Chunk ids of another repository (other keys) translated into this
/// one's for the same plaintext, as `copy` learnt them: (that repository's
/// id, its chunk id) -> this repository's chunk id. Like `VERIFIED`, it
/// survives rebuilds: a translation never changes meaning.
const TRANSLATIONS: TableDefinition<[u8; 64], [u8; 32]> = TableDefinition::new("copy_translations");
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
const SCHEMA: u32 = 2;
/// Packs per index file written by adoption: keeps each file far below
/// the decoder's size limit however full the packs are.
const ADOPT_PACKS_PER_FILE: usize = 256;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: PackKind,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl BlobLocation {
    fn encode(&self) -> [u8; 45] {
        let mut v = [0u8; 45];
        v[..32].copy_from_slice(self.pack.as_bytes());
        v[32..36].copy_from_slice(&self.offset.to_le_bytes());
        v[36..40].copy_from_slice(&self.stored_len.to_le_bytes());
        v[40..44].copy_from_slice(&self.raw_len.to_le_bytes());
        v[44] = self.kind as u8;
        v
    }

    fn decode(v: &[u8; 45]) -> Result<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
        Ok(Self {
            pack: PackId::from_slice(v),
            offset: u32_at(32),
            stored_len: u32_at(36),
            raw_len: u32_at(40),
            kind: PackKind::from_u8(v[44])?,
        })
    }

    pub fn from_entry(pack: PackId, kind: PackKind, e: &PackEntry) -> Self {
        Self {
            pack,
            kind,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
        }
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
    db: Database,
    /// Bytes of sealed tree blobs kept at most; 0 keeps none.
    tree_limit: u64,
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
        let on_disk = path.and_then(|p| {
            create_private_dir(p.parent()?).ok()?;
            match Database::create(p) {
                Ok(db) => Some(db),
                Err(e) => {
                    tracing::warn!("index cache {} unusable ({e}); using memory", p.display());
                    None
                }
            }
        });
        let db = match on_disk {
            Some(db) => db,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(db_err)?,
        };
        let index = Self {
            db,
            tree_limit: DEFAULT_TREE_CACHE_LIMIT,
        };
        index.write(|_| Ok(()))?; // creates the tables
        if index.schema()? != Some(SCHEMA) {
            index.clear()?;
        }
        Ok(index)
    }

    /// Commits a change to the cache without waiting for the disk: a crash
    /// may take the last changes back to the last [`Self::persist`], which
    /// is harmless because the cache is checked against the repository's
    /// listing on every sync.
    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        self.write_with(Durability::None, f)
    }

    fn write_with(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(durability).map_err(db_err)?;
        txn.open_table(CHUNKS).map_err(db_err)?;
        txn.open_table(LOADED).map_err(db_err)?;
        txn.open_table(SUPERSEDED).map_err(db_err)?;
        txn.open_table(PACKS).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.open_table(VERIFIED).map_err(db_err)?;
        txn.open_table(DAMAGED).map_err(db_err)?;
        txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
        txn.open_table(TRANSLATIONS).map_err(db_err)?;
        txn.open_table(TREES).map_err(db_err)?;
        txn.open_table(TREES_SIZE).map_err(db_err)?;
        f(&txn)?;
        txn.commit().map_err(db_err)
    }

    fn schema(&self) -> Result<Option<u32>> {
        let txn = self.db.begin_read().map_err(db_err)?;
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

    /// Bounds the tree blob cache to about `bytes` of envelopes (when it
    /// grows past, arbitrary entries are dropped down to three quarters);
    /// 0 turns it off. The default is [`DEFAULT_TREE_CACHE_LIMIT`].
    #[must_use]
    pub fn with_tree_cache_limit(mut self, bytes: u64) -> Self {
        self.tree_limit = bytes;
        self
    }

    /// The sealed envelope of tree blob `id`, if cached. The caller
    /// authenticates it (it is local data, not a repository object) and
    /// calls [`Self::forget_tree`] if that fails.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn cached_tree(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        if self.tree_limit == 0 {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TREES).map_err(db_err)?;
        Ok(table
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Caches sealed tree blobs (envelopes that authenticated, or that were
    /// just sealed), in one transaction.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn cache_trees(&self, blobs: &[(ChunkId, Vec<u8>)]) -> Result<()> {
        if self.tree_limit == 0 || blobs.is_empty() {
            return Ok(());
        }
        self.update_trees(|trees, mut size| {
            for (id, sealed) in blobs {
                let old = trees
                    .insert(id.as_bytes(), sealed.as_slice())
                    .map_err(db_err)?
                    .map_or(0, |v| v.value().len() as u64);
                size = size.saturating_sub(old) + sealed.len() as u64;
            }
            if size > self.tree_limit {
                // Ids are keyed hashes: dropping the first ones drops
                // arbitrary blobs.
                let target = self.tree_limit / 4 * 3;
                while size > target {
                    let Some((_, v)) = trees.pop_first().map_err(db_err)? else {
                        return Ok(0);
                    };
                    size = size.saturating_sub(v.value().len() as u64);
                }
            }
            Ok(size)
        })
    }

    /// Drops tree blob `id` from the cache (its copy failed to
    /// authenticate).
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn forget_tree(&self, id: &ChunkId) -> Result<()> {
        self.update_trees(|trees, size| {
            let old = trees
                .remove(id.as_bytes())
                .map_err(db_err)?
                .map_or(0, |v| v.value().len() as u64);
            Ok(size.saturating_sub(old))
        })
    }

    /// Runs `f` on the tree blob table and the bytes it holds, and records
    /// the bytes `f` returns.
    fn update_trees(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, [u8; 32], &'static [u8]>, u64) -> Result<u64>,
    ) -> Result<()> {
        self.write(|txn| {
            let mut trees = txn.open_table(TREES).map_err(db_err)?;
            let mut sizes = txn.open_table(TREES_SIZE).map_err(db_err)?;
            let size = sizes
                .get(TREE_BYTES_KEY)
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            let size = f(&mut trees, size)?;
            sizes.insert(TREE_BYTES_KEY, size).map_err(db_err)?;
            Ok(())
        })
    }

    /// Where blob `id` is stored, if the cache knows it.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn lookup(&self, id: &ChunkId) -> Result<Option<BlobLocation>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(CHUNKS).map_err(db_err)?;
        match table.get(id.as_bytes()).map_err(db_err)? {
            Some(v) => Ok(Some(BlobLocation::decode(&v.value())?)),
            None => Ok(None),
        }
    }

    /// Looks up many ids in one read transaction.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn lookup_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<BlobLocation>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
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
        let txn = self.db.begin_read().map_err(db_err)?;
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
        let txn = self.db.begin_read().map_err(db_err)?;
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
        self.write(|txn| {
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let mut known = txn.open_table(PACKS).map_err(db_err)?;
            let mut also_at = txn.open_multimap_table(ALSO_AT).map_err(db_err)?;
            for pack in packs {
                known
                    .insert(pack.id.as_bytes(), pack.kind as u8)
                    .map_err(db_err)?;
                for e in &pack.entries {
                    let loc = BlobLocation::from_entry(pack.id, pack.kind, e).encode();
                    let displaced = chunks
                        .insert(e.id.as_bytes(), loc)
                        .map_err(db_err)?
                        .map(|old| old.value());
                    if let Some(old) = displaced.filter(|old| *old != loc) {
                        also_at.insert(e.id.as_bytes(), old).map_err(db_err)?;
                    }
                }
            }
            if let Some(id) = id {
                txn.open_table(LOADED)
                    .map_err(db_err)?
                    .insert(id.as_bytes(), ())
                    .map_err(db_err)?;
            }
            Ok(())
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
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(which).map_err(db_err)?;
        let mut out = HashSet::new();
        for item in table.iter().map_err(db_err)? {
            out.insert(IndexId(item.map_err(db_err)?.0.value()));
        }
        Ok(out)
    }

    /// Brings the cache in line with the repository's index files: loads
    /// new ones, and starts over if one it had loaded is gone. A damaged
    /// index file is skipped with a warning (format-spec/06: its packs'
    /// entries come back from their headers, by adoption or `repair
    /// index`), so one bad file does not stop restores of the rest.
    ///
    /// An index file that is listed and then gone before it is read was
    /// superseded meanwhile (a prune merged it); the replacement is in a
    /// new listing, so the sync starts over, up to [`SYNC_ROUNDS`] times.
    ///
    /// # Errors
    /// A failed listing (never read as "no index files"), backend errors
    /// reading an index file, or cache I/O errors.
    pub fn sync(&self, repo: &Repository) -> Result<SyncReport> {
        let mut round = 1;
        loop {
            match self.sync_once(repo) {
                Err(e) if e.kind() == ErrorKind::NotFound && round < SYNC_ROUNDS => {
                    tracing::debug!("an index file went away while syncing, listing again: {e}");
                    round += 1;
                }
                result => return result,
            }
        }
    }

    /// One round of [`Self::sync`]. A round that fails leaves the cache
    /// as it was, or emptied: index entries are inserted only once every
    /// listed file has been read.
    fn sync_once(&self, repo: &Repository) -> Result<SyncReport> {
        let mut listed = Vec::new();
        for info in repo.backend().list(layout::INDEX_DIR)? {
            listed.push(layout::parse_index_path(&info.path)?);
        }
        let listed_set: HashSet<IndexId> = listed.iter().copied().collect();
        let mut report = SyncReport::default();
        let (mut loaded, mut superseded) = (self.ids(LOADED)?, self.ids(SUPERSEDED)?);
        if loaded.iter().any(|id| !listed_set.contains(id)) {
            self.clear()?;
            (loaded, superseded) = (HashSet::new(), HashSet::new());
            report.rebuilt = true;
        }
        let mut files = HashMap::new();
        let mut damaged = HashSet::new();
        loop {
            for id in &listed {
                if loaded.contains(id)
                    || superseded.contains(id)
                    || files.contains_key(id)
                    || damaged.contains(id)
                {
                    continue;
                }
                match read_index_file(repo, id) {
                    Ok(file) => {
                        files.insert(*id, file);
                    }
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!("index file {id} skipped: {e}");
                        damaged.insert(*id);
                    }
                    Err(e) => return Err(e),
                }
            }
            let newly: HashSet<IndexId> = files
                .values()
                .flat_map(|f| f.supersedes.iter().copied())
                .collect();
            // A new file replaces one already loaded (prune crashed before
            // deleting it, or ran since): start over without the old one.
            if newly.is_disjoint(&loaded) {
                superseded.extend(newly);
                break;
            }
            self.clear()?;
            (loaded, superseded) = (HashSet::new(), HashSet::new());
            report.rebuilt = true;
        }
        report.index_files_damaged = damaged.difference(&superseded).count();
        for (id, file) in files.iter().filter(|(id, _)| !superseded.contains(id)) {
            self.insert(Some(id), &file.packs)?;
            report.index_files_loaded += 1;
        }
        let durability = if report.index_files_loaded > 0 || report.rebuilt {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write_with(durability, |txn| {
            let mut table = txn.open_table(SUPERSEDED).map_err(db_err)?;
            for id in &superseded {
                table.insert(id.as_bytes(), ()).map_err(db_err)?;
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// When pack `id` was last verified whole (Unix seconds), if ever.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn verified_at(&self, id: &PackId) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VERIFIED).map_err(db_err)?;
        Ok(table.get(id.as_bytes()).map_err(db_err)?.map(|v| v.value()))
    }

    /// Records that `packs` were verified whole at `when` (Unix seconds).
    /// The record survives cache rebuilds from index files: it is about
    /// packs, whose names never change meaning.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn mark_verified(&self, packs: &[PackId], when: u64) -> Result<()> {
        self.write_with(Durability::Immediate, |txn| {
            let mut table = txn.open_table(VERIFIED).map_err(db_err)?;
            for p in packs {
                table.insert(p.as_bytes(), when).map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// Records what a check learnt about packs: `damaged` were found
    /// missing or damaged at `when` (Unix seconds); `whole` were read whole
    /// and verified, which clears an earlier mark. Backups and `repair
    /// snapshots` do not rely on marked packs.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn record_pack_health(
        &self,
        damaged: &[PackId],
        whole: &[PackId],
        when: u64,
    ) -> Result<()> {
        if damaged.is_empty() && whole.is_empty() {
            return Ok(()); // no synced commit for nothing
        }
        self.write_with(Durability::Immediate, |txn| {
            let mut table = txn.open_table(DAMAGED).map_err(db_err)?;
            for p in whole {
                table.remove(p.as_bytes()).map_err(db_err)?;
            }
            for p in damaged {
                table.insert(p.as_bytes(), when).map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// The packs a check found missing or damaged and has not found whole
    /// since.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn damaged_packs(&self) -> Result<HashSet<PackId>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DAMAGED).map_err(db_err)?;
        let mut out = HashSet::new();
        for item in table.iter().map_err(db_err)? {
            out.insert(PackId(item.map_err(db_err)?.0.value()));
        }
        Ok(out)
    }

    /// The packs some loaded index file names that `listed` (a listing of
    /// `data/`) lacks: their blobs are lost unless stored elsewhere too.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn packs_missing_from(&self, listed: &HashSet<PackId>) -> Result<Vec<PackId>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(PACKS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let id = PackId(item.map_err(db_err)?.0.value());
            if !listed.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The packs whose blobs a writer must not rely on: those
    /// [`Self::damaged_packs`] names and those missing from `listed`.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn distrusted_packs(&self, listed: &HashSet<PackId>) -> Result<HashSet<PackId>> {
        let mut out = self.damaged_packs()?;
        out.extend(self.packs_missing_from(listed)?);
        Ok(out)
    }

    /// Whether some loaded index file names pack `id`.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn knows_pack(&self, id: &PackId) -> Result<bool> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(PACKS).map_err(db_err)?;
        Ok(table.get(id.as_bytes()).map_err(db_err)?.is_some())
    }

    /// This repository's ids for chunks that repository `from` names
    /// `ids`, where a copy recorded them. An answer only says what the
    /// plaintext's id is here; whether the chunk is stored is the index's
    /// to say.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn translations(&self, from: &RepoId, ids: &[ChunkId]) -> Result<Vec<Option<ChunkId>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TRANSLATIONS).map_err(db_err)?;
        ids.iter()
            .map(|id| {
                let key = translation_key(from, id);
                Ok(table.get(&key).map_err(db_err)?.map(|v| ChunkId(v.value())))
            })
            .collect()
    }

    /// Records that the chunks repository `from` names by the first id of
    /// each pair are named by the second here. Durable with the next
    /// [`Self::persist`].
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn record_translations(&self, from: &RepoId, pairs: &[(ChunkId, ChunkId)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn.open_table(TRANSLATIONS).map_err(db_err)?;
            for (theirs, ours) in pairs {
                table
                    .insert(&translation_key(from, theirs), ours.as_bytes())
                    .map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// Adopts orphan packs (format-spec/07, "Crash states"): packs in the
    /// repository that no index file names, left by a backup that was
    /// killed before writing its index. Their headers are read and
    /// authenticated, and one new index file lists them, so the chunks they
    /// hold are deduplicated against instead of uploaded again. Packs whose
    /// header does not authenticate are left alone and reported.
    ///
    /// Packs in `condemned` (by a prune record) are not orphans: prune
    /// deletes them once ripe (format-spec/12).
    ///
    /// Call it after [`ChunkIndex::sync`]. A pack of a backup still running
    /// elsewhere is adopted too, which is harmless: two index files then
    /// name the same blobs at the same place.
    ///
    /// # Errors
    /// A failed listing (never read as "no packs"), a failed index write,
    /// or cache I/O errors.
    pub fn adopt_orphan_packs(
        &self,
        repo: &Repository,
        level: i32,
        condemned: &HashSet<PackId>,
    ) -> Result<RebuildReport> {
        let marked = self.damaged_packs()?;
        let (mut report, listed) = read_pack_headers(repo, |id| {
            Ok(condemned.contains(id) || marked.contains(id) || self.knows_pack(id)?)
        })?;
        // A pack a check found damaged is not adopted again (after `repair
        // index` left it out): its blobs are stored anew when needed.
        for id in listed.iter().filter(|id| marked.contains(id)) {
            if !self.knows_pack(id)? {
                let why = Error::corrupt("a check found it damaged; not adopted");
                report.damaged.push((*id, why));
            }
        }
        report.missing = self.packs_missing_from(&listed)?;
        let RebuildReport { packs, .. } = &report;
        for chunk in packs.chunks(ADOPT_PACKS_PER_FILE) {
            let file = IndexFile {
                supersedes: Vec::new(),
                packs: chunk.to_vec(),
            };
            let id = write_index_file(repo, &file, level)?;
            self.insert(Some(&id), chunk)?;
        }
        if !packs.is_empty() {
            self.persist()?;
        }
        Ok(report)
    }

    /// Empties the cache and refills it from every pack's header, for when
    /// index files are missing or damaged. Packs whose header cannot be read
    /// are reported with their error; the rest are indexed.
    ///
    /// # Errors
    /// A failed listing or cache I/O errors.
    pub fn rebuild_from_pack_headers(&self, repo: &Repository) -> Result<RebuildReport> {
        let (report, _) = read_pack_headers(repo, |_| Ok(false))?;
        self.clear()?;
        self.insert(None, &report.packs)?;
        self.persist()?;
        Ok(report)
    }
}

fn translation_key(from: &RepoId, id: &ChunkId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(from.as_bytes());
    key[32..].copy_from_slice(id.as_bytes());
    key
}

/// Reads and authenticates the header of every listed pack that `skip`
/// does not rule out; damaged headers are reported, not fatal. Returns the
/// listing too.
fn read_pack_headers(
    repo: &Repository,
    skip: impl Fn(&PackId) -> Result<bool>,
) -> Result<(RebuildReport, HashSet<PackId>)> {
    let mut report = RebuildReport {
        packs: Vec::new(),
        damaged: Vec::new(),
        missing: Vec::new(),
    };
    let mut listed = HashSet::new();
    for info in repo.backend().list(layout::DATA_DIR)? {
        let id = layout::parse_pack_path(&info.path)?;
        listed.insert(id);
        if skip(&id)? {
            continue;
        }
        match read_header(repo, &id, info.size) {
            Ok(header) => report.packs.push(IndexedPack {
                id,
                kind: header.kind,
                size: info.size,
                entries: header.entries,
            }),
            Err(e) => report.damaged.push((id, e)),
        }
    }
    Ok((report, listed))
}

/// Where the cache of repository `repo` lives under a cache root
/// (format-spec/06-index.md): `<root>/<repository id>/index.redb`.
pub fn cache_file(root: &Path, repo: &RepoId) -> PathBuf {
    root.join(repo.to_hex()).join("index.redb")
}

/// Creates `dir` (and parents) readable by its owner only: the cache holds
/// decrypted metadata.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Seals and writes a new index file (create-only) and returns its id.
/// The caller records it in its cache once this returns.
///
/// # Errors
/// Backend errors.
pub fn write_index_file(repo: &Repository, file: &IndexFile, level: i32) -> Result<IndexId> {
    let id = IndexId::random();
    write_index_file_as(repo, &id, file, level)?;
    Ok(id)
}

/// Seals and writes index file `file` under an id chosen beforehand (prune
/// names its new files in its record before writing them).
///
/// # Errors
/// Backend errors.
pub fn write_index_file_as(
    repo: &Repository,
    id: &IndexId,
    file: &IndexFile,
    level: i32,
) -> Result<()> {
    let sealed = repo
        .sealer()
        .seal(ObjectType::Index, id.as_bytes(), &file.encode(), level);
    crate::backend::write_bytes(repo.backend().as_ref(), &layout::index_path(id), &sealed)
}

/// Reads, authenticates and decodes one index file.
///
/// # Errors
/// Backend errors, [`ErrorKind::Corrupt`] for a damaged file.
pub fn read_index_file(repo: &Repository, id: &IndexId) -> Result<IndexFile> {
    let stored = repo.backend().read(&layout::index_path(id), None)?;
    let plain = repo
        .sealer()
        .open(ObjectType::Index, id.as_bytes(), &stored, index::MAX_LEN)?;
    IndexFile::decode(&plain).map_err(|e| e.context(format!("index file {id}")))
}
