//! The write side of the chunk store: a stream or a blob cut into chunks,
//! hashed, deduplicated against the index and what is pending, and the
//! new chunks handed to sealing jobs (small puts gathered into one job);
//! and a small file prepared (cut and hashed) on another thread, then put
//! in order.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use super::{ChunkRef, ChunkStore, SealJob, lock};
use crate::algorithms::chunker::{Batch, ChunkStream};
use crate::error::Result;
use crate::format::pack::{MAX_GROUP_RAW, PackKind};
use crate::id::ChunkId;

/// Puts of fewer bytes are hashed on the caller's thread.
const PARALLEL_HASH: usize = 256 << 10;

/// A small file cut into chunks and hashed by [`ChunkStore::prepare`],
/// not yet stored.
pub struct Prepared {
    data: Vec<u8>,
    chunks: Vec<Range<usize>>,
    ids: Vec<ChunkId>,
}

impl Prepared {
    /// Its bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl ChunkStore<'_> {
    /// Cuts `reader` into chunks, stores the new ones and returns the ids of
    /// all of them in order. Nothing is committed until [`Self::flush`].
    ///
    /// # Errors
    /// The reader's error, backend errors (a failed pack upload), cache I/O.
    pub fn put_stream(&self, reader: impl Read + Send) -> Result<Vec<ChunkRef>> {
        let mut refs = Vec::new();
        self.put_stream_with(reader, &mut |batch| {
            refs.extend_from_slice(batch);
            Ok(())
        })?;
        Ok(refs)
    }

    /// [`Self::put_stream`], handing the refs of each batch (a segment's
    /// chunks, in order) to `on_refs` as it is stored, so that a caller
    /// need not hold the refs of a whole stream; returns the bytes stored.
    ///
    /// # Errors
    /// As [`Self::put_stream`], and `on_refs`' errors.
    pub fn put_stream_with(
        &self,
        reader: impl Read + Send,
        on_refs: &mut dyn FnMut(&[ChunkRef]) -> Result<()>,
    ) -> Result<u64> {
        let mut stream = ChunkStream::new(self.repo.chunker(), reader, self.options.segment);
        let mut total = 0u64;
        let mut put = |batch: Batch| -> Result<()> {
            let mut refs = Vec::with_capacity(batch.chunks.len());
            self.put_batch(batch, &mut refs)?;
            total += refs.iter().map(|r| u64::from(r.len)).sum::<u64>();
            on_refs(&refs)
        };
        let Some(first) = stream.next_batch()? else {
            return Ok(0);
        };
        if stream.finished() {
            // A small stream: one batch, no reader thread.
            put(first)?;
            return Ok(total);
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
            put(first)?;
            for batch in receiver {
                put(batch?)?;
            }
            Ok(())
        })?;
        Ok(total)
    }

    /// Cuts and hashes `data`, a whole small file, without touching the
    /// store's state: safe on any thread, so several files are prepared
    /// at once and then put in order by [`Self::put_prepared`] (the cuts
    /// and ids are those [`Self::put_stream`] finds for the same bytes).
    pub fn prepare(&self, data: Vec<u8>) -> Prepared {
        let chunks = self.repo.chunker().cut_all(&data);
        let sealer = &self.shared.sealer;
        let ids = chunks
            .iter()
            .map(|r| sealer.chunk_id(&data[r.clone()]))
            .collect();
        Prepared { data, chunks, ids }
    }

    /// Stores the new chunks of a [`Prepared`] file, as
    /// [`Self::put_stream`] stores a stream, and returns the refs of all
    /// of them in order.
    ///
    /// # Errors
    /// As [`Self::put_stream`].
    pub fn put_prepared(&self, prepared: Prepared) -> Result<Vec<ChunkRef>> {
        let Prepared { data, chunks, ids } = prepared;
        let ids = self.put_hashed(PackKind::Data, Arc::new(data), &chunks, Some(ids))?;
        Ok(ids
            .into_iter()
            .zip(&chunks)
            .map(|(id, r)| ChunkRef {
                id,
                len: u32::try_from(r.len()).expect("chunks are below 4 GiB"),
            })
            .collect())
    }

    fn put_batch(&self, batch: Batch, refs: &mut Vec<ChunkRef>) -> Result<()> {
        let ids = self.put_pieces(PackKind::Data, Arc::new(batch.data), &batch.chunks)?;
        refs.extend(ids.into_iter().zip(&batch.chunks).map(|(id, r)| ChunkRef {
            id,
            len: u32::try_from(r.len()).expect("chunks are below 4 GiB"),
        }));
        Ok(())
    }

    /// Stores one blob of `kind` (a tree, or a small file in one chunk).
    ///
    /// # Errors
    /// As [`Self::put_stream`].
    pub fn put_blob(&self, kind: PackKind, data: &[u8]) -> Result<ChunkId> {
        #[allow(clippy::single_range_in_vec_init)] // one piece: the whole blob
        let whole = [0..data.len()];
        Ok(self.put_pieces(kind, Arc::new(data.to_vec()), &whole)?[0])
    }

    /// Stores the pieces `ranges` of `data`, each as one blob of `kind`
    /// (chunks cut elsewhere: a copy keeps the source's boundaries), and
    /// returns their ids in order.
    ///
    /// # Errors
    /// As [`Self::put_stream`].
    pub fn put_chunks(
        &self,
        kind: PackKind,
        data: Vec<u8>,
        ranges: &[Range<usize>],
    ) -> Result<Vec<ChunkId>> {
        self.put_pieces(kind, Arc::new(data), ranges)
    }

    /// Hashes the pieces `ranges` of `data` in parallel, and hands the new
    /// ones to a background job that seals and packs them. Returns the ids
    /// of all pieces, in order.
    fn put_pieces(
        &self,
        kind: PackKind,
        data: Arc<Vec<u8>>,
        ranges: &[Range<usize>],
    ) -> Result<Vec<ChunkId>> {
        self.put_hashed(kind, data, ranges, None)
    }

    /// [`Self::put_pieces`] with the pieces' ids, if the caller has them.
    fn put_hashed(
        &self,
        kind: PackKind,
        data: Arc<Vec<u8>>,
        ranges: &[Range<usize>],
        ids: Option<Vec<ChunkId>>,
    ) -> Result<Vec<ChunkId>> {
        let sealer = &self.shared.sealer;
        let id = |r: &Range<usize>| sealer.chunk_id(&data[r.clone()]);
        // A small put (a small file, a tree) is hashed here: handing it to
        // the pool would cost more than hashing it.
        let ids: Vec<ChunkId> = match ids {
            Some(ids) => ids,
            None if data.len() < PARALLEL_HASH => ranges.iter().map(id).collect(),
            None => ranges.par_iter().map(id).collect(),
        };
        let known = self.trusted_locations(&ids)?;
        let mut fresh = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            for (i, id) in ids.iter().enumerate() {
                state.stats.chunks += 1;
                state.stats.bytes += ranges[i].len() as u64;
                match known[i] {
                    Some(loc) if !state.distrusted.contains(&loc.pack) => {
                        state.relied.insert(loc.pack);
                    }
                    _ if state.pending.contains_key(id) => {}
                    _ => {
                        state.pending.insert(*id, kind);
                        fresh.push((*id, ranges[i].clone()));
                    }
                }
            }
            self.collect_uploads(&mut state, false)?;
        }
        let fresh_bytes: usize = fresh.iter().map(|(_, r)| r.len()).sum();
        if kind == PackKind::Data && fresh_bytes > 0 && fresh_bytes < self.gather_limit() {
            let full = {
                let mut gathered = lock(&self.gathered);
                for (id, r) in fresh {
                    let at = gathered.data.len();
                    gathered.data.extend_from_slice(&data[r]);
                    let end = gathered.data.len();
                    gathered.chunks.push((id, at..end));
                }
                gathered.data.len() >= self.gather_limit()
            };
            if full {
                self.seal_gathered()?;
            }
        } else if !fresh.is_empty() {
            self.submit(SealJob {
                kind,
                data,
                chunks: fresh,
            })?;
        }
        Ok(ids)
    }

    /// New data chunks of a put with fewer new bytes than this are
    /// gathered with those of the puts that follow and sealed together
    /// once this many are gathered: a quarter of a group, so that reading
    /// one small file opens little more than its neighbours.
    fn gather_limit(&self) -> usize {
        self.options.group_size.min(MAX_GROUP_RAW as usize) / 4
    }

    /// Hands the gathered chunks of small puts to a sealing job.
    pub(super) fn seal_gathered(&self) -> Result<()> {
        let gathered = std::mem::take(&mut *lock(&self.gathered));
        if gathered.chunks.is_empty() {
            return Ok(());
        }
        self.submit(SealJob {
            kind: PackKind::Data,
            data: Arc::new(gathered.data),
            chunks: gathered.chunks,
        })
    }
}
