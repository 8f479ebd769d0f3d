//! Operations layer, `mount`: reading files' contents. Owns the read path:
//! a file's extents are resolved at open when they are inline, and as
//! reads reach them when they are extent lists ([`super::spans`]: memory
//! stays bounded for a file of millions of extents); a read takes the chunks it
//! covers from a bounded cache of decrypted chunks (least recently used
//! goes first) or fetches them in one batch through
//! [`ChunkStore::for_each_chunk`] (neighbours in a pack in one ranged
//! read); while a handle reads sequentially, the chunks of the next
//! [`super::MountOptions::readahead_bytes`] are handed to the prefetch
//! threads (in parts, fetched in parallel) once the first half of that
//! window is no longer all cached or on its way, so decryption runs ahead
//! of the reader on other cores. A chunk is fetched
//! by one request at a time: the kernel sends several reads of a file at
//! once, and a read that needs a chunk another is fetching waits for it
//! instead of fetching it again. Holes are zeros and never fetched. A chunk that cannot be read fails the read (EIO above)
//! with a warning naming the file, the chunk and its pack.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::inodes::{NodeKind, View};
use super::lock;
use super::spans::{List, Spans};
use crate::error::{DAMAGE_LOG, Error, ErrorKind, Result};
use crate::format::tree::{Content, Entry, Extent, Payload, TreeBlob};
use crate::id::ChunkId;

/// An open file: where its extents are.
pub struct OpenFile {
    path: String,
    extents: Extents,
    size: u64,
    /// Where the next sequential read would start.
    next: AtomicU64,
}

/// An open file's extents: all of them (an inline content), or the extent
/// lists' ids and the spans met so far. The spans' lock is held while a
/// list is decoded, so lists are met once and in order.
enum Extents {
    Inline(Arc<List>),
    Lists {
        ids: Vec<ChunkId>,
        spans: Mutex<Spans>,
    },
}

/// The open files by handle.
#[derive(Default)]
pub struct OpenFiles {
    next_handle: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
}

/// Decrypted chunks, at most `capacity` bytes, least recently used out
/// first.
pub struct ChunkCache {
    capacity: usize,
    inner: Mutex<Lru>,
    /// Signalled when fetches end.
    fetched: Condvar,
}

#[derive(Default)]
struct Lru {
    chunks: HashMap<ChunkId, (Arc<Vec<u8>>, u64)>,
    by_use: BTreeMap<u64, ChunkId>,
    tick: u64,
    bytes: usize,
    /// Chunks some request is fetching.
    pending: HashSet<ChunkId>,
}

impl ChunkCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Lru::default()),
            fetched: Condvar::new(),
        }
    }

    /// Of `ids`, those the caller is to fetch (neither cached nor being
    /// fetched; now marked as being fetched). The caller must
    /// [`Self::finish`] them.
    fn claim(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let mut l = lock(&self.inner);
        let mine: Vec<ChunkId> = ids
            .iter()
            .filter(|id| !l.chunks.contains_key(id) && !l.pending.contains(id))
            .copied()
            .collect();
        l.pending.extend(mine.iter().copied());
        mine
    }

    /// Ends the fetch of `ids` (whether they were put or not).
    fn finish(&self, ids: &[ChunkId]) {
        let mut l = lock(&self.inner);
        for id in ids {
            l.pending.remove(id);
        }
        self.fetched.notify_all();
    }

    /// Chunk `id` once no request is fetching it, if it is cached then.
    fn wait_for(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut l = lock(&self.inner);
        while l.pending.contains(id) {
            l = self
                .fetched
                .wait(l)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(l);
        self.get(id)
    }

    /// The chunk `id`, if cached (now the most recently used).
    pub fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut l = lock(&self.inner);
        l.tick += 1;
        let tick = l.tick;
        let (data, used) = l.chunks.get_mut(id)?;
        let (data, old) = (Arc::clone(data), std::mem::replace(used, tick));
        l.by_use.remove(&old);
        l.by_use.insert(tick, *id);
        Some(data)
    }

    /// Whether `id` is cached or being fetched, without counting as a use.
    fn has_or_awaits(&self, id: &ChunkId) -> bool {
        let l = lock(&self.inner);
        l.chunks.contains_key(id) || l.pending.contains(id)
    }

    /// Keeps `data` as chunk `id`, evicting the least recently used.
    pub fn put(&self, id: ChunkId, data: Arc<Vec<u8>>) {
        let mut l = lock(&self.inner);
        l.tick += 1;
        let tick = l.tick;
        l.bytes += data.len();
        if let Some((old, used)) = l.chunks.insert(id, (data, tick)) {
            l.bytes -= old.len();
            l.by_use.remove(&used);
        }
        l.by_use.insert(tick, id);
        while l.bytes > self.capacity {
            let Some((_, oldest)) = l.by_use.pop_first() else {
                break;
            };
            if let Some((old, _)) = l.chunks.remove(&oldest) {
                l.bytes -= old.len();
            }
        }
    }
}

/// Parts a readahead window is split into (fetched in parallel).
const PREFETCH_PARTS: usize = 4;

/// `lseek`'s `whence` for data and holes.
pub const SEEK_DATA: i32 = 3;
pub const SEEK_HOLE: i32 = 4;

impl View<'_> {
    /// Opens file `ino`: takes its inline extents, or meets its first
    /// extent list; returns the handle.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for what is not a regular file; a
    /// missing or damaged first extent list (a later one fails the reads
    /// that reach it).
    pub fn open(&self, ino: u64) -> Result<u64> {
        let node = self
            .node(ino)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such inode"))?;
        let NodeKind::Tree(Entry {
            payload: Payload::File(content),
            meta,
            ..
        }) = &node.kind
        else {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        };
        let extents = match content {
            Content::Inline(extents) => Extents::Inline(Arc::new(List::new(extents.clone(), 0))),
            Content::Indirect(ids) => Extents::Lists {
                ids: ids.clone(),
                spans: Mutex::new(Spans::new(ids.len(), meta.size)),
            },
        };
        let file = OpenFile {
            path: self.path(ino),
            extents,
            size: meta.size,
            next: AtomicU64::new(0),
        };
        if matches!(file.extents, Extents::Lists { .. }) {
            self.list_at(&file, 0)?;
        }
        let handle = self.open_files.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.open_files.files).insert(handle, Arc::new(file));
        Ok(handle)
    }

    /// Forgets handle `fh`.
    pub fn release(&self, fh: u64) {
        lock(&self.open_files.files).remove(&fh);
    }

    fn file(&self, fh: u64) -> Result<Arc<OpenFile>> {
        lock(&self.open_files.files)
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "not an open file"))
    }

    /// The extent list of open file `file` whose span holds `offset`
    /// (meeting the lists up to it); `None` past the last extent.
    ///
    /// # Errors
    /// Missing or damaged extent lists.
    fn list_at(&self, file: &OpenFile, offset: u64) -> Result<Option<Arc<List>>> {
        match &file.extents {
            Extents::Inline(list) => Ok((offset < list.end).then(|| Arc::clone(list))),
            Extents::Lists { ids, spans } => {
                let mut load = |k: usize| {
                    let id = ids[k];
                    let list = self
                        .store
                        .get(&id)
                        .and_then(|b| {
                            TreeBlob::decode(&b).map_err(|e| e.context(format!("tree {id}")))
                        })
                        .and_then(|blob| match blob {
                            TreeBlob::ExtentList(list) => Ok(list),
                            _ => Err(Error::corrupt(format!("tree {id} is not an extent list"))),
                        });
                    list.inspect_err(|e| {
                        tracing::warn!(
                            target: DAMAGE_LOG,
                            "{}: read failed (EIO): extent list {id}: {e}",
                            file.path
                        );
                    })
                };
                lock(spans)
                    .list_at(offset, &mut load)
                    .map_err(|e| e.context(&file.path))
            }
        }
    }

    /// The extent lists that hold `offset..end` of `file`, in order, each
    /// with the range of its extents that do; fewer where the extents end
    /// before `end`.
    fn lists_over(
        &self,
        file: &OpenFile,
        offset: u64,
        end: u64,
    ) -> Result<Vec<(Arc<List>, std::ops::Range<usize>)>> {
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let Some(list) = self.list_at(file, at)? else {
                break;
            };
            let range = list.at(at)..list.before(end);
            at = list.end;
            out.push((list, range));
        }
        Ok(out)
    }

    /// Up to `size` bytes of open file `fh` from `offset` (fewer at its end).
    ///
    /// # Errors
    /// A chunk that cannot be read (warned, naming its pack); a missing or
    /// damaged extent list.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file = self.file(fh)?;
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let pieces = self.lists_over(&file, offset, end)?;
        let wanted: Vec<ChunkId> = pieces
            .iter()
            .flat_map(|(list, range)| data_ids(&list.extents[range.clone()]))
            .collect();
        if file.next.swap(end, Ordering::Relaxed) == offset
            && let Some((list, range)) = pieces.last()
        {
            self.read_ahead(&file, list, range.end);
        }
        let chunks = self.fetch(&file, &wanted)?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (list, range) in &pieces {
            for k in range.clone() {
                let (start, e) = (list.starts[k], &list.extents[k]);
                let from = offset.max(start) - start;
                let to = end.min(start + e.len()) - start;
                match e {
                    Extent::Data { id, .. } => {
                        let part = chunks[id].get(from as usize..to as usize).ok_or_else(|| {
                            Error::corrupt(format!(
                                "{}: chunk {id} is shorter than its extent",
                                file.path
                            ))
                        })?;
                        out.extend_from_slice(part);
                    }
                    Extent::Hole { .. } => out.resize(out.len() + (to - from) as usize, 0),
                }
            }
        }
        Ok(out)
    }

    /// Hands the readahead window from extent `from` of `list` on to the
    /// prefetch threads if the first half of it is not all cached or on
    /// its way. A window that passes the list's end goes on into the next
    /// list (met now if it was not).
    fn read_ahead(&self, file: &OpenFile, list: &List, from: usize) {
        let rest = list.end - list.starts.get(from).copied().unwrap_or(list.end);
        let next = if rest < self.options.readahead_bytes && list.end < file.size {
            self.list_at(file, list.end).ok().flatten()
        } else {
            None
        };
        let ahead = list.extents[from..]
            .iter()
            .chain(next.iter().flat_map(|l| l.extents.iter()));
        let ids = self.window_ahead(ahead);
        if ids.is_empty() {
            return;
        }
        let mine = self.chunks.claim(&ids);
        let part = mine.len().div_ceil(PREFETCH_PARTS).max(1);
        let mut start = 0;
        while start < mine.len() {
            // A part ends where a compression group does: a group split
            // between two parts would be opened by both.
            let mut end = (start + part).min(mine.len());
            let group = self.store.group_of(&mine[end - 1]);
            while end < mine.len() && group.is_some() && self.store.group_of(&mine[end]) == group {
                end += 1;
            }
            let ids = &mine[start..end];
            start = end;
            let sent = match &*lock(&self.prefetch) {
                Some(tx) => tx.send(ids.to_vec()).is_ok(),
                None => false,
            };
            if !sent {
                self.chunks.finish(ids);
            }
        }
    }

    /// Fetches `ids` into the cache (a prefetch thread's work); a failure
    /// is left for the read that needs the chunk to meet and report.
    pub fn prefetch(&self, ids: &[ChunkId]) {
        let fetched = self.store.for_each_chunk(ids, |k, plain| {
            self.chunks.put(ids[k], Arc::new(plain.to_vec()));
            Ok(())
        });
        self.chunks.finish(ids);
        if let Err(e) = fetched {
            tracing::debug!("readahead: {e}");
        }
    }

    /// The data chunks of the readahead window over `rest` if the first
    /// half of it is not all cached or on its way; else none.
    fn window_ahead<'e>(&self, rest: impl Iterator<Item = &'e Extent>) -> Vec<ChunkId> {
        let window = self.options.readahead_bytes;
        let mut at = 0u64;
        let mut ids = Vec::new();
        let mut refill = false;
        for e in rest {
            if at >= window {
                break;
            }
            if let Extent::Data { id, .. } = e {
                refill |= at < window / 2 && !self.chunks.has_or_awaits(id);
                ids.push(*id);
            }
            at += e.len();
        }
        if refill { ids } else { Vec::new() }
    }

    /// The chunks `wanted`, from the cache or fetched in one batch; those
    /// another request or a prefetch thread is fetching are waited for.
    fn fetch(&self, file: &OpenFile, wanted: &[ChunkId]) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>> {
        let mut got: HashMap<ChunkId, Arc<Vec<u8>>> = wanted
            .iter()
            .filter_map(|id| self.chunks.get(id).map(|d| (*id, d)))
            .collect();
        let mut candidates: Vec<ChunkId> = wanted
            .iter()
            .filter(|id| !got.contains_key(id))
            .copied()
            .collect();
        if candidates.is_empty() {
            return Ok(got);
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mine = self.chunks.claim(&candidates);
        let fetched = self.store.for_each_chunk(&mine, |k, plain| {
            let data = Arc::new(plain.to_vec());
            if wanted.contains(&mine[k]) {
                got.insert(mine[k], Arc::clone(&data));
            }
            self.chunks.put(mine[k], data);
            Ok(())
        });
        self.chunks.finish(&mine);
        if let Err(e) = fetched {
            let lost = wanted.iter().find(|id| !got.contains_key(id));
            self.warn_damage(file, lost, &e);
            return Err(e);
        }
        // Fetched by another request (or by this one and evicted since).
        for id in wanted {
            if got.contains_key(id) {
                continue;
            }
            let data = match self.chunks.wait_for(id) {
                Some(data) => data,
                None => Arc::new(self.store.get(id).inspect_err(|e| {
                    self.warn_damage(file, Some(id), e);
                })?),
            };
            got.insert(*id, data);
        }
        Ok(got)
    }

    fn warn_damage(&self, file: &OpenFile, lost: Option<&ChunkId>, e: &Error) {
        let pack = lost
            .and_then(|id| self.index.lookup(id).ok().flatten())
            .map_or_else(|| "unknown".to_owned(), |l| l.pack.to_hex());
        let chunk = lost.map_or_else(|| "?".to_owned(), ChunkId::to_hex);
        tracing::warn!(
            target: DAMAGE_LOG,
            "{}: read failed (EIO): chunk {chunk} in pack {pack}: {e}",
            file.path
        );
    }

    /// Where `SEEK_DATA` or `SEEK_HOLE` from `offset` lands in open file
    /// `fh`; `None` for ENXIO (beyond the end, or no data after `offset`).
    /// Looks through the extent lists from the one holding `offset` on,
    /// one at a time.
    ///
    /// # Errors
    /// A handle that is not open ([`ErrorKind::InvalidInput`]); a missing
    /// or damaged extent list.
    pub fn seek(&self, fh: u64, offset: u64, whence: i32) -> Result<Option<u64>> {
        let file = self.file(fh)?;
        if offset >= file.size {
            return Ok(None);
        }
        let mut at = offset;
        while at < file.size {
            let Some(list) = self.list_at(&file, at)? else {
                break;
            };
            for k in list.at(at)..list.extents.len() {
                let is_hole = matches!(list.extents[k], Extent::Hole { .. });
                if (whence == SEEK_HOLE) == is_hole {
                    return Ok(Some(at.max(list.starts[k])));
                }
            }
            at = list.end;
        }
        // The end of a file counts as a hole.
        Ok((whence == SEEK_HOLE).then_some(file.size))
    }
}

fn data_ids(extents: &[Extent]) -> Vec<ChunkId> {
    crate::snapshot::tree::data_ids(extents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_what_was_used_last_within_its_bound() {
        let cache = ChunkCache::new(300);
        let id = |n: u8| ChunkId([n; 32]);
        cache.put(id(1), Arc::new(vec![1; 100]));
        cache.put(id(2), Arc::new(vec![2; 100]));
        cache.put(id(3), Arc::new(vec![3; 100]));
        assert!(cache.get(&id(1)).is_some()); // 2 is now the oldest use
        cache.put(id(4), Arc::new(vec![4; 100]));
        assert!(cache.get(&id(2)).is_none());
        assert_eq!(cache.get(&id(1)).unwrap()[0], 1);
        assert_eq!(cache.get(&id(4)).unwrap()[0], 4);
        cache.put(id(5), Arc::new(vec![5; 1000])); // larger than the bound
        assert!(cache.get(&id(1)).is_none() && cache.get(&id(5)).is_none());
    }
}
