//! Chunk store: the API the snapshot layer builds on. Put a stream and get
//! back its chunk ids, storing only chunks the repository lacks; get a chunk
//! back by id, authenticated and checked against its id on every read.
//!
//! Hot path: the stream is cut into batches; hashing and sealing of a batch
//! run in parallel on rayon; full packs are written by an uploader thread
//! behind a bounded queue. Memory is bounded by the batch size, the open
//! packs and the queue, plus the ids of blobs not yet in an index file
//! (at most [`ChunkStoreOptions::index_every`] packs' worth).
//!
//! Write ordering: a pack is uploaded before any index file names it, and
//! an index file is written before the cache records its entries. What a
//! caller commits (a snapshot) must come after [`ChunkStore::flush`].

use std::collections::HashMap;
use std::io::Read;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::backend::{Backend, write_bytes};
use crate::chunker::{Batch, ChunkStream};
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::layout;
use crate::format::pack::PackKind;
use crate::id::ChunkId;
use crate::index::{ChunkIndex, write_index_file};
use crate::pack::{FinishedPack, Packer, PackerOptions};
use crate::repo::Repository;

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
}

impl Default for ChunkStoreOptions {
    fn default() -> Self {
        Self {
            compression_level: 3,
            packer: PackerOptions::default(),
            index_every: 32,
            segment: 4 << 20,
            upload_queue: 1,
        }
    }
}

/// One chunk of a stored stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// Counters of what the store did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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

type UploadResults = Arc<Mutex<Vec<Result<IndexedPack>>>>;

struct Uploader {
    sender: SyncSender<FinishedPack>,
    thread: JoinHandle<()>,
    results: UploadResults,
}

impl Uploader {
    fn start(backend: Arc<dyn Backend>, queue: usize) -> Self {
        let (sender, receiver) = sync_channel::<FinishedPack>(queue);
        let results: UploadResults = Arc::default();
        let sink = Arc::clone(&results);
        let thread = std::thread::spawn(move || {
            for pack in receiver {
                let size = pack.bytes.len() as u64;
                let outcome =
                    write_bytes(backend.as_ref(), &layout::pack_path(&pack.id), &pack.bytes).map(
                        |()| IndexedPack {
                            id: pack.id,
                            kind: pack.kind,
                            size,
                            entries: pack.entries,
                        },
                    );
                lock(&sink).push(outcome);
            }
        });
        Self {
            sender,
            thread,
            results,
        }
    }

    fn finish(self) -> Vec<Result<IndexedPack>> {
        drop(self.sender);
        let _ = self.thread.join();
        std::mem::take(&mut *lock(&self.results))
    }
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
}

/// Stores and fetches chunks of one repository.
pub struct ChunkStore<'r> {
    repo: &'r Repository,
    index: &'r ChunkIndex,
    options: ChunkStoreOptions,
    state: Mutex<WriteState>,
}

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
        };
        Self {
            repo,
            index,
            options,
            state: Mutex::new(state),
        }
    }

    /// The id `data` has in this repository (keyed BLAKE3), to check bytes
    /// already on disk against a tree without reading the repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.repo.sealer().chunk_id(data)
    }

    pub fn stats(&self) -> StoreStats {
        lock(&self.state).stats
    }

    /// Cuts `reader` into chunks, stores the new ones and returns the ids of
    /// all of them in order. Nothing is committed until [`Self::flush`].
    ///
    /// # Errors
    /// The reader's error, backend errors (a failed pack upload), cache I/O.
    pub fn put_stream(&self, reader: impl Read + Send) -> Result<Vec<ChunkRef>> {
        let mut stream = ChunkStream::new(self.repo.chunker(), reader, self.options.segment);
        let mut refs = Vec::new();
        let Some(first) = stream.next_batch()? else {
            return Ok(refs);
        };
        if stream.finished() {
            // A small stream: one batch, no reader thread.
            self.put_batch(&first, &mut refs)?;
            return Ok(refs);
        }
        // Read and cut the next batch while this one is hashed and sealed.
        // The channel holds one batch, which bounds memory to about three
        // segments; if storing fails, dropping the receiver stops the reader.
        std::thread::scope(|scope| {
            let (sender, receiver) = sync_channel::<Result<Batch>>(1);
            scope.spawn(move || {
                loop {
                    let next = stream.next_batch().transpose();
                    let stop = !matches!(next, Some(Ok(_)));
                    if next.is_none_or(|b| sender.send(b).is_err()) || stop {
                        break;
                    }
                }
            });
            self.put_batch(&first, &mut refs)?;
            for batch in receiver {
                self.put_batch(&batch?, &mut refs)?;
            }
            Ok(refs)
        })
    }

    fn put_batch(&self, batch: &Batch, refs: &mut Vec<ChunkRef>) -> Result<()> {
        let pieces: Vec<&[u8]> = batch
            .chunks
            .iter()
            .map(|r| &batch.data[r.clone()])
            .collect();
        let ids = self.put_pieces(PackKind::Data, &pieces)?;
        refs.extend(ids.into_iter().zip(&pieces).map(|(id, p)| ChunkRef {
            id,
            len: u32::try_from(p.len()).expect("chunks are below 4 GiB"),
        }));
        Ok(())
    }

    /// Stores one blob of `kind` (a tree, or a small file in one chunk).
    ///
    /// # Errors
    /// As [`Self::put_stream`].
    pub fn put_blob(&self, kind: PackKind, data: &[u8]) -> Result<ChunkId> {
        Ok(self.put_pieces(kind, &[data])?[0])
    }

    /// Hashes pieces in parallel, seals the new ones in parallel, and hands
    /// them to the packer in order.
    fn put_pieces(&self, kind: PackKind, pieces: &[&[u8]]) -> Result<Vec<ChunkId>> {
        let sealer = self.repo.sealer();
        let ids: Vec<ChunkId> = pieces.par_iter().map(|p| sealer.chunk_id(p)).collect();
        let known = self.index.lookup_many(&ids)?;
        let fresh: Vec<usize> = {
            let mut state = lock(&self.state);
            let mut fresh = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                state.stats.chunks += 1;
                state.stats.bytes += pieces[i].len() as u64;
                if known[i].is_none() && !state.pending.contains_key(id) {
                    state.pending.insert(*id, kind);
                    fresh.push(i);
                }
            }
            fresh
        };
        let level = self.options.compression_level;
        let sealed: Vec<(usize, Vec<u8>)> = fresh
            .par_iter()
            .map(|&i| (i, sealer.seal_blob(kind, &ids[i], pieces[i], level)))
            .collect();
        let mut state = lock(&self.state);
        for (i, blob) in sealed {
            state.stats.chunks_new += 1;
            state.stats.bytes_new += pieces[i].len() as u64;
            state.stats.bytes_stored += blob.len() as u64;
            let raw_len = u32::try_from(pieces[i].len()).expect("blobs are below 4 GiB");
            let packer = match kind {
                PackKind::Data => &mut state.data,
                PackKind::Tree => &mut state.tree,
            };
            if let Some(full) = packer.add(sealer, ids[i], &blob, raw_len) {
                self.upload(&mut state, full)?;
            }
        }
        self.collect_uploads(&mut state, false)?;
        Ok(ids)
    }

    fn upload(&self, state: &mut WriteState, pack: FinishedPack) -> Result<()> {
        let backend = Arc::clone(self.repo.backend());
        let uploader = state
            .uploader
            .get_or_insert_with(|| Uploader::start(backend, self.options.upload_queue.max(1)));
        state.stats.packs_written += 1;
        uploader
            .sender
            .send(pack)
            .map_err(|_| Error::new(ErrorKind::Io, "the pack uploader stopped"))
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
            state
                .uploaded
                .push(r.map_err(|e| e.context("uploading a pack"))?);
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
        self.index.insert(Some(&id), packs)
    }

    /// Finishes and uploads every open pack and writes the index file for
    /// them; afterwards every stored chunk is durable and indexed.
    ///
    /// # Errors
    /// Backend and cache errors; on error nothing already committed is lost.
    pub fn flush(&self) -> Result<()> {
        let mut state = lock(&self.state);
        let sealer = self.repo.sealer();
        let mut finished = state.data.finish_all(sealer);
        finished.extend(state.tree.finish_all(sealer));
        for pack in finished {
            self.upload(&mut state, pack)?;
        }
        self.collect_uploads(&mut state, true)
    }

    /// Fetches a chunk or tree blob, authenticated and checked against `id`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if no index or open pack has it (a blob
    /// waiting for upload can be read after [`Self::flush`]);
    /// [`ErrorKind::Corrupt`] if its bytes fail any check.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        if let Some(loc) = self.index.lookup(id)? {
            return read_blob(self.repo, id, &loc);
        }
        let state = lock(&self.state);
        for (packer, kind) in [(&state.data, PackKind::Data), (&state.tree, PackKind::Tree)] {
            if let Some(sealed) = packer.find(id) {
                return self.repo.sealer().open_blob(kind, id, sealed);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("blob {id} is not in the index"),
        ))
    }
}

/// Reads blob `id` at `loc` from its pack: one ranged read, then
/// authentication, decompression and the id check.
///
/// # Errors
/// Backend errors; [`ErrorKind::Corrupt`] for any mismatch.
pub fn read_blob(
    repo: &Repository,
    id: &ChunkId,
    loc: &crate::index::BlobLocation,
) -> Result<Vec<u8>> {
    let start = u64::from(loc.offset);
    let stored = repo.backend().read(
        &layout::pack_path(&loc.pack),
        Some(start..start + u64::from(loc.stored_len)),
    )?;
    let plain = repo.sealer().open_blob(loc.kind, id, &stored)?;
    if plain.len() != loc.raw_len as usize {
        return Err(Error::corrupt(format!(
            "blob {id} has a different length than indexed"
        )));
    }
    Ok(plain)
}

impl Drop for ChunkStore<'_> {
    fn drop(&mut self) {
        // Let a pending upload end; its pack stays unindexed, as after a crash.
        if let Some(u) = lock(&self.state).uploader.take() {
            let _ = u.finish();
        }
    }
}
