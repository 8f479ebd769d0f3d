//! Chunk store layer: where a blob can be read. One rule for every reader
//! (restore, ls/find/diff/tar, `check`, `repair snapshots`, prune's
//! marking): a blob is looked up in the index; if no current index file
//! names it, in the headers of the *unindexed* packs, those listed in
//! `data/` that no current index file names (packs a prune record condemns
//! but has not yet deleted, and orphans: an interrupted backup's packs, or
//! packs whose index file was lost or damaged). So a condemned pack a new
//! snapshot still needs (prune's condemn race, format-spec/12) and a lost
//! index file never make intact data unreadable.
//!
//! Bounds: the fallback runs only on a miss; the unindexed packs are listed
//! once and each header is read once per [`Locator`] (then held in
//! memory); a header that is missing or does not authenticate is damage,
//! warned about once and skipped.
//!
//! The fallback is for readers only: a writer never deduplicates against a
//! blob found this way (a condemned pack may be deleted once its record is
//! ripe; format-spec/12, "Backups", rule 1). The chunk store's write side
//! asks the index alone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::index::{BlobLocation, ChunkIndex};
use super::lock;
use crate::error::{ErrorKind, Result, warn_skipped_damage};
use crate::id::{ChunkId, PackId};
use crate::repository::Repository;

/// Blobs by id in the unindexed packs' headers.
type Fallback = HashMap<ChunkId, BlobLocation>;

/// Finds blobs: the index first, then the unindexed packs' headers.
pub struct Locator<'r> {
    repo: &'r Repository,
    index: &'r ChunkIndex,
    /// The unindexed packs with their sizes, if the caller knows them
    /// (prune's survey); else listed when first needed.
    unindexed: Option<Vec<(PackId, u64)>>,
    fallback: Mutex<Option<Fallback>>,
    /// Packs a blob was found in through the fallback.
    used: Mutex<HashSet<PackId>>,
}

impl<'r> Locator<'r> {
    /// A locator over `index`, listing the unindexed packs of `repo` (those
    /// [`ChunkIndex::knows_pack`] does not know) at the first miss.
    pub fn new(repo: &'r Repository, index: &'r ChunkIndex) -> Self {
        Self {
            repo,
            index,
            unindexed: None,
            fallback: Mutex::new(None),
            used: Mutex::new(HashSet::new()),
        }
    }

    /// A locator whose fallback reads exactly `unindexed` (packs with their
    /// listed sizes), for a caller that listed them already.
    pub fn with_unindexed(
        repo: &'r Repository,
        index: &'r ChunkIndex,
        unindexed: Vec<(PackId, u64)>,
    ) -> Self {
        Self {
            unindexed: Some(unindexed),
            ..Self::new(repo, index)
        }
    }

    /// The index this locator asks first.
    pub fn index(&self) -> &'r ChunkIndex {
        self.index
    }

    /// Where blob `id` is: the index's location, else one from an
    /// unindexed pack's header; `None` if neither has it.
    ///
    /// # Errors
    /// Cache I/O errors, and a failed listing or a backend error other than
    /// NotFound/Corrupt while reading the headers.
    pub fn locate(&self, id: &ChunkId) -> Result<Option<BlobLocation>> {
        if let Some(loc) = self.index.lookup(id)? {
            return Ok(Some(loc));
        }
        self.unindexed_location(id)
    }

    /// Where blob `id` is in an unindexed pack (the index is not asked);
    /// records the pack as used.
    ///
    /// # Errors
    /// As [`Self::locate`].
    pub fn unindexed_location(&self, id: &ChunkId) -> Result<Option<BlobLocation>> {
        let loc = {
            // Held while the headers are read, so that they are read once
            // even when many threads miss at the same time.
            let mut fallback = lock(&self.fallback);
            if fallback.is_none() {
                *fallback = Some(self.read_unindexed_headers()?);
            }
            fallback.as_ref().and_then(|f| f.get(id)).copied()
        };
        if let Some(l) = loc {
            lock(&self.used).insert(l.pack);
        }
        Ok(loc)
    }

    /// Unindexed packs some blob was found in so far.
    pub fn used_unindexed(&self) -> HashSet<PackId> {
        lock(&self.used).clone()
    }

    /// The unindexed packs: as given, or those listed that the index does
    /// not know.
    fn unindexed_packs(&self) -> Result<Vec<(PackId, u64)>> {
        if let Some(given) = &self.unindexed {
            return Ok(given.clone());
        }
        let mut packs = Vec::new();
        for (id, size) in self.repo.list_packs()? {
            if !self.index.knows_pack(&id)? {
                packs.push((id, size));
            }
        }
        packs.sort_unstable();
        Ok(packs)
    }

    /// Where each blob of the unindexed packs is. A pack already deleted,
    /// or one whose header does not authenticate, cannot serve: damage,
    /// warned about once.
    fn read_unindexed_headers(&self) -> Result<Fallback> {
        let mut map = HashMap::new();
        for (pack, size) in self.unindexed_packs()? {
            let header = match self.repo.read_pack_header(&pack, size) {
                Ok(h) => h,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    warn_skipped_damage(&format!("pack {pack}"), &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in &header.entries {
                map.entry(e.id)
                    .or_insert_with(|| BlobLocation::from_entry(pack, header.kind, e));
            }
        }
        if !map.is_empty() {
            tracing::debug!("{} blobs found in unindexed packs' headers", map.len());
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::{ChunkStore, ChunkStoreOptions};
    use crate::format::layout;
    use crate::format::pack::PackKind;
    use crate::repository::in_memory_for_tests;

    #[test]
    fn a_miss_falls_back_to_unindexed_headers_read_once() {
        let repo = in_memory_for_tests();
        let written = ChunkIndex::open(None).unwrap();
        let store = ChunkStore::new(&repo, &written, ChunkStoreOptions::default());
        let a = store.put_blob(PackKind::Data, b"first blob").unwrap();
        let b = store.put_blob(PackKind::Data, b"second blob").unwrap();
        store.flush().unwrap();
        drop(store);
        // An index that never loaded the index file: the pack is unindexed.
        let empty = ChunkIndex::open(None).unwrap();
        let locator = Locator::new(&repo, &empty);
        let at = locator.locate(&a).unwrap().expect("found in the header");
        assert_eq!(locator.used_unindexed(), HashSet::from([at.pack]));
        // The headers are held in memory: no pack is read again. (Blobs
        // are spread at random over two open packs: b may be in another.)
        for pack in repo.list_packs().unwrap().keys() {
            repo.backend().delete(&layout::pack_path(pack)).unwrap();
        }
        assert!(locator.locate(&b).unwrap().is_some());
        assert_eq!(locator.locate(&ChunkId([7; 32])).unwrap(), None);
        // The index comes first: a blob it knows does not use the fallback.
        let indexed = Locator::with_unindexed(&repo, &written, Vec::new());
        assert!(indexed.locate(&a).unwrap().is_some());
        assert!(indexed.used_unindexed().is_empty());
    }
}
