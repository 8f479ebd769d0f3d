//! Operations layer, `copy`'s own local store: chunk ids of another
//! repository translated into the target's, as copies learnt them, so that
//! a later copy need not read a chunk the target already holds. Kept in a
//! redb file beside the target's index cache,
//! `<cache root>/<target repository id>/copy.redb` (a directory only its
//! owner may read: the ids are derived from plaintext), or in memory.
//!
//! Never authoritative, like the index cache: an answer only says what the
//! plaintext's id is in the target; whether that chunk is stored there is
//! the target's index to say. A translation never changes meaning (both
//! ids are functions of the plaintext and a repository's fixed keys), so
//! the store is independent of the index cache and outlives its rebuilds;
//! losing it costs reads from the source, never uploads the target has.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::chunkstore::index::create_private_dir;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ChunkId, RepoId};

/// (source repository id, source chunk id) -> target chunk id.
const TRANSLATIONS: TableDefinition<[u8; 64], [u8; 32]> = TableDefinition::new("copy_translations");

/// Where the translations into repository `target` live under a cache
/// root.
pub fn translations_file(root: &Path, target: &RepoId) -> PathBuf {
    root.join(target.to_hex()).join("copy.redb")
}

/// The translations a copy into one target repository has learnt.
pub struct Translations {
    db: Database,
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    Error::with_source(ErrorKind::Io, "copy translations", e)
}

impl Translations {
    /// Opens (creating if needed) the store at `path`, or one in memory
    /// for `None`. A file held by another process, or one that does not
    /// open, is replaced by a store in memory rather than failing.
    ///
    /// # Errors
    /// Only if even an in-memory database cannot be created.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let on_disk = path.and_then(|p| {
            create_private_dir(p.parent()?).ok()?;
            Database::builder()
                .set_cache_size(crate::chunkstore::index::CACHE_BYTES)
                .create(p)
                .inspect_err(|e| {
                    tracing::warn!(
                        "copy translations {} unusable ({e}); using memory",
                        p.display()
                    );
                })
                .ok()
        });
        let db = match on_disk {
            Some(db) => db,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(db_err)?,
        };
        let store = Self { db };
        store.write(|_| Ok(()))?; // creates the table
        Ok(store)
    }

    /// The target's ids for the chunks repository `from` names `ids`,
    /// where a copy recorded them.
    ///
    /// # Errors
    /// Local database I/O errors.
    pub fn get(&self, from: &RepoId, ids: &[ChunkId]) -> Result<Vec<Option<ChunkId>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TRANSLATIONS).map_err(db_err)?;
        ids.iter()
            .map(|id| {
                let key = translation_key(from, id);
                Ok(table.get(&key).map_err(db_err)?.map(|v| ChunkId(v.value())))
            })
            .collect()
    }

    /// Records, durably, that the chunks repository `from` names by the
    /// first id of each pair are named by the second in the target.
    ///
    /// # Errors
    /// Local database I/O errors.
    pub fn record(&self, from: &RepoId, pairs: &[(ChunkId, ChunkId)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn.open_table(TRANSLATIONS).map_err(db_err)?;
            for (theirs, ours) in pairs {
                table
                    .insert(&translation_key(from, theirs), ours.as_bytes())
                    .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        txn.open_table(TRANSLATIONS).map_err(db_err)?;
        f(&txn)?;
        txn.commit().map_err(db_err)
    }
}

fn translation_key(from: &RepoId, id: &ChunkId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(from.as_bytes());
    key[32..].copy_from_slice(id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn translations_persist_per_source_repository() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (RepoId([1; 32]), RepoId([2; 32]));
        let file = translations_file(dir.path(), &RepoId([9; 32]));
        let (theirs, ours) = (ChunkId([3; 32]), ChunkId([4; 32]));
        {
            let store = Translations::open(Some(&file)).unwrap();
            store.record(&a, &[(theirs, ours)]).unwrap();
        }
        let store = Translations::open(Some(&file)).unwrap();
        let other = ChunkId([5; 32]);
        assert_eq!(
            store.get(&a, &[theirs, other]).unwrap(),
            vec![Some(ours), None]
        );
        assert_eq!(store.get(&b, &[theirs]).unwrap(), vec![None]);
        let mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let memory = Translations::open(None).unwrap();
        memory.record(&a, &[(theirs, ours)]).unwrap();
        assert_eq!(memory.get(&a, &[theirs]).unwrap(), vec![Some(ours)]);
    }
}
