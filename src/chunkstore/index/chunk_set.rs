//! Chunk store layer: a set of chunk ids too large for memory, in a
//! private redb table on local disk (or in memory, for small uses and
//! tests). Prune marks the live chunks of every snapshot in one, so its
//! memory does not grow with the repository. The table is scratch space:
//! never durable, and its file is removed when the set is dropped. A
//! directory it makes for the table is 0700 (the ids are the repository's).

use std::path::{Path, PathBuf};

use redb::backends::InMemoryBackend;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::error::{Error, ErrorKind, Result};
use crate::id::ChunkId;

/// Creates `dir` and its missing parents 0700; one that exists (the
/// system's temporary directory when there is no cache) is left alone.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

const IDS: TableDefinition<[u8; 32], ()> = TableDefinition::new("chunk_ids");

/// A set of chunk ids in an on-disk table, filled in batches.
pub struct ChunkSet {
    db: Database,
    /// The table's file, removed on drop; `None` in memory.
    path: Option<PathBuf>,
    /// Ids in the set.
    count: u64,
    /// What the set is for, in error messages ("prune's live set").
    purpose: &'static str,
}

impl ChunkSet {
    /// A new, empty set in a fresh file in `dir` (created if needed) with a
    /// page cache of `cache_bytes`, or in memory, with a warning, if the
    /// file cannot be made there.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if not even a table in memory can be created.
    pub fn create_in(dir: &Path, purpose: &'static str, cache_bytes: usize) -> Result<Self> {
        let path = dir.join(format!("chunk-set-{}.redb", ChunkId::random()));
        let made = private_dirs(dir)
            .map_err(|e| Error::io("creating the cache directory", e))
            .and_then(|()| {
                Database::builder()
                    .set_cache_size(cache_bytes)
                    .create(&path)
                    .map_err(|e| db_err(purpose, e))
            });
        let db = match made {
            Ok(db) => db,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                tracing::warn!("{purpose} kept in memory: {e}");
                return Self::in_memory(purpose);
            }
        };
        Ok(Self {
            db,
            path: Some(path),
            count: 0,
            purpose,
        })
    }

    /// A new, empty set held in memory.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the table cannot be created.
    pub fn in_memory(purpose: &'static str) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| db_err(purpose, e))?;
        Ok(Self {
            db,
            path: None,
            count: 0,
            purpose,
        })
    }

    /// Adds `ids` in one transaction; returns those not in the set before,
    /// in the order given (each once).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] from the table (disk full, for one).
    pub fn insert_new(&mut self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let purpose = self.purpose;
        let mut fresh = Vec::new();
        let mut txn = self.db.begin_write().map_err(|e| db_err(purpose, e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| db_err(purpose, e))?;
        {
            let mut table = txn.open_table(IDS).map_err(|e| db_err(purpose, e))?;
            for id in ids {
                if table
                    .insert(id.as_bytes(), ())
                    .map_err(|e| db_err(purpose, e))?
                    .is_none()
                {
                    fresh.push(*id);
                }
            }
        }
        txn.commit().map_err(|e| db_err(purpose, e))?;
        self.count += fresh.len() as u64;
        Ok(fresh)
    }

    /// Whether the set is in a file (which may fail), not in memory.
    pub fn is_on_disk(&self) -> bool {
        self.path.is_some()
    }

    /// How many ids the set holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A reader of the set as it is now (take it once every batch is in).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] from the table.
    pub fn reader(&self) -> Result<ChunkSetReader> {
        let purpose = self.purpose;
        let txn = self.db.begin_read().map_err(|e| db_err(purpose, e))?;
        let table = match txn.open_table(IDS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(db_err(purpose, e)),
        };
        Ok(ChunkSetReader { table, purpose })
    }
}

impl Drop for ChunkSet {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Membership tests against a [`ChunkSet`] as it was when the reader was
/// taken.
pub struct ChunkSetReader {
    table: Option<redb::ReadOnlyTable<[u8; 32], ()>>,
    purpose: &'static str,
}

impl ChunkSetReader {
    /// Whether `id` is in the set.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] from the table.
    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        match &self.table {
            None => Ok(false),
            Some(t) => Ok(t
                .get(id.as_bytes())
                .map_err(|e| db_err(self.purpose, e))?
                .is_some()),
        }
    }
}

fn db_err(purpose: &str, e: impl Into<redb::Error>) -> Error {
    Error::new(ErrorKind::Io, format!("{purpose}: {}", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<ChunkId> {
        (0..n).map(|i| ChunkId([i; 32])).collect()
    }

    fn exercise(mut set: ChunkSet) {
        assert!(set.is_empty());
        assert!(!set.reader().unwrap().contains(&ChunkId([0; 32])).unwrap());
        assert_eq!(set.insert_new(&ids(3)).unwrap(), ids(3));
        let again = set.insert_new(&ids(5)).unwrap();
        assert_eq!(again, ids(5)[3..].to_vec(), "only the new ones");
        assert_eq!(set.len(), 5);
        let reader = set.reader().unwrap();
        assert!(ids(5).iter().all(|id| reader.contains(id).unwrap()));
        assert!(!reader.contains(&ChunkId([9; 32])).unwrap());
    }

    #[test]
    fn a_set_in_memory_holds_what_was_inserted() {
        exercise(ChunkSet::in_memory("test set").unwrap());
    }

    #[test]
    fn a_set_on_disk_holds_what_was_inserted_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let set = ChunkSet::create_in(
            &dir.path().join("sub"),
            "test set",
            super::super::CACHE_BYTES,
        )
        .unwrap();
        let file = set.path.clone().unwrap();
        assert!(file.exists());
        exercise(set);
        assert!(!file.exists(), "dropped with the set");
    }
}
