//! Chunk store: the API the snapshot layer builds on. Put a stream and get
//! back its chunk ids, storing only chunks the repository lacks; get a chunk
//! back by id, authenticated and checked against its id on every read.
//!
//! Hot path, a pipeline (a backup's small files are cut and hashed on
//! read-ahead threads instead, [`ChunkStore::prepare`], and put in order
//! by [`ChunkStore::put_prepared`]): a reader thread cuts the stream into
//! batches (the
//! cut points of a segment searched in regions on rayon, with the same
//! cuts as one thread: [`crate::algorithms::chunker::ChunkStream`]); the
//! caller's thread hashes each batch (in parallel on rayon), decides which
//! chunks are new and returns their ids at once; sealing (compress and
//! encrypt) and packing of the new chunks run as background rayon jobs,
//! so they overlap the reading and hashing of what follows, across files;
//! the new chunks of small puts (small files, or a segment of a large one
//! where little changed) are gathered and sealed as one job (one
//! compression group of about a quarter of the group size);
//! full packs are written by an uploader thread behind a bounded queue.
//! Memory is bounded by the batch size, [`SEAL_AHEAD`] bytes waiting to be
//! sealed, the open packs and the queue, plus the ids of blobs not yet in
//! an index file (at most [`ChunkStoreOptions::index_every`] packs' worth).
//!
//! Write ordering: a pack is uploaded before any index file names it, and
//! an index file is written before the cache records its entries. What a
//! caller commits (a snapshot) must come after [`ChunkStore::flush`].
//!
//! What a writer commits is guarded by the commit protocol in [`commit`]
//! (format-spec/12): the packs it relied on must survive concurrent prunes.
//!
//! Distrusted packs ([`ChunkStore::distrust`]: missing, or found damaged by
//! a check) are never deduplicated against: a chunk indexed only there is
//! stored again, so what a caller commits never depends on them. Reads try
//! every known copy of a blob before they give up.
//!
//! Tree blobs are also kept, sealed, in the index cache's tree blob table
//! (when [`ChunkStoreOptions::tree_cache`] is on): those of packs this store
//! uploads, and those it reads from packs. A read tries that copy first
//! and authenticates it like one from a pack; a copy that fails is dropped
//! and the pack read instead. So a snapshot walked again (ls, restore, the
//! next backup's parent) reads no tree from the repository.

pub mod commit;
pub mod index;
mod locate;
pub mod pack;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::backend::{Backend, write_bytes};
use crate::chunkstore::index::{BlobLocation, ChunkIndex, write_index_file};
use crate::chunkstore::pack::{FinishedPack, Packer, PackerOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::layout;
use crate::format::pack::{MAX_GROUP_RAW, PackKind};
use crate::id::{ChunkId, PackId, RecordId};
use crate::repository::Repository;
use crate::repository::sealer::Sealer;

mod put;
mod read;
mod reused;
pub use commit::SecureReport;
pub use locate::Locator;
pub use put::Prepared;
pub use read::read_blob;

/// Raw bytes of new chunks that may wait to be sealed before the caller
/// is held back.
pub const SEAL_AHEAD: usize = 8 << 20;
/// Most pack uploads in flight at once, whatever the backend suggests.
pub const MAX_UPLOADS: usize = 4;
/// [`ChunkStore::get_many`] reads neighbouring chunks of a pack together
/// if at most this many bytes lie between them.
pub const COALESCE_GAP: u64 = 64 << 10;
/// ... and if the whole read stays within this many bytes.
pub const COALESCE_MAX: u64 = 8 << 20;
/// Ranged reads of packs start and end on multiples of this many bytes
/// (or at the pack's end), so that the storage does not see where blobs
/// begin and end when they are read back (format-spec/08).
pub const READ_WINDOW: u64 = 64 << 10;

/// Tuning of the chunk store (none of it changes the bytes' meaning).
#[derive(Debug, Clone, Copy)]
pub struct ChunkStoreOptions {
    /// zstd level for blobs; 0 stores everything raw.
    pub compression_level: i32,
    pub packer: PackerOptions,
    /// An index file is written after this many packs (and on flush).
    pub index_every: usize,
    /// Bytes read from a stream per batch.
    pub segment: usize,
    /// Finished packs that may wait for upload.
    pub upload_queue: usize,
    /// Packs uploaded at the same time (each writer waits for its pack to
    /// be durable: an fsync here, a round trip to a remote store).
    pub upload_threads: usize,
    /// Consecutive new data chunks of a stream are sealed together in
    /// compression groups of up to this many raw bytes (at most
    /// [`MAX_GROUP_RAW`]); a chunk larger than this is a group alone, and
    /// 0 seals every chunk alone.
    pub group_size: usize,
    /// Read tree blobs through the index cache's tree blob table, and keep
    /// there those read from packs or uploaded. Off for `check` and
    /// `repair snapshots`, which must see what the repository holds.
    pub tree_cache: bool,
}

impl Default for ChunkStoreOptions {
    fn default() -> Self {
        Self {
            compression_level: 3,
            packer: PackerOptions::default(),
            index_every: 32,
            segment: 2 << 20,
            upload_queue: 1,
            upload_threads: 2,
            group_size: DEFAULT_GROUP_SIZE,
            tree_cache: true,
        }
    }
}

/// Raw bytes of a compression group a writer fills by default. On the
/// pgbench dumps (benches/README.md, "Compression groups"), 2 MiB stores
/// 14 % less than 1 MiB on the first night and 3-4 % less on later ones;
/// 4 MiB saves 6 % more but needs 4 MiB segments, which nearly doubled a
/// backup's peak memory. Groups never span two segments.
pub const DEFAULT_GROUP_SIZE: usize = 2 << 20;

/// One chunk of a stored stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// Counters of what the store did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub chunks: u64,
    pub chunks_new: u64,
    pub bytes: u64,
    pub bytes_new: u64,
    /// Sealed bytes of new blobs (what they cost in packs).
    pub bytes_stored: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
}

/// Tree blobs read from packs are put in the tree cache this many at a time
/// (one cache transaction each time, not one per blob).
const TREE_CACHE_BATCH: usize = 64;

/// A pack written, with its sealed tree blobs for the tree cache.
struct Uploaded {
    pack: IndexedPack,
    trees: Vec<(ChunkId, Vec<u8>)>,
}

type UploadResults = Arc<Mutex<Vec<Result<Uploaded>>>>;

struct Uploader {
    sender: SyncSender<FinishedPack>,
    threads: Vec<JoinHandle<()>>,
    results: UploadResults,
}

impl Uploader {
    /// Starts `threads` uploaders; with `keep_trees` each returns the sealed
    /// blobs of the tree packs it wrote.
    fn start(backend: &Arc<dyn Backend>, queue: usize, threads: usize, keep_trees: bool) -> Self {
        let (sender, receiver) = sync_channel::<FinishedPack>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let results: UploadResults = Arc::default();
        let threads = (0..threads.max(1))
            .map(|_| {
                let (backend, receiver) = (Arc::clone(backend), Arc::clone(&receiver));
                let sink = Arc::clone(&results);
                std::thread::spawn(move || {
                    // Holding the lock only to take the next pack.
                    while let Ok(pack) = { lock(&receiver).recv() } {
                        let size = pack.bytes.len() as u64;
                        let path = layout::pack_path(&pack.id);
                        let outcome = write_bytes(backend.as_ref(), &path, &pack.bytes).map(|()| {
                            let trees = if keep_trees && pack.kind == PackKind::Tree {
                                sealed_blobs(&pack)
                            } else {
                                Vec::new()
                            };
                            let pack = IndexedPack {
                                id: pack.id,
                                kind: pack.kind,
                                size,
                                entries: pack.entries,
                            };
                            Uploaded { pack, trees }
                        });
                        lock(&sink).push(outcome);
                    }
                })
            })
            .collect();
        Self {
            sender,
            threads,
            results,
        }
    }

    fn finish(self) -> Vec<Result<Uploaded>> {
        drop(self.sender);
        for t in self.threads {
            let _ = t.join();
        }
        std::mem::take(&mut *lock(&self.results))
    }
}

/// The sealed blobs of a finished pack, by id.
fn sealed_blobs(pack: &FinishedPack) -> Vec<(ChunkId, Vec<u8>)> {
    pack.entries
        .iter()
        .map(|e| {
            let start = e.offset as usize;
            (
                e.id,
                pack.bytes[start..start + e.stored_len as usize].to_vec(),
            )
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct WriteState {
    data: Packer,
    tree: Packer,
    /// Blobs accepted but not yet recorded by an index file in the cache.
    pending: HashMap<ChunkId, PackKind>,
    /// Packs uploaded and not yet named by an index file.
    uploaded: Vec<IndexedPack>,
    uploader: Option<Uploader>,
    stats: StoreStats,
    /// Packs whose blobs must not be relied on (missing, damaged, or
    /// condemned by a prune record): their chunks are stored again.
    distrusted: HashSet<PackId>,
    /// Packs this store relied on: where it found blobs it returned as
    /// stored, and the packs it wrote (format-spec/12, "Backups").
    relied: HashSet<PackId>,
    /// Packs this store named in an index file to take them back from the
    /// prune records condemning them, with those records.
    resurrected: HashMap<PackId, HashSet<RecordId>>,
}

/// What background sealing shares with the store.
struct Shared {
    state: Mutex<WriteState>,
    sealer: Sealer,
    backend: Arc<dyn Backend>,
    options: ChunkStoreOptions,
    /// Raw bytes submitted for sealing and not yet packed, and the first
    /// error a sealing job met.
    ahead: Mutex<(usize, Option<Error>)>,
    drained: Condvar,
}

/// New chunks of one batch (or one blob) to seal and pack.
struct SealJob {
    kind: PackKind,
    data: Arc<Vec<u8>>,
    chunks: Vec<(ChunkId, Range<usize>)>,
}

/// New data chunks of small puts (small files one after another, and
/// segments of large files where little changed), gathered into one job so that they are sealed together: compressed as
/// one group, and one job instead of one per file.
#[derive(Default)]
struct Gathered {
    data: Vec<u8>,
    chunks: Vec<(ChunkId, Range<usize>)>,
}

/// Stores and fetches chunks of one repository.
pub struct ChunkStore<'r> {
    repo: &'r Repository,
    index: &'r ChunkIndex,
    options: ChunkStoreOptions,
    shared: Arc<Shared>,
    /// Tree blobs read from packs, waiting to go into the tree cache.
    trees_read: Mutex<Vec<(ChunkId, Vec<u8>)>>,
    /// Where reads find blobs the index lacks (never used to deduplicate).
    locator: Locator<'r>,
    /// The last groups of several chunks [`Self::get`] opened, by pack and
    /// offset, newest last: reading a file chunk by chunk (mount, dump)
    /// opens each group once, not once per chunk.
    opened: Mutex<VecDeque<OpenedGroup>>,
    /// New chunks of small puts waiting to be sealed together.
    gathered: Mutex<Gathered>,
    /// Chunks read from groups opened for a small part of them.
    reused: Mutex<reused::Reused>,
}

/// A group's plaintext, by its pack and offset.
type OpenedGroup = ((PackId, u32), Arc<Vec<u8>>);

/// How many opened groups a store keeps (at most 4 MiB each, 2 MiB as a
/// backup writes them).
const OPENED_GROUPS: usize = 4;

impl<'r> ChunkStore<'r> {
    /// A store over `repo`, deduplicating against `index` (which the caller
    /// has synced).
    pub fn new(repo: &'r Repository, index: &'r ChunkIndex, options: ChunkStoreOptions) -> Self {
        let state = WriteState {
            data: Packer::new(PackKind::Data, options.packer),
            tree: Packer::new(PackKind::Tree, options.packer),
            pending: HashMap::new(),
            uploaded: Vec::new(),
            uploader: None,
            stats: StoreStats::default(),
            distrusted: HashSet::new(),
            relied: HashSet::new(),
            resurrected: HashMap::new(),
        };
        let shared = Shared {
            state: Mutex::new(state),
            sealer: repo.sealer().clone(),
            backend: Arc::clone(repo.backend()),
            options,
            ahead: Mutex::new((0, None)),
            drained: Condvar::new(),
        };
        Self {
            repo,
            index,
            options,
            shared: Arc::new(shared),
            trees_read: Mutex::new(Vec::new()),
            locator: Locator::new(repo, index),
            opened: Mutex::new(VecDeque::new()),
            gathered: Mutex::new(Gathered::default()),
            reused: Mutex::new(reused::Reused::new(reused::REUSED_BYTES)),
        }
    }

    /// The cache's location of each of `ids`, or another copy's if that one
    /// is in a distrusted pack; `None` where no trusted copy is indexed.
    fn trusted_locations(&self, ids: &[ChunkId]) -> Result<Vec<Option<BlobLocation>>> {
        let mut known = self.index.lookup_many(ids)?;
        let distrusted = {
            let state = lock(&self.shared.state);
            if state.distrusted.is_empty() {
                return Ok(known);
            }
            state.distrusted.clone()
        };
        for (id, loc) in ids.iter().zip(&mut known) {
            if loc.is_some_and(|l| distrusted.contains(&l.pack)) {
                *loc = self
                    .index
                    .locations(id)?
                    .into_iter()
                    .find(|l| !distrusted.contains(&l.pack));
            }
        }
        Ok(known)
    }

    /// The id `data` has in this repository (keyed BLAKE3), to check bytes
    /// already on disk against a tree without reading the repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.repo.sealer().chunk_id(data)
    }

    /// Whether every blob in `ids` is indexed in a pack not distrusted, or
    /// already accepted by this store (so a snapshot may refer to it).
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn all_stored(&self, ids: &[ChunkId]) -> Result<bool> {
        let known = self.trusted_locations(ids)?;
        let mut state = lock(&self.shared.state);
        let mut packs = Vec::new();
        for (id, loc) in ids.iter().zip(known) {
            match loc {
                Some(l) => packs.push(l.pack),
                None if state.pending.contains_key(id) => {}
                None => return Ok(false),
            }
        }
        state.relied.extend(packs);
        Ok(true)
    }

    /// Stops relying on the blobs of `packs` (missing, damaged, or
    /// condemned by a prune record): a chunk indexed only in them is stored
    /// again by the puts that follow, and [`Self::all_stored`] does not
    /// count it. The new copy's index entry then takes the old one's place
    /// in the cache.
    pub fn distrust(&self, packs: impl IntoIterator<Item = PackId>) {
        lock(&self.shared.state).distrusted.extend(packs);
    }

    /// The packs relied on so far (found blobs and written packs).
    pub fn relied_packs(&self) -> HashSet<PackId> {
        lock(&self.shared.state).relied.clone()
    }

    /// Counters so far (sealing may still be under way until
    /// [`Self::flush`]).
    pub fn stats(&self) -> StoreStats {
        lock(&self.shared.state).stats
    }

    /// Queues a sealing job once fewer than [`SEAL_AHEAD`] bytes wait
    /// (counting the whole buffer the job keeps alive).
    fn submit(&self, job: SealJob) -> Result<()> {
        let bytes = job.data.len();
        {
            let mut ahead = self.wait_for(|queued| queued + bytes <= SEAL_AHEAD.max(bytes))?;
            ahead.0 += bytes;
        }
        let shared = Arc::clone(&self.shared);
        rayon::spawn(move || {
            let outcome = seal_and_pack(&shared, &job);
            let mut ahead = lock(&shared.ahead);
            ahead.0 -= bytes;
            if let Err(e) = outcome {
                ahead.1.get_or_insert(e);
            }
            shared.drained.notify_all();
        });
        Ok(())
    }

    /// Waits until `ready` holds for the bytes waiting to be sealed, and
    /// returns the lock; a sealing job's error ends the wait as an error.
    /// On a rayon worker it runs other jobs while it waits, so that the
    /// jobs it waits for cannot be stuck behind it.
    fn wait_for(
        &self,
        ready: impl Fn(usize) -> bool,
    ) -> Result<MutexGuard<'_, (usize, Option<Error>)>> {
        let mut ahead = lock(&self.shared.ahead);
        loop {
            if let Some(e) = ahead.1.take() {
                return Err(e.context("sealing new chunks"));
            }
            if ready(ahead.0) {
                return Ok(ahead);
            }
            if rayon::current_thread_index().is_some() {
                drop(ahead);
                rayon::yield_now();
                ahead = lock(&self.shared.ahead);
            } else {
                ahead = self
                    .shared
                    .drained
                    .wait(ahead)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }

    /// Waits for every queued sealing job.
    fn drain(&self) -> Result<()> {
        self.wait_for(|queued| queued == 0).map(drop)
    }

    fn upload(&self, state: &mut WriteState, pack: FinishedPack) -> Result<()> {
        upload(&self.shared, state, pack)
    }

    /// Gathers finished uploads; writes an index file when enough packs
    /// are waiting, or for all of them if `all` (after stopping the
    /// uploader).
    fn collect_uploads(&self, state: &mut WriteState, all: bool) -> Result<()> {
        let results = if all {
            state
                .uploader
                .take()
                .map(Uploader::finish)
                .unwrap_or_default()
        } else {
            state
                .uploader
                .as_ref()
                .map(|u| std::mem::take(&mut *lock(&u.results)))
                .unwrap_or_default()
        };
        for r in results {
            let Uploaded { pack, trees } = r.map_err(|e| e.context("uploading a pack"))?;
            self.cache_trees(&trees);
            state.relied.insert(pack.id);
            state.uploaded.push(pack);
        }
        if !state.uploaded.is_empty() && (all || state.uploaded.len() >= self.options.index_every) {
            let packs = std::mem::take(&mut state.uploaded);
            self.write_index(&packs)?;
            state.stats.index_files_written += 1;
            for e in packs.iter().flat_map(|p| &p.entries) {
                state.pending.remove(&e.id);
            }
        }
        Ok(())
    }

    fn write_index(&self, packs: &[IndexedPack]) -> Result<()> {
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: packs.to_vec(),
        };
        let id = write_index_file(self.repo, &file, self.options.compression_level)?;
        self.index.insert(Some(&id), packs)?;
        self.index.refill(self.repo)
    }

    /// Finishes and uploads every open pack and writes the index file for
    /// them; afterwards every stored chunk is durable and indexed.
    ///
    /// # Errors
    /// Backend and cache errors; on error nothing already committed is lost.
    pub fn flush(&self) -> Result<()> {
        self.seal_gathered()?;
        self.drain()?;
        let mut state = lock(&self.shared.state);
        let sealer = &self.shared.sealer;
        let mut finished = state.data.finish_all(sealer);
        finished.extend(state.tree.finish_all(sealer));
        for pack in finished {
            self.upload(&mut state, pack)?;
        }
        self.collect_uploads(&mut state, true)?;
        self.index.persist()?;
        self.index.refill(self.repo)
    }
}

/// Cuts the job's new chunks (in stream order) into compression groups of
/// up to `limit` raw bytes, seals the groups in parallel and adds them to
/// the open packs; full packs go to the uploader.
fn seal_and_pack(shared: &Shared, job: &SealJob) -> Result<()> {
    let level = shared.options.compression_level;
    let limit = match job.kind {
        PackKind::Data => shared.options.group_size.min(MAX_GROUP_RAW as usize),
        PackKind::Tree => 0, // one tree a group (format-spec/05)
    };
    let groups = cut_groups(&job.chunks, limit);
    let sealed: Vec<Vec<u8>> = groups
        .par_iter()
        .map(|g| {
            // New chunks that follow each other in the batch (the usual
            // case) are one slice of it; others are copied together.
            let plain: Cow<'_, [u8]> = if g.windows(2).all(|w| w[0].1.end == w[1].1.start) {
                Cow::Borrowed(&job.data[g[0].1.start..g[g.len() - 1].1.end])
            } else {
                let mut joined = Vec::with_capacity(g.iter().map(|(_, r)| r.len()).sum());
                for (_, r) in *g {
                    joined.extend_from_slice(&job.data[r.clone()]);
                }
                Cow::Owned(joined)
            };
            shared.sealer.seal_group(job.kind, &plain, level)
        })
        .collect();
    let mut state = lock(&shared.state);
    for (g, blob) in groups.iter().zip(sealed) {
        let chunks: Vec<(ChunkId, u32)> = g
            .iter()
            .map(|(id, r)| (*id, u32::try_from(r.len()).expect("chunks are below 4 GiB")))
            .collect();
        state.stats.chunks_new += chunks.len() as u64;
        state.stats.bytes_new += g.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
        state.stats.bytes_stored += blob.len() as u64;
        let packer = match job.kind {
            PackKind::Data => &mut state.data,
            PackKind::Tree => &mut state.tree,
        };
        if let Some(full) = packer.add_group(&shared.sealer, &chunks, &blob) {
            upload(shared, &mut state, full)?;
        }
    }
    Ok(())
}

/// `chunks` cut, in order, into runs of at most `limit` raw bytes; a
/// chunk of `limit` or more is a run alone.
fn cut_groups(chunks: &[(ChunkId, Range<usize>)], limit: usize) -> Vec<&[(ChunkId, Range<usize>)]> {
    let mut groups = Vec::new();
    let (mut start, mut raw) = (0, 0);
    for (i, (_, r)) in chunks.iter().enumerate() {
        if i > start && raw + r.len() > limit {
            groups.push(&chunks[start..i]);
            (start, raw) = (i, 0);
        }
        raw += r.len();
    }
    if start < chunks.len() {
        groups.push(&chunks[start..]);
    }
    groups
}

fn upload(shared: &Shared, state: &mut WriteState, pack: FinishedPack) -> Result<()> {
    let backend = &shared.backend;
    let options = &shared.options;
    // Remote backends hide latency with more uploads in flight; each holds
    // a pack (and the retry layer a copy), so at most four.
    let threads = options
        .upload_threads
        .max(backend.concurrency().min(MAX_UPLOADS));
    let queue = options.upload_queue.max(1);
    let uploader = state
        .uploader
        .get_or_insert_with(|| Uploader::start(backend, queue, threads, options.tree_cache));
    state.stats.packs_written += 1;
    uploader
        .sender
        .send(pack)
        .map_err(|_| Error::new(ErrorKind::Io, "the pack uploader stopped"))
}

impl Drop for ChunkStore<'_> {
    fn drop(&mut self) {
        // Let queued sealing and a pending upload end; their packs stay
        // unindexed, as after a crash.
        let _ = self.drain();
        if let Some(u) = lock(&self.shared.state).uploader.take() {
            let _ = u.finish();
        }
        let trees = std::mem::take(&mut *lock(&self.trees_read));
        self.cache_trees(&trees);
    }
}
