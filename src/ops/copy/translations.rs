//! Operations layer, `copy`'s own local store: chunk ids of another
//! repository translated into the target's, as copies learnt them, so that
//! a later copy need not read a chunk the target already holds; and which
//! snapshots were copied, for a target the copy cannot read (a put-only
//! key). Kept in a
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

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::chunkstore::index::create_private_dir;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ChunkId, RepoId, SnapshotId};

/// (source repository id, source chunk id) -> target chunk id.
const TRANSLATIONS: TableDefinition<[u8; 64], [u8; 32]> = TableDefinition::new("copy_translations");
/// (original repository id, original snapshot id) -> the target's copy:
/// what a copy into a target it cannot read (a put-only key) knows is
/// there already.
const COPIES: TableDefinition<[u8; 64], [u8; 32]> = TableDefinition::new("copies");

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
    /// Opens (creating if needed) the store at `path`, with a page cache
    /// of `cache_bytes`, or one in memory for `None`. A file held by another process, or one that does not
    /// open, is replaced by a store in memory rather than failing.
    ///
    /// # Errors
    /// Only if even an in-memory database cannot be created.
    pub fn open(path: Option<&Path>, cache_bytes: usize) -> Result<Self> {
        let on_disk = path.and_then(|p| {
            create_private_dir(p.parent()?).ok()?;
            Database::builder()
                .set_cache_size(cache_bytes)
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

    /// Every copy recorded: the original backup (repository id, snapshot
    /// id) and its copy in the target.
    ///
    /// # Errors
    /// Local database I/O errors.
    pub fn copies(&self) -> Result<Vec<(RepoId, SnapshotId, SnapshotId)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(COPIES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let k = k.value();
            out.push((
                RepoId::from_slice(&k[..32]),
                SnapshotId::from_slice(&k[32..]),
                SnapshotId(v.value()),
            ));
        }
        Ok(out)
    }

    /// Records, durably, that the backup `(repo, snapshot)` was copied to
    /// the target as `copy`.
    ///
    /// # Errors
    /// Local database I/O errors.
    pub fn record_copy(
        &self,
        repo: &RepoId,
        snapshot: &SnapshotId,
        copy: &SnapshotId,
    ) -> Result<()> {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(repo.as_bytes());
        key[32..].copy_from_slice(snapshot.as_bytes());
        self.write(|txn| {
            let mut table = txn.open_table(COPIES).map_err(db_err)?;
            table.insert(&key, copy.as_bytes()).map_err(db_err)?;
            Ok(())
        })
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        txn.open_table(TRANSLATIONS).map_err(db_err)?;
        txn.open_table(COPIES).map_err(db_err)?;
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
    use crate::chunkstore::index::CACHE_BYTES;

    #[test]
    fn translations_persist_per_source_repository() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (RepoId([1; 32]), RepoId([2; 32]));
        let file = translations_file(dir.path(), &RepoId([9; 32]));
        let (theirs, ours) = (ChunkId([3; 32]), ChunkId([4; 32]));
        {
            let store = Translations::open(Some(&file), CACHE_BYTES).unwrap();
            store.record(&a, &[(theirs, ours)]).unwrap();
        }
        let store = Translations::open(Some(&file), CACHE_BYTES).unwrap();
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

        let (original, copy) = (SnapshotId([6; 32]), SnapshotId([7; 32]));
        store.record_copy(&a, &original, &copy).unwrap();
        drop(store);
        let store = Translations::open(Some(&file), CACHE_BYTES).unwrap();
        assert_eq!(store.copies().unwrap(), vec![(a, original, copy)]);

        let memory = Translations::open(None, CACHE_BYTES).unwrap();
        memory.record(&a, &[(theirs, ours)]).unwrap();
        assert_eq!(memory.get(&a, &[theirs]).unwrap(), vec![Some(ours)]);
    }
}
