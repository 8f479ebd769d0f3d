//! The read side of the chunk store: a blob by id with its fallbacks
//! (other copies, open packs, the tree cache, and the headers of unindexed
//! packs through the [`super::Locator`]), and many chunks at once with
//! neighbours in a pack read together. Reads never fail for a blob that
//! is intact in a listed pack, indexed or not.

use std::ops::Range;

use std::sync::Arc;

use super::{
    COALESCE_GAP, COALESCE_MAX, ChunkStore, OPENED_GROUPS, READ_WINDOW, TREE_CACHE_BATCH, lock,
};
use crate::chunkstore::index::BlobLocation;
use crate::error::{Error, ErrorKind, Result};
use crate::format::layout;
use crate::format::pack::PackKind;
use crate::id::ChunkId;
use crate::repository::Repository;

impl ChunkStore<'_> {
    /// Fetches a chunk or tree blob, authenticated and checked against `id`.
    /// If the copy the cache names first is missing or damaged, the other
    /// copies it knows are tried in turn; a blob no index file names is
    /// looked for in the unindexed packs' headers ([`super::Locator`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if no index, open pack or unindexed pack has it (a blob
    /// waiting for upload can be read after [`Self::flush`]);
    /// [`ErrorKind::Corrupt`] if its bytes fail any check; with several
    /// copies, the first copy's error when none can be read.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        // A blob lost where it was indexed may have been stored again by
        // this store (in a distrusted pack's stead): look there too.
        let indexed_error = match self.index.lookup(id)? {
            Some(loc) => match self.read_located(id, &loc) {
                Ok(plain) => return Ok(plain),
                Err(e) => match self.get_other_copy(id, &loc, e) {
                    Ok(plain) => return Ok(plain),
                    Err(e) => Some(e),
                },
            },
            None => None,
        };
        if lock(&self.shared.state).pending.contains_key(id) {
            // It may still be gathered or on its way into a pack.
            self.seal_gathered()?;
            self.drain()?;
        }
        {
            let state = lock(&self.shared.state);
            for (packer, kind) in [(&state.data, PackKind::Data), (&state.tree, PackKind::Tree)] {
                if let Some((sealed, e)) = packer.find(id) {
                    return self.repo.sealer().open_chunk(
                        kind,
                        id,
                        sealed,
                        e.raw_offset,
                        e.raw_len,
                    );
                }
            }
        }
        // Not indexed (or no indexed copy reads): an unindexed pack's
        // header may still name it (a condemned pack, an orphan).
        if let Some(loc) = self.locator.unindexed_location(id)? {
            match self.read_located(id, &loc) {
                Ok(plain) => return Ok(plain),
                Err(e) if indexed_error.is_none() => return Err(e),
                Err(_) => {}
            }
        }
        Err(indexed_error.unwrap_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("blob {id} is not in the index"),
            )
        }))
    }

    /// Unindexed packs reads have found blobs in (condemned by a prune
    /// record, or named by no index file).
    pub fn unindexed_packs_used(&self) -> std::collections::HashSet<crate::id::PackId> {
        self.locator.used_unindexed()
    }

    /// Where blob `id` is in a pack no current index file names (see
    /// [`super::Locator::unindexed_location`]); for readers only.
    ///
    /// # Errors
    /// As [`super::Locator::locate`].
    pub fn unindexed_location(&self, id: &ChunkId) -> Result<Option<BlobLocation>> {
        self.locator.unindexed_location(id)
    }

    /// How many reads are worth having in flight (the backend's hint).
    pub fn read_concurrency(&self) -> usize {
        self.repo.io_concurrency()
    }

    /// Fetches several data chunks, each authenticated and checked against
    /// its id, in order (see [`Self::for_each_chunk`]).
    ///
    /// # Errors
    /// As [`Self::get`].
    pub fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>> {
        let mut out = vec![Vec::new(); ids.len()];
        self.for_each_chunk(ids, |k, plain| {
            out[k] = plain.to_vec();
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f(k, chunk)` once for each position `k` of `ids` with that
    /// chunk, authenticated and checked against its id, in an order of the
    /// store's choosing: first those kept from earlier calls (chunks read
    /// from a group opened for a small part of it, see [`super::reused`]),
    /// then by pack and offset, so that chunks stored next to
    /// each other in one pack are read with one ranged read (gaps up to
    /// [`COALESCE_GAP`] are read and skipped) and a restore over a network
    /// makes a request per run of neighbouring chunks instead of one per
    /// chunk. A group is opened (decrypted and decompressed) once for all
    /// the chunks wanted from it, and a chunk listed twice is checked once. Only one run's
    /// bytes are held at a time. Anything the fast path cannot read is
    /// fetched by [`Self::get`], with its fallbacks, at the end.
    ///
    /// # Errors
    /// As [`Self::get`], and the first error `f` returns (which stops it).
    pub fn for_each_chunk(
        &self,
        ids: &[ChunkId],
        mut f: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut todo = Vec::with_capacity(ids.len());
        let mut kept = Vec::new();
        {
            let mut reused = lock(&self.reused);
            for (k, id) in ids.iter().enumerate() {
                match reused.get(id) {
                    Some(chunk) => kept.push((k, chunk)),
                    None => todo.push(k),
                }
            }
        }
        for (k, chunk) in kept {
            f(k, &chunk)?;
        }
        if todo.len() == ids.len() {
            return self.read_runs(ids, f);
        }
        let todo_ids: Vec<ChunkId> = todo.iter().map(|&k| ids[k]).collect();
        self.read_runs(&todo_ids, |k, chunk| f(todo[k], chunk))
    }

    /// [`Self::for_each_chunk`] from the packs.
    fn read_runs(
        &self,
        ids: &[ChunkId],
        mut f: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut locations = self.index.lookup_many(ids)?;
        // Blobs no index file names, found in unindexed packs' headers,
        // are read in runs like the rest.
        for (id, loc) in ids.iter().zip(&mut locations) {
            if loc.is_none() {
                *loc = self.locator.unindexed_location(id)?;
            }
        }
        // By pack and offset: a backup spreads consecutive chunks over a
        // few open packs, so neighbours in a file are neighbours in their
        // pack, not in the list.
        let mut order: Vec<usize> = (0..ids.len())
            .filter(|&k| locations[k].is_some_and(|l| l.kind == PackKind::Data))
            .collect();
        order.sort_by_key(|&k| {
            let l = locations[k].expect("filtered");
            (l.pack, l.offset, l.raw_offset)
        });
        let mut fallback: Vec<usize> = (0..ids.len())
            .filter(|&k| !locations[k].is_some_and(|l| l.kind == PackKind::Data))
            .collect();
        let mut i = 0;
        while i < order.len() {
            let first = locations[order[i]].expect("filtered");
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.stored_len);
            let mut j = i + 1;
            while j < order.len() {
                let next = locations[order[j]].expect("filtered");
                let next_start = u64::from(next.offset);
                let same_group = next.same_group(&locations[order[j - 1]].expect("filtered"));
                if next.pack != first.pack
                    || (next_start < end && !same_group)
                    || next_start.saturating_sub(end) > COALESCE_GAP
                    || next_start + u64::from(next.stored_len) - start > COALESCE_MAX
                {
                    break;
                }
                end = end.max(next_start + u64::from(next.stored_len));
                j += 1;
            }
            let run = &order[i..j];
            i = j;
            let Ok((start, bytes)) = self.read_window(&first.pack, start..end) else {
                fallback.extend_from_slice(run);
                continue;
            };
            // Positions of one group are neighbours in `run`.
            let mut r = 0;
            while r < run.len() {
                let loc = locations[run[r]].expect("filtered");
                let in_group = run[r..]
                    .iter()
                    .take_while(|&&k| locations[k].is_some_and(|l| l.same_group(&loc)))
                    .count();
                let group = &run[r..r + in_group];
                r += in_group;
                let at = (u64::from(loc.offset) - start) as usize;
                let sealed = &bytes[at..at + loc.stored_len as usize];
                let Ok(plain) = self.repo.sealer().open_group(loc.kind, sealed) else {
                    fallback.extend_from_slice(group);
                    continue;
                };
                // A group opened for a small part of it: keep what was
                // wanted, which other calls are likely to want again.
                let wanted: usize = group
                    .iter()
                    .map(|&k| locations[k].expect("filtered").raw_len as usize)
                    .sum();
                let keep = wanted.saturating_mul(2) < plain.len();
                let mut checked: Option<(BlobLocation, &[u8])> = None;
                for &k in group {
                    let l = locations[k].expect("filtered");
                    let chunk = match checked {
                        Some((c, chunk)) if c == l => Ok(chunk),
                        _ => self
                            .repo
                            .sealer()
                            .chunk_in(&ids[k], &plain, l.raw_offset, l.raw_len),
                    };
                    match chunk {
                        Ok(chunk) => {
                            checked = Some((l, chunk));
                            if keep {
                                lock(&self.reused).insert(ids[k], chunk);
                            }
                            f(k, chunk)?;
                        }
                        Err(_) => fallback.push(k),
                    }
                }
            }
        }
        for k in fallback {
            f(k, &self.get(&ids[k])?)?;
        }
        Ok(())
    }

    /// After reading `id` at `failed` met `error`: the first other copy
    /// that reads whole, or `error` when damage is all there is.
    fn get_other_copy(&self, id: &ChunkId, failed: &BlobLocation, error: Error) -> Result<Vec<u8>> {
        if !matches!(error.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) {
            return Err(error);
        }
        for loc in self.index.locations(id)?.iter().filter(|l| *l != failed) {
            match self.read_located(id, loc) {
                Ok(plain) => {
                    tracing::warn!("blob {id}: {error}; read another copy");
                    return Ok(plain);
                }
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Err(error)
    }

    /// Reads blob `id` at `loc`; a tree blob from the tree cache if a copy
    /// there authenticates, else from its pack and then into the cache.
    fn read_located(&self, id: &ChunkId, loc: &BlobLocation) -> Result<Vec<u8>> {
        if loc.kind != PackKind::Tree || !self.options.tree_cache {
            return self.read_chunk(id, loc);
        }
        if let Some(plain) = self.cached_tree(id, loc) {
            return Ok(plain);
        }
        let sealed = self.read_sealed_windowed(loc)?;
        let plain = open_sealed(self.repo, id, loc, &sealed)?;
        let full = {
            let mut waiting = lock(&self.trees_read);
            waiting.push((*id, sealed));
            (waiting.len() >= TREE_CACHE_BATCH).then(|| std::mem::take(&mut *waiting))
        };
        if let Some(blobs) = full {
            self.cache_trees(&blobs);
        }
        Ok(plain)
    }

    /// The compression group the index places chunk `id` in (its pack and
    /// offset), if it knows one: chunks of one group are best read
    /// together ([`Self::for_each_chunk`] opens a group once per call).
    pub fn group_of(&self, id: &ChunkId) -> Option<(crate::id::PackId, u32)> {
        self.index
            .lookup(id)
            .ok()
            .flatten()
            .map(|l| (l.pack, l.offset))
    }

    /// Reads chunk `id` at `loc` from its group, which it opens unless one
    /// of the groups opened last is it; a group of several chunks is kept
    /// among those.
    fn read_chunk(&self, id: &ChunkId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let sealer = self.repo.sealer();
        let key = (loc.pack, loc.offset);
        let kept = lock(&self.opened)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, group)| Arc::clone(group));
        if let Some(Ok(chunk)) = kept
            .as_deref()
            .map(|group| sealer.chunk_in(id, group, loc.raw_offset, loc.raw_len))
        {
            return Ok(chunk.to_vec());
        }
        let sealed = self.read_sealed_windowed(loc)?;
        let group = sealer.open_group(loc.kind, &sealed)?;
        let chunk = sealer
            .chunk_in(id, &group, loc.raw_offset, loc.raw_len)?
            .to_vec();
        if chunk.len() < group.len() {
            let mut opened = lock(&self.opened);
            opened.retain(|(k, _)| *k != key);
            if opened.len() >= OPENED_GROUPS {
                opened.pop_front();
            }
            opened.push_back((key, Arc::new(group)));
        }
        Ok(chunk)
    }

    /// The sealed envelope at `loc`, read within an aligned window.
    fn read_sealed_windowed(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let start = u64::from(loc.offset);
        let end = start + u64::from(loc.stored_len);
        let (from, mut bytes) = self.read_window(&loc.pack, start..end)?;
        let at = usize::try_from(start - from).expect("within one window");
        bytes.truncate(at + loc.stored_len as usize);
        Ok(bytes.split_off(at))
    }

    /// Reads `range` of pack `pack` widened to [`aligned`] windows;
    /// returns where the bytes start. A pack whose size the index does not
    /// know (one found by its header alone) is read exactly, and so is one
    /// whose window fails (an index record that names a wrong pack size:
    /// the blob may still be whole).
    ///
    /// # Errors
    /// Backend errors.
    fn read_window(&self, pack: &crate::id::PackId, range: Range<u64>) -> Result<(u64, Vec<u8>)> {
        let path = layout::pack_path(pack);
        let window = match self.index.pack_size(pack)? {
            Some(size) => aligned(&range, size),
            None => range.clone(),
        };
        if window != range {
            match self.repo.backend().read(&path, Some(window.clone())) {
                Ok(bytes) if bytes.len() as u64 == window.end - window.start => {
                    return Ok((window.start, bytes));
                }
                Ok(_) => tracing::debug!("pack {pack}: short windowed read"),
                Err(e) if e.kind() == ErrorKind::Corrupt => tracing::debug!("pack {pack}: {e}"),
                Err(e) => return Err(e),
            }
        }
        let bytes = self.repo.backend().read(&path, Some(range.clone()))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corrupt(format!("pack {pack}: short read")));
        }
        Ok((range.start, bytes))
    }

    /// Tree blob `id` from the tree cache, if there and whole; a copy that
    /// fails authentication is dropped.
    fn cached_tree(&self, id: &ChunkId, loc: &BlobLocation) -> Option<Vec<u8>> {
        let sealed = match self.index.cached_tree(id) {
            Ok(sealed) => sealed?,
            Err(e) => {
                tracing::debug!("tree cache unreadable: {e}");
                return None;
            }
        };
        match open_sealed(self.repo, id, loc, &sealed) {
            Ok(plain) => Some(plain),
            Err(e) => {
                tracing::warn!("cached copy of tree {id} dropped ({e}); reading its pack");
                if let Err(e) = self.index.forget_tree(id) {
                    tracing::debug!("tree cache: {e}");
                }
                None
            }
        }
    }

    /// Puts sealed tree blobs in the tree cache; a cache that fails only
    /// means they are read from packs next time.
    pub(super) fn cache_trees(&self, blobs: &[(ChunkId, Vec<u8>)]) {
        if let Err(e) = self.index.cache_trees(blobs) {
            tracing::debug!("tree cache not updated: {e}");
        }
        if let Err(e) = self.index.refill(self.repo) {
            tracing::warn!("index not reloaded after a cache failure: {e}");
        }
    }
}

/// Reads chunk `id` at `loc` from its pack: one ranged read of its group,
/// then authentication, decompression and the id check.
///
/// # Errors
/// Backend errors; [`ErrorKind::Corrupt`] for any mismatch.
pub fn read_blob(repo: &Repository, id: &ChunkId, loc: &BlobLocation) -> Result<Vec<u8>> {
    let sealed = read_sealed(repo, loc)?;
    open_sealed(repo, id, loc, &sealed)
}

/// The sealed envelope at `loc`: one ranged read of its pack.
fn read_sealed(repo: &Repository, loc: &BlobLocation) -> Result<Vec<u8>> {
    let start = u64::from(loc.offset);
    repo.backend().read(
        &layout::pack_path(&loc.pack),
        Some(start..start + u64::from(loc.stored_len)),
    )
}

/// Authenticates and decompresses the group at `loc`, and takes chunk `id`
/// from it, checked against its id.
fn open_sealed(
    repo: &Repository,
    id: &ChunkId,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    repo.sealer()
        .open_chunk(loc.kind, id, sealed, loc.raw_offset, loc.raw_len)
}

/// `range` widened to multiples of [`READ_WINDOW`], clamped to a pack of
/// `size` bytes; a range that already reaches past `size` is left as it is
/// (the read then fails as it would have).
pub(crate) fn aligned(range: &Range<u64>, size: u64) -> Range<u64> {
    if range.end > size {
        return range.clone();
    }
    let start = range.start - range.start % READ_WINDOW;
    let end = range.end.div_ceil(READ_WINDOW).saturating_mul(READ_WINDOW);
    start..end.min(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_stay_inside_the_pack() {
        let w = READ_WINDOW;
        assert_eq!(aligned(&(10..20), 10 * w), 0..w);
        assert_eq!(aligned(&(w + 5..2 * w + 1), 10 * w), w..3 * w);
        assert_eq!(aligned(&(w..2 * w), 10 * w), w..2 * w);
        assert_eq!(
            aligned(&(3 * w + 7..3 * w + 9), 3 * w + 100),
            3 * w..3 * w + 100
        );
        assert_eq!(aligned(&(5..50), 40), 5..50, "past the end: unchanged");
    }
}
