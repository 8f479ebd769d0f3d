//! The tree blob cache: sealed tree blobs by chunk id, bounded in bytes,
//! so that a snapshot walked again reads no tree from the repository.

use crate::error::Result;
use crate::id::ChunkId;
use redb::ReadableDatabase;
use redb::ReadableTable;

use super::{ChunkIndex, TREE_BYTES_KEY, TREES, TREES_SIZE, db_err};

impl ChunkIndex {
    /// Bounds the tree blob cache to about `bytes` of envelopes (when it
    /// grows past, arbitrary entries are dropped down to three quarters);
    /// 0 turns it off. The default is [`DEFAULT_TREE_CACHE_LIMIT`].
    #[must_use]
    pub fn with_tree_cache_limit(mut self, bytes: u64) -> Self {
        self.tree_limit = bytes;
        self
    }

    /// The sealed envelope of tree blob `id`, if cached. The caller
    /// authenticates it (it is local data, not a repository object) and
    /// calls [`Self::forget_tree`] if that fails.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn cached_tree(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        if self.tree_limit == 0 {
            return Ok(None);
        }
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(TREES).map_err(db_err)?;
        Ok(table
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Caches sealed tree blobs (envelopes that authenticated, or that were
    /// just sealed), in one transaction.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn cache_trees(&self, blobs: &[(ChunkId, Vec<u8>)]) -> Result<()> {
        if self.tree_limit == 0 || blobs.is_empty() {
            return Ok(());
        }
        self.update_trees(|trees, mut size| {
            for (id, sealed) in blobs {
                let old = trees
                    .insert(id.as_bytes(), sealed.as_slice())
                    .map_err(db_err)?
                    .map_or(0, |v| v.value().len() as u64);
                size = size.saturating_sub(old) + sealed.len() as u64;
            }
            if size > self.tree_limit {
                // Ids are keyed hashes: dropping the first ones drops
                // arbitrary blobs.
                let target = self.tree_limit / 4 * 3;
                while size > target {
                    let Some((_, v)) = trees.pop_first().map_err(db_err)? else {
                        return Ok(0);
                    };
                    size = size.saturating_sub(v.value().len() as u64);
                }
            }
            Ok(size)
        })
    }

    /// Drops tree blob `id` from the cache (its copy failed to
    /// authenticate).
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn forget_tree(&self, id: &ChunkId) -> Result<()> {
        self.update_trees(|trees, size| {
            let old = trees
                .remove(id.as_bytes())
                .map_err(db_err)?
                .map_or(0, |v| v.value().len() as u64);
            Ok(size.saturating_sub(old))
        })
    }

    /// Runs `f` on the tree blob table and the bytes it holds, and records
    /// the bytes `f` returns.
    fn update_trees(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, [u8; 32], &'static [u8]>, u64) -> Result<u64>,
    ) -> Result<()> {
        self.write(|txn| {
            let mut trees = txn.open_table(TREES).map_err(db_err)?;
            let mut sizes = txn.open_table(TREES_SIZE).map_err(db_err)?;
            let size = sizes
                .get(TREE_BYTES_KEY)
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            let size = f(&mut trees, size)?;
            sizes.insert(TREE_BYTES_KEY, size).map_err(db_err)?;
            Ok(())
        })
    }
}
