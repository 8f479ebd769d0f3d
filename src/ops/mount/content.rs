//! Operations layer, `mount`: reading files' contents. Owns the read path:
//! a file's extents are resolved once at open; a read takes the chunks it
//! covers from a bounded cache of decrypted chunks (least recently used
//! goes first) or fetches them in one batch through
//! [`ChunkStore::for_each_chunk`] (neighbours in a pack in one ranged
//! read); while a handle reads sequentially, the chunks of the next
//! [`super::MountOptions::readahead_bytes`] are fetched in the same batch
//! once the first half of that window is no longer all cached, so a
//! sequential reader pays one batch per half window. Holes are zeros and
//! never fetched. A chunk that cannot be read fails the read (EIO above)
//! with a warning naming the file, the chunk and its pack.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::inodes::{NodeKind, View};
use super::lock;
use crate::error::{DAMAGE_LOG, Error, ErrorKind, Result};
use crate::format::tree::{Entry, Extent, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree::load_extents;

/// An open file: its extents and where each starts.
pub struct OpenFile {
    path: String,
    extents: Vec<Extent>,
    starts: Vec<u64>,
    size: u64,
    /// Where the next sequential read would start.
    next: AtomicU64,
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
}

#[derive(Default)]
struct Lru {
    chunks: HashMap<ChunkId, (Arc<Vec<u8>>, u64)>,
    by_use: BTreeMap<u64, ChunkId>,
    tick: u64,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Lru::default()),
        }
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

    /// Whether `id` is cached, without counting as a use.
    fn contains(&self, id: &ChunkId) -> bool {
        lock(&self.inner).chunks.contains_key(id)
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

/// `lseek`'s `whence` for data and holes.
pub const SEEK_DATA: i32 = 3;
pub const SEEK_HOLE: i32 = 4;

impl View<'_> {
    /// Opens file `ino`: resolves its extents; returns the handle.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for what is not a regular file; missing
    /// or damaged extent lists.
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
        let extents = load_extents(self.store, content, meta.size)?;
        let starts = extents
            .iter()
            .scan(0u64, |at, e| {
                let s = *at;
                *at += e.len();
                Some(s)
            })
            .collect();
        let file = OpenFile {
            path: self.path(ino),
            extents,
            starts,
            size: meta.size,
            next: AtomicU64::new(0),
        };
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

    /// Up to `size` bytes of open file `fh` from `offset` (fewer at its end).
    ///
    /// # Errors
    /// A chunk that cannot be read (warned, naming its pack).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file = self.file(fh)?;
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = file.starts.partition_point(|&s| s <= offset) - 1;
        let last = file.starts.partition_point(|&s| s < end);
        let sequential = file.next.swap(end, Ordering::Relaxed) == offset;
        let wanted: Vec<ChunkId> = data_ids(&file.extents[first..last]);
        let ahead = if sequential {
            self.window_ahead(&file.extents[last..])
        } else {
            Vec::new()
        };
        let chunks = self.fetch(&file, &wanted, &ahead)?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for k in first..last {
            let (start, e) = (file.starts[k], &file.extents[k]);
            let from = offset.max(start) - start;
            let to = end.min(start + e.len()) - start;
            match e {
                Extent::Data { id, .. } => {
                    out.extend_from_slice(&chunks[id][from as usize..to as usize]);
                }
                Extent::Hole { .. } => out.resize(out.len() + (to - from) as usize, 0),
            }
        }
        Ok(out)
    }

    /// The data chunks of the readahead window over `rest` if the first
    /// half of it is not all cached; else none.
    fn window_ahead(&self, rest: &[Extent]) -> Vec<ChunkId> {
        let window = self.options.readahead_bytes;
        let mut at = 0u64;
        let mut ids = Vec::new();
        let mut refill = false;
        for e in rest {
            if at >= window {
                break;
            }
            if let Extent::Data { id, .. } = e {
                refill |= at < window / 2 && !self.chunks.contains(id);
                ids.push(*id);
            }
            at += e.len();
        }
        if refill { ids } else { Vec::new() }
    }

    /// The chunks `wanted`, from the cache or fetched in one batch with
    /// the uncached ones of `ahead` (which only go into the cache).
    fn fetch(
        &self,
        file: &OpenFile,
        wanted: &[ChunkId],
        ahead: &[ChunkId],
    ) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>> {
        let mut got: HashMap<ChunkId, Arc<Vec<u8>>> = HashMap::new();
        let mut missing = Vec::new();
        for id in wanted {
            match self.chunks.get(id) {
                Some(data) => {
                    got.insert(*id, data);
                }
                None => missing.push(*id),
            }
        }
        if missing.is_empty() && ahead.is_empty() {
            return Ok(got);
        }
        missing.extend(ahead.iter().filter(|id| !self.chunks.contains(id)));
        missing.sort_unstable();
        missing.dedup();
        let fetched = self.store.for_each_chunk(&missing, |k, plain| {
            let data = Arc::new(plain.to_vec());
            if wanted.contains(&missing[k]) {
                got.insert(missing[k], Arc::clone(&data));
            }
            self.chunks.put(missing[k], data);
            Ok(())
        });
        if let Err(e) = fetched {
            let lost = wanted.iter().find(|id| !got.contains_key(id));
            self.warn_damage(file, lost, &e);
            return Err(e);
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
    ///
    /// # Errors
    /// A handle that is not open.
    pub fn seek(&self, fh: u64, offset: u64, whence: i32) -> Result<Option<u64>> {
        let file = self.file(fh)?;
        if offset >= file.size {
            return Ok(None);
        }
        let first = file.starts.partition_point(|&s| s <= offset) - 1;
        for (k, e) in file.extents.iter().enumerate().skip(first) {
            let is_hole = matches!(e, Extent::Hole { .. });
            if (whence == SEEK_HOLE) == is_hole {
                return Ok(Some(offset.max(file.starts[k])));
            }
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
