//! `prune`: deletes packs no snapshot needs and repacks mostly unused
//! ones, without locks, by the two-phase protocol of
//! format-spec/12-prune.md: a run condemns packs in a prune record, and a
//! later run, once the record is ripe (its grace period has passed),
//! deletes them unless a backup took them back meanwhile.
//!
//! One run: list everything (a failed listing or an unreadable record,
//! index file or snapshot aborts before anything is written); mark the
//! live chunks of every snapshot into an on-disk table; sweep ripe
//! records; condemn dead packs and pick packs to repack; write the new
//! record, the repacked packs and the rewritten index files; delete what
//! the sweep chose. With `grace == 0` one run does both phases.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::chunkstore::index::{BlobLocation, ChunkIndex, read_index_file, write_index_file_as};
use crate::chunkstore::pack::{FinishedPack, Packer, PackerOptions, verify_pack};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::PackKind;
use crate::format::prune::PruneRecord;
use crate::format::tree::{Content, Extent, Payload, TreeBlob};
use crate::id::{ChunkId, IndexId, PackId, RecordId};
use crate::repository::Repository;
use crate::repository::records;
use crate::repository::snapshots;

/// Default grace period: one hour (format-spec/12, assumption A1).
pub const DEFAULT_GRACE: u64 = 3600;
/// Temporary files younger than this (seconds) may belong to a write in
/// progress.
const TEMPORARY_AGE: u64 = 86_400;
/// Index files naming fewer packs than this are small ...
const SMALL_INDEX_FILE: usize = PACKS_PER_FILE / 4;
/// ... and are merged once there are this many old ones.
const MERGE_AT: usize = 8;
/// Packs per rewritten index file.
const PACKS_PER_FILE: usize = 256;
/// Live chunk ids buffered before they go to the on-disk table.
const LIVE_BATCH: usize = 1 << 16;
const LIVE: TableDefinition<[u8; 32], ()> = TableDefinition::new("live");

/// How to prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Seconds between condemning a pack and deleting it. 0: both in this
    /// run, which is safe only when no backup can be running.
    pub grace: u64,
    /// Repack until unused bytes are at most this share of the total.
    pub max_unused: f64,
    /// Bytes of packs read for repacking, at most.
    pub max_repack_bytes: u64,
    /// Report, write and delete nothing.
    pub dry_run: bool,
    /// Now: records' creation time and ripeness, the deletable time.
    pub clock: Clock,
    /// zstd level for rewritten index files.
    pub level: i32,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            max_unused: 0.05,
            max_repack_bytes: u64::MAX,
            dry_run: false,
            clock: Clock::System,
            level: 3,
        }
    }
}

/// What a run found and did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub live_chunks: u64,
    pub packs: usize,
    pub bytes: u64,
    /// Packs condemned by this run, to be deleted once ripe.
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
    /// Packs whose live blobs were copied into new packs (also condemned).
    pub repacked_packs: usize,
    pub repacked_bytes: u64,
    /// Bytes of blobs written into new packs by repacking.
    pub rewritten_bytes: u64,
    /// Size of the new packs repacking wrote.
    pub new_pack_bytes: u64,
    /// Packs deleted by this run (ripe records swept).
    pub deleted_packs: usize,
    pub freed_bytes: u64,
    /// Condemned packs kept because a backup or a snapshot took them back.
    pub resurrected_packs: usize,
    /// Orphan packs holding live chunks, named in a new index file.
    pub adopted_packs: usize,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub records_swept: usize,
    /// Temporary files of killed writers removed (local backend).
    pub temporaries_removed: u64,
    /// Whether this run wrote a record (the next run's reference).
    pub record_written: bool,
    /// Unused bytes in packs that stay (after this run's condemning).
    pub unused_bytes_after: u64,
    /// When the packs condemned now may be deleted (Unix seconds).
    pub deletable_after: Option<u64>,
    /// Packs that could not be repacked, with why.
    pub warnings: Vec<String>,
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("prune's live set: {}", Into::<redb::Error>::into(e)),
    )
}

/// The live chunk ids, in an on-disk table (filled in batches).
struct LiveSet {
    db: Database,
    path: std::path::PathBuf,
    count: u64,
}

impl LiveSet {
    fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the cache directory", e))?;
        let path = dir.join(format!("prune-live-{}.redb", ChunkId::random()));
        let db = Database::create(&path).map_err(db_err)?;
        Ok(Self { db, path, count: 0 })
    }

    /// Adds `ids`; returns those not seen before.
    fn insert_new(&mut self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let mut fresh = Vec::new();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        {
            let mut table = txn.open_table(LIVE).map_err(db_err)?;
            for id in ids {
                if table.insert(id.as_bytes(), ()).map_err(db_err)?.is_none() {
                    fresh.push(*id);
                }
            }
        }
        txn.commit().map_err(db_err)?;
        self.count += fresh.len() as u64;
        Ok(fresh)
    }

    /// A reader of the table (after every batch is in).
    fn reader(&self) -> Result<LiveReader> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(LIVE) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(db_err(e)),
        };
        Ok(LiveReader { table })
    }
}

impl Drop for LiveSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct LiveReader {
    table: Option<redb::ReadOnlyTable<[u8; 32], ()>>,
}

impl LiveReader {
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        match &self.table {
            None => Ok(false),
            Some(t) => Ok(t.get(id.as_bytes()).map_err(db_err)?.is_some()),
        }
    }
}

/// Index files as listed at the start of the run.
struct IndexState {
    /// Current files (not superseded) and the packs each names.
    current: Vec<(IndexId, Vec<PackId>)>,
    /// Listed files some current file supersedes (a crash's leftovers).
    leftovers: Vec<IndexId>,
}

fn read_index_state(repo: &Repository) -> Result<IndexState> {
    let mut files = Vec::new();
    for id in repo.list::<IndexFile>()? {
        let file = read_index_file(repo, &id)
            .map_err(|e| e.context("prune reads every index file before it changes anything"))?;
        files.push((id, file));
    }
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut state = IndexState {
        current: Vec::new(),
        leftovers: Vec::new(),
    };
    for (id, file) in files {
        if superseded.contains(&id) {
            state.leftovers.push(id);
        } else {
            let packs = file.packs.iter().map(|p| p.id).collect();
            state.current.push((id, packs));
        }
    }
    Ok(state)
}

/// Step 2: marks every chunk reachable from every snapshot.
struct Marker<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    live: LiveSet,
    trees: HashSet<ChunkId>,
    pending: Vec<ChunkId>,
    /// Blob locations in packs no current index file names (condemned or
    /// orphans), read when first needed.
    fallback: Option<HashMap<ChunkId, BlobLocation>>,
    unindexed: Vec<(PackId, u64)>,
    /// Unindexed packs holding live chunks no current index file lists.
    needed: HashSet<PackId>,
}

impl Marker<'_> {
    fn locate(&mut self, id: &ChunkId, what: &str) -> Result<BlobLocation> {
        if let Some(loc) = self.index.lookup(id)? {
            return Ok(loc);
        }
        if self.fallback.is_none() {
            let mut map = HashMap::new();
            for (pack, size) in &self.unindexed {
                // A pack already deleted, or one whose header does not
                // authenticate, cannot serve.
                let header = match self.repo.read_pack_header(pack, *size) {
                    Ok(h) => h,
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for e in &header.entries {
                    map.insert(e.id, BlobLocation::from_entry(*pack, header.kind, e));
                }
            }
            self.fallback = Some(map);
        }
        let loc = self.fallback.as_ref().and_then(|m| m.get(id)).copied();
        let Some(loc) = loc else {
            return Err(Error::corrupt(format!(
                "{what} {id} is needed by a snapshot but is in no index file and no \
                 pack prune can read; prune deletes nothing in a damaged repository: run \
                 `kura check`, then `kura repair index` or `kura repair snapshots`"
            )));
        };
        self.needed.insert(loc.pack);
        Ok(loc)
    }

    fn tree(&mut self, id: &ChunkId) -> Result<TreeBlob> {
        let loc = self.locate(id, "tree")?;
        let bytes = crate::chunkstore::read_blob(self.repo, id, &loc)
            .map_err(|e| e.context("prune reads every tree of every snapshot"))?;
        TreeBlob::decode(&bytes).map_err(|e| e.context(format!("tree {id}")))
    }

    fn data(&mut self, id: ChunkId) -> Result<()> {
        self.pending.push(id);
        if self.pending.len() >= LIVE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.pending);
        let fresh = self.live.insert_new(&batch)?;
        let found = self.index.lookup_many(&fresh)?;
        for (id, loc) in fresh.iter().zip(found) {
            if loc.is_none() {
                self.locate(id, "data chunk")?;
            }
        }
        Ok(())
    }

    fn walk(&mut self, id: &ChunkId) -> Result<()> {
        if !self.trees.insert(*id) {
            return Ok(());
        }
        match self.tree(id)? {
            TreeBlob::Directory(entries) => {
                for e in entries {
                    match e.payload {
                        Payload::Dir(sub) => self.walk(&sub)?,
                        Payload::File(content) => self.content(&content)?,
                        _ => {}
                    }
                }
            }
            TreeBlob::LargeDirectory(parts) => {
                for part in &parts {
                    self.walk(part)?;
                }
            }
            TreeBlob::ExtentList(_) => {
                return Err(Error::corrupt(format!(
                    "tree {id} is an extent list where a directory belongs"
                )));
            }
        }
        Ok(())
    }

    fn content(&mut self, content: &Content) -> Result<()> {
        match content {
            Content::Inline(extents) => self.extents(extents),
            Content::Indirect(lists) => {
                for list in lists {
                    if !self.trees.insert(*list) {
                        continue;
                    }
                    match self.tree(list)? {
                        TreeBlob::ExtentList(extents) => self.extents(&extents)?,
                        _ => {
                            return Err(Error::corrupt(format!(
                                "tree {list} is not an extent list"
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn extents(&mut self, extents: &[Extent]) -> Result<()> {
        for x in extents {
            if let Extent::Data { id, .. } = x {
                self.data(*id)?;
            }
        }
        Ok(())
    }
}

/// Per pack of the current index: what share of it is live.
#[derive(Debug, Clone, Copy)]
struct PackUse {
    kind: PackKind,
    size: u64,
    /// Stored bytes of blobs no snapshot needs.
    dead_bytes: u64,
    live_blobs: usize,
    old: bool,
}

impl PackUse {
    /// Share of the pack's blob bytes that is live.
    fn live_share(&self) -> f64 {
        1.0 - self.dead_bytes as f64 / self.size.max(1) as f64
    }
}

/// Prunes `repo`. `index` is the synced cache; `scratch` a private
/// directory for the live set (the cache directory).
///
/// # Errors
/// A failed listing, an unreadable record, index file, snapshot or tree
/// (nothing is written or deleted then); backend errors while writing
/// (what was written is consistent, format-spec/12 "Crash states").
#[allow(clippy::too_many_lines)] // the protocol's steps, in order
pub fn prune(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let now = options.clock.now_unix();
    let at_once = options.grace == 0;
    let mut report = PruneReport::default();

    // Step 1: list and read everything.
    let records = records::load_all(repo)?;
    let ripe: Vec<&(RecordId, PruneRecord)> = records
        .iter()
        .filter(|(_, r)| at_once || r.is_ripe(now))
        .collect();
    let reference = ripe.iter().map(|(_, r)| r).max_by_key(|r| r.created);
    let state = read_index_state(repo)?;
    let snapshot_ids = snapshots::list_ids(repo)?;
    let listed: HashMap<PackId, u64> = repo.list_packs()?;
    index.sync(repo)?;

    // Which packs the current index files name, and which are exempt.
    let old_file = |id: &IndexId| at_once || reference.is_some_and(|r| r.seen_index.contains(id));
    let mut named: HashMap<PackId, IndexId> = HashMap::new();
    let mut exempt: HashSet<PackId> = HashSet::new();
    for (file, packs) in &state.current {
        for p in packs {
            named.insert(*p, *file);
            if !old_file(file) {
                exempt.insert(*p);
            }
        }
    }

    // Step 2: mark.
    let all_condemned: Vec<(PackId, u64)> = {
        let mut seen = HashSet::new();
        records
            .iter()
            .flat_map(|(_, r)| r.condemned.iter().copied())
            .filter(|(p, _)| seen.insert(*p))
            .collect()
    };
    let condemned_elsewhere: HashSet<PackId> = all_condemned.iter().map(|(p, _)| *p).collect();
    let orphans: Vec<(PackId, u64)> = listed
        .iter()
        .filter(|(p, _)| !named.contains_key(p) && !condemned_elsewhere.contains(p))
        .map(|(p, s)| (*p, *s))
        .collect();
    let mut marker = Marker {
        repo,
        index,
        live: LiveSet::create(scratch)?,
        trees: HashSet::new(),
        pending: Vec::new(),
        fallback: None,
        unindexed: all_condemned.iter().chain(&orphans).copied().collect(),
        needed: HashSet::new(),
    };
    for id in &snapshot_ids {
        let snap = snapshots::load(repo, id)
            .map_err(|e| e.context("prune reads every snapshot before it changes anything"))?;
        report.snapshots += 1;
        marker.walk(&snap.tree_id()?)?;
    }
    marker.flush()?;
    let trees: Vec<ChunkId> = marker.trees.iter().copied().collect();
    marker.live.insert_new(&trees)?;
    report.live_chunks = marker.live.count;
    let live = marker.live.reader()?;

    // Step 3: sweep ripe records.
    let mut to_delete: Vec<(PackId, u64)> = Vec::new();
    let mut resurrect: Vec<PackId> = Vec::new();
    let mut swept_seen = HashSet::new();
    for (_, r) in &ripe {
        for (p, _) in &r.condemned {
            if !swept_seen.insert(*p) || named.contains_key(p) {
                continue;
            }
            if marker.needed.contains(p) {
                resurrect.push(*p);
            } else if let Some(listed_size) = listed.get(p) {
                to_delete.push((*p, *listed_size));
            }
            // Otherwise it is already gone: nothing to free.
        }
    }

    // Measure the live share of every pack the current files name.
    let mut uses: HashMap<PackId, PackUse> = HashMap::new();
    for (file, _) in &state.current {
        let f = read_index_file(repo, file)?;
        for pack in &f.packs {
            let old = old_file(file) && !exempt.contains(&pack.id);
            let (mut dead_bytes, mut live_blobs) = (0u64, 0usize);
            for e in &pack.entries {
                if live.contains(&e.id)? {
                    live_blobs += 1;
                } else {
                    dead_bytes += u64::from(e.stored_len);
                }
            }
            let u = uses.entry(pack.id).or_insert(PackUse {
                kind: pack.kind,
                size: pack.size,
                dead_bytes,
                live_blobs,
                old,
            });
            u.old &= old;
        }
    }
    report.packs = listed.len();
    report.bytes = listed.values().sum();

    // Step 4: condemn dead old packs, and orphans a ripe record saw.
    let mut condemned: Vec<(PackId, u64)> = uses
        .iter()
        .filter(|(_, u)| u.old && u.live_blobs == 0)
        .map(|(p, u)| (*p, u.size))
        .collect();
    let mut adopt: Vec<PackId> = Vec::new();
    let mut orphans_seen: Vec<PackId> = Vec::new();
    for (p, size) in &orphans {
        let seen_before = at_once || reference.is_some_and(|r| r.seen_orphans.contains(p));
        if marker.needed.contains(p) {
            // The only copy of chunks a snapshot needs: index it.
            adopt.push(*p);
        } else if seen_before {
            condemned.push((*p, *size));
        } else {
            orphans_seen.push(*p);
        }
    }

    // Step 5: choose packs to repack, least live first.
    let condemned_set: HashSet<PackId> = condemned.iter().map(|(p, _)| *p).collect();
    let staying = |p: &PackId| !condemned_set.contains(p);
    let mut total: u64 = uses
        .iter()
        .filter(|(p, _)| staying(p))
        .map(|(_, u)| u.size)
        .sum();
    let mut unused: u64 = uses
        .iter()
        .filter(|(p, u)| staying(p) && u.old)
        .map(|(_, u)| u.dead_bytes)
        .sum();
    let mut candidates: Vec<(PackId, PackUse)> = uses
        .iter()
        .filter(|(p, u)| staying(p) && u.old && u.dead_bytes > 0)
        .map(|(p, u)| (*p, *u))
        .collect();
    candidates.sort_by(|a, b| {
        a.1.live_share()
            .total_cmp(&b.1.live_share())
            .then(a.0.cmp(&b.0))
    });
    let mut repack: Vec<(PackId, PackUse)> = Vec::new();
    let mut repack_bytes = 0u64;
    for (p, u) in candidates {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let limit = (total as f64 * options.max_unused) as u64;
        if unused <= limit || repack_bytes.saturating_add(u.size) > options.max_repack_bytes {
            break;
        }
        repack_bytes += u.size;
        unused -= u.dead_bytes;
        total -= u.dead_bytes;
        repack.push((p, u));
    }
    report.unused_bytes_after = unused;

    if options.dry_run {
        report.condemned_packs = condemned.len() + repack.len();
        report.condemned_bytes = condemned.iter().map(|(_, s)| s).sum::<u64>() + repack_bytes;
        report.repacked_packs = repack.len();
        report.repacked_bytes = repack_bytes;
        if at_once {
            to_delete.extend(condemned.iter().copied());
            to_delete.extend(repack.iter().map(|(p, u)| (*p, u.size)));
        }
        report.deleted_packs = to_delete.len();
        report.freed_bytes = to_delete.iter().map(|(_, s)| s).sum();
        report.resurrected_packs = resurrect.len();
        report.adopted_packs = adopt.len();
        report.records_swept = ripe.len();
        return Ok(report);
    }

    // Writes begin. Resurrected and adopted packs first: naming them keeps
    // them, whatever happens next.
    let mut new_files: Vec<IndexId> = Vec::new();
    let mut extra = Vec::new();
    for p in resurrect.iter().chain(&adopt) {
        // Needed packs were read during marking, so they were listed.
        let Some(&size) = listed.get(p) else { continue };
        let header = repo.read_pack_header(p, size)?;
        extra.push(IndexedPack {
            id: *p,
            kind: header.kind,
            size,
            entries: header.entries,
        });
    }
    report.resurrected_packs = resurrect.len();
    report.adopted_packs = adopt.len();
    for chunk in extra.chunks(PACKS_PER_FILE) {
        let id = IndexId::random();
        write_file(repo, &id, Vec::new(), chunk.to_vec(), options.level)?;
        index.insert(Some(&id), chunk)?;
        new_files.push(id);
    }

    // Step 5, the copying: live blobs of the chosen packs into new packs.
    let mut repacked: Vec<(PackId, u64)> = Vec::new();
    if !repack.is_empty() {
        let (written, skipped) = repack_packs(repo, &repack, &live, &mut report)?;
        for (p, u) in &repack {
            if !skipped.contains(p) {
                repacked.push((*p, u.size));
            }
        }
        for chunk in written.chunks(PACKS_PER_FILE) {
            let id = IndexId::random();
            write_file(repo, &id, Vec::new(), chunk.to_vec(), options.level)?;
            index.insert(Some(&id), chunk)?;
            new_files.push(id);
        }
    }
    report.repacked_packs = repacked.len();
    report.repacked_bytes = repacked.iter().map(|(_, s)| s).sum();
    condemned.extend(repacked.iter().copied());
    condemned.sort();
    report.condemned_packs = condemned.len();
    report.condemned_bytes = condemned.iter().map(|(_, s)| s).sum();

    // Which current files to rewrite: those naming a condemned pack, and
    // old small ones once there are enough to merge (each backup writes
    // its own; a year of nights would otherwise be hundreds of files).
    let gone: HashSet<PackId> = condemned.iter().map(|(p, _)| *p).collect();
    let small: Vec<&IndexId> = state
        .current
        .iter()
        .filter(|(id, packs)| old_file(id) && packs.len() < SMALL_INDEX_FILE)
        .map(|(id, _)| id)
        .collect();
    let merge: HashSet<&IndexId> = if small.len() >= MERGE_AT {
        small.into_iter().collect()
    } else {
        HashSet::new()
    };
    let rewrite: Vec<&(IndexId, Vec<PackId>)> = state
        .current
        .iter()
        .filter(|(id, packs)| merge.contains(id) || packs.iter().any(|p| gone.contains(p)))
        .collect();
    let remaining: usize = rewrite
        .iter()
        .map(|(_, packs)| packs.iter().filter(|p| !gone.contains(p)).count())
        .sum();
    let rewrite_ids: Vec<IndexId> = (0..remaining.div_ceil(PACKS_PER_FILE))
        .map(|_| IndexId::random())
        .collect();

    // Step 6: the record.
    if !at_once {
        let rewritten: HashSet<IndexId> = rewrite.iter().map(|(id, _)| *id).collect();
        let mut seen_index: Vec<IndexId> = state
            .current
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !rewritten.contains(id))
            .chain(new_files.iter().copied())
            .chain(rewrite_ids.iter().copied())
            .collect();
        seen_index.sort();
        orphans_seen.sort();
        let record = PruneRecord {
            created: now,
            grace: options.grace,
            seen_index,
            seen_orphans: orphans_seen,
            condemned: condemned.clone(),
        };
        records::save(repo, &RecordId::random(), &record)?;
        report.record_written = true;
        if !condemned.is_empty() {
            report.deletable_after = Some(now + options.grace);
        }
    }

    // Step 7: rewrite the index files that name condemned packs.
    if !rewrite.is_empty() {
        let superseded: Vec<IndexId> = rewrite.iter().map(|(id, _)| *id).collect();
        let mut kept: Vec<IndexedPack> = Vec::new();
        for (file, _) in &rewrite {
            let f = read_index_file(repo, file)?;
            kept.extend(f.packs.into_iter().filter(|p| !gone.contains(&p.id)));
        }
        let mut chunks = kept.chunks(PACKS_PER_FILE);
        for (i, id) in rewrite_ids.iter().enumerate() {
            let packs = chunks
                .next()
                .map(<[IndexedPack]>::to_vec)
                .unwrap_or_default();
            // The first file carries the supersedes list: it alone must
            // exist for readers to drop the old files, and it does before
            // any old file is deleted.
            let supersedes = if i == 0 {
                superseded.clone()
            } else {
                Vec::new()
            };
            write_file(repo, id, supersedes, packs, options.level)?;
            report.index_files_written += 1;
        }
        if rewrite_ids.is_empty() {
            // Every pack of those files is condemned: an empty file
            // carries the supersedes list.
            write_file(
                repo,
                &IndexId::random(),
                superseded.clone(),
                Vec::new(),
                options.level,
            )?;
            report.index_files_written += 1;
        }
        for id in &superseded {
            repo.delete::<IndexFile>(id)?;
            report.index_files_deleted += 1;
        }
    }
    report.index_files_written += new_files.len();
    for id in &state.leftovers {
        repo.delete::<IndexFile>(id)?;
        report.index_files_deleted += 1;
    }

    // Step 8: delete what the sweep chose, then the ripe records.
    if at_once {
        for (p, size) in &condemned {
            if listed.contains_key(p) {
                to_delete.push((*p, *size));
            }
        }
    }
    for (p, size) in &to_delete {
        repo.delete_pack(p)?;
        report.deleted_packs += 1;
        report.freed_bytes += size;
    }
    for (id, _) in &ripe {
        repo.delete::<PruneRecord>(id)?;
        report.records_swept += 1;
    }
    // Temporary files of writers killed mid-write: with no backup running
    // (grace 0) all of them, otherwise those older than a day and the grace.
    let age = if at_once {
        Duration::ZERO
    } else {
        Duration::from_secs(options.grace.max(TEMPORARY_AGE))
    };
    report.temporaries_removed = repo.remove_stale_temporaries(age)?;
    index.persist()?;
    Ok(report)
}

fn write_file(
    repo: &Repository,
    id: &IndexId,
    supersedes: Vec<IndexId>,
    packs: Vec<IndexedPack>,
    level: i32,
) -> Result<()> {
    write_index_file_as(repo, id, &IndexFile { supersedes, packs }, level)
}

/// Copies the live blobs of `repack` into new packs, unchanged, and
/// returns the new packs (written) and the packs skipped: one that cannot
/// be read or fails authentication gets a warning and stays.
fn repack_packs(
    repo: &Repository,
    repack: &[(PackId, PackUse)],
    live: &LiveReader,
    report: &mut PruneReport,
) -> Result<(Vec<IndexedPack>, HashSet<PackId>)> {
    let mut skipped = HashSet::new();
    let sealer = repo.sealer();
    let mut packers = [
        Packer::new(PackKind::Data, PackerOptions::default()),
        Packer::new(PackKind::Tree, PackerOptions::default()),
    ];
    let mut out = Vec::new();
    // Each full pack is written at once, so memory holds the open packs
    // and one pack being read, whatever the amount repacked.
    let mut write = |pack: FinishedPack, report: &mut PruneReport| -> Result<()> {
        repo.write_pack(&pack.id, &pack.bytes)?;
        report.new_pack_bytes += pack.bytes.len() as u64;
        out.push(IndexedPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            entries: pack.entries,
        });
        Ok(())
    };
    let mut copied: HashSet<ChunkId> = HashSet::new();
    for (p, u) in repack {
        let bytes = match repo
            .read_pack(p, None)
            .and_then(|b| verify_pack(sealer, p, &b).map(|h| (b, h)))
        {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                report.warnings.push(format!("pack {p} not repacked: {e}"));
                skipped.insert(*p);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (bytes, header) = bytes;
        let packer = &mut packers[usize::from(u.kind == PackKind::Tree)];
        for e in &header.entries {
            if !live.contains(&e.id)? || copied.contains(&e.id) {
                continue;
            }
            // Copied even if another pack that stays has it too: that copy
            // may be damaged, and only a read would tell.
            copied.insert(e.id);
            let start = e.offset as usize;
            let blob = &bytes[start..start + e.stored_len as usize];
            report.rewritten_bytes += u64::from(e.stored_len);
            if let Some(full) = packer.add(sealer, e.id, blob, e.raw_len) {
                write(full, report)?;
            }
        }
    }
    for packer in &mut packers {
        for full in packer.finish_all(sealer) {
            write(full, report)?;
        }
    }
    Ok((out, skipped))
}
