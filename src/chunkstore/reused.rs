//! Chunks read again: a small cache of chunks that were fetched from a
//! group opened for a small part of it, the way a deduplicated chunk is
//! (a file whose chunk was first stored with another file, far away).
//!
//! A restore of many small files opens each group once for the files
//! stored in it, and in order. A chunk that many files share (a file
//! copied in several places, the same text in many files) lives in one
//! group among other files' chunks, and every file that names it would
//! open that whole group (up to [`crate::format::pack::MAX_GROUP_RAW`]
//! bytes decrypted and decompressed) for one chunk. This cache keeps such
//! chunks, least recently used out first, within [`REUSED_BYTES`]: the
//! first reader after the group's own opens it again, the later ones do
//! not. Chunks of a group read in full for the files stored in it are
//! not kept, so a restore streaming through its packs does not push the
//! shared ones out. A kept chunk was checked against its id when it was
//! read; it is only ever handed out for that id.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::id::ChunkId;

/// Bytes of chunks the cache holds at most.
pub const REUSED_BYTES: usize = 8 << 20;

/// Least recently used out first, within a byte budget.
pub(super) struct Reused {
    budget: usize,
    bytes: usize,
    /// Each chunk with the stamp of its last use.
    chunks: HashMap<ChunkId, (Arc<[u8]>, u64)>,
    /// Uses, oldest first; a use whose stamp is no longer its chunk's is
    /// stale and skipped.
    uses: VecDeque<(ChunkId, u64)>,
    stamp: u64,
}

impl Reused {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            chunks: HashMap::new(),
            uses: VecDeque::new(),
            stamp: 0,
        }
    }

    /// The chunk kept for `id`, now the most recently used.
    pub(super) fn get(&mut self, id: &ChunkId) -> Option<Arc<[u8]>> {
        let (chunk, stamp) = self.chunks.get_mut(id)?;
        self.stamp += 1;
        *stamp = self.stamp;
        let chunk = Arc::clone(chunk);
        self.uses.push_back((*id, self.stamp));
        self.trim_stale();
        Some(chunk)
    }

    /// Keeps `chunk` as `id`'s, pushing out the least recently used ones
    /// past the budget. A chunk above an eighth of the budget is not kept.
    pub(super) fn insert(&mut self, id: ChunkId, chunk: &[u8]) {
        if chunk.len() > self.budget / 8 || self.chunks.contains_key(&id) {
            return;
        }
        self.stamp += 1;
        self.bytes += chunk.len();
        self.chunks.insert(id, (Arc::from(chunk), self.stamp));
        self.uses.push_back((id, self.stamp));
        while self.bytes > self.budget {
            let Some((old, stamp)) = self.uses.pop_front() else {
                break;
            };
            if self.chunks.get(&old).is_some_and(|(_, s)| *s == stamp)
                && let Some((gone, _)) = self.chunks.remove(&old)
            {
                self.bytes -= gone.len();
            }
        }
        self.trim_stale();
    }

    /// Drops stale uses once they outnumber the chunks, so the queue stays
    /// within twice the number of chunks kept.
    fn trim_stale(&mut self) {
        if self.uses.len() > 2 * self.chunks.len() + 64 {
            let chunks = &self.chunks;
            self.uses
                .retain(|(id, stamp)| chunks.get(id).is_some_and(|(_, s)| s == stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn the_least_recently_used_goes_first_and_the_budget_holds() {
        let mut r = Reused::new(8 * 100);
        for n in 0..8 {
            r.insert(id(n), &[n; 100]);
        }
        // 0 used again: 1 is now the oldest.
        assert_eq!(r.get(&id(0)).as_deref(), Some(&[0u8; 100][..]));
        r.insert(id(8), &[8; 100]);
        assert!(r.get(&id(1)).is_none());
        assert!(r.get(&id(0)).is_some());
        assert!(r.get(&id(8)).is_some());
        assert!(r.bytes <= 800);
        // Too large for the cache: not kept.
        r.insert(id(9), &[9; 101]);
        assert!(r.get(&id(9)).is_none());
        // Many uses of one chunk do not grow the queue without bound.
        for _ in 0..10_000 {
            r.get(&id(0));
        }
        assert!(r.uses.len() <= 2 * r.chunks.len() + 65);
    }
}
