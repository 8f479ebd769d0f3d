//! The read side of the chunk store: a blob by id with its fallbacks
//! (other copies, open packs, the tree cache), and many chunks at once with
//! neighbours in a pack read together.

use super::{COALESCE_GAP, COALESCE_MAX, ChunkStore, TREE_CACHE_BATCH, lock};
use crate::error::{Error, ErrorKind, Result};
use crate::format::layout;
use crate::format::pack::PackKind;
use crate::id::ChunkId;
use crate::index::BlobLocation;
use crate::repo::Repository;

impl ChunkStore<'_> {
    /// Fetches a chunk or tree blob, authenticated and checked against `id`.
    /// If the copy the cache names first is missing or damaged, the other
    /// copies it knows are tried in turn.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if no index or open pack has it (a blob
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
            self.drain()?; // it may still be on its way into a pack
        }
        let state = lock(&self.shared.state);
        for (packer, kind) in [(&state.data, PackKind::Data), (&state.tree, PackKind::Tree)] {
            if let Some(sealed) = packer.find(id) {
                return self.repo.sealer().open_blob(kind, id, sealed);
            }
        }
        Err(indexed_error.unwrap_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("blob {id} is not in the index"),
            )
        }))
    }

    /// How many reads are worth having in flight (the backend's hint).
    pub fn read_concurrency(&self) -> usize {
        self.repo.backend().concurrency()
    }

    /// Fetches several data chunks, each authenticated and checked against
    /// its id, in order. Chunks stored next to each other in one pack are
    /// read with one ranged read (gaps up to [`COALESCE_GAP`] are read and
    /// skipped), so a restore over a network makes a request per run of
    /// neighbouring chunks instead of one per chunk. Anything the fast path
    /// cannot read is fetched by [`Self::get`], with its fallbacks.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>> {
        let locations = self.index.lookup_many(ids)?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        // By pack and offset: a backup spreads consecutive chunks over a
        // few open packs, so neighbours in a file are neighbours in their
        // pack, not in the list.
        let mut order: Vec<usize> = (0..ids.len())
            .filter(|&k| locations[k].is_some_and(|l| l.kind == PackKind::Data))
            .collect();
        order.sort_by_key(|&k| {
            let l = locations[k].expect("filtered");
            (l.pack, l.offset)
        });
        let mut i = 0;
        while i < order.len() {
            let first = locations[order[i]].expect("filtered");
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.stored_len);
            let mut j = i + 1;
            while j < order.len() {
                let next = locations[order[j]].expect("filtered");
                let next_start = u64::from(next.offset);
                if next.pack != first.pack
                    || next_start < end
                    || next_start - end > COALESCE_GAP
                    || next_start + u64::from(next.stored_len) - start > COALESCE_MAX
                {
                    break;
                }
                end = next_start + u64::from(next.stored_len);
                j += 1;
            }
            if let Ok(bytes) = self
                .repo
                .backend()
                .read(&layout::pack_path(&first.pack), Some(start..end))
            {
                for &k in &order[i..j] {
                    let loc = locations[k].expect("filtered");
                    let at = (u64::from(loc.offset) - start) as usize;
                    let sealed = &bytes[at..at + loc.stored_len as usize];
                    if let Ok(plain) = self.repo.sealer().open_blob(loc.kind, &ids[k], sealed) {
                        if plain.len() == loc.raw_len as usize {
                            out[k] = Some(plain);
                        }
                    }
                }
            }
            i = j;
        }
        ids.iter()
            .zip(out)
            .map(|(id, got)| match got {
                Some(plain) => Ok(plain),
                None => self.get(id),
            })
            .collect()
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
            return read_blob(self.repo, id, loc);
        }
        if let Some(plain) = self.cached_tree(id, loc) {
            return Ok(plain);
        }
        let sealed = read_sealed(self.repo, loc)?;
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
    }
}

/// Reads blob `id` at `loc` from its pack: one ranged read, then
/// authentication, decompression and the id check.
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

/// Authenticates, decompresses and checks the envelope of blob `id`
/// against the length indexed at `loc`.
fn open_sealed(
    repo: &Repository,
    id: &ChunkId,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let plain = repo.sealer().open_blob(loc.kind, id, sealed)?;
    if plain.len() != loc.raw_len as usize {
        return Err(Error::corrupt(format!(
            "blob {id} has a different length than indexed"
        )));
    }
    Ok(plain)
}
