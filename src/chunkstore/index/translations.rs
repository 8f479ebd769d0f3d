//! Chunk ids of another repository translated into this one's, as `copy`
//! learnt them.

use crate::error::Result;
use crate::id::ChunkId;
use crate::id::RepoId;
use redb::ReadableDatabase;

use super::{ChunkIndex, TRANSLATIONS, db_err};

impl ChunkIndex {
    /// This repository's ids for chunks that repository `from` names
    /// `ids`, where a copy recorded them. An answer only says what the
    /// plaintext's id is here; whether the chunk is stored is the index's
    /// to say.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn translations(&self, from: &RepoId, ids: &[ChunkId]) -> Result<Vec<Option<ChunkId>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TRANSLATIONS).map_err(db_err)?;
        ids.iter()
            .map(|id| {
                let key = translation_key(from, id);
                Ok(table.get(&key).map_err(db_err)?.map(|v| ChunkId(v.value())))
            })
            .collect()
    }

    /// Records that the chunks repository `from` names by the first id of
    /// each pair are named by the second here. Durable with the next
    /// [`Self::persist`].
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn record_translations(&self, from: &RepoId, pairs: &[(ChunkId, ChunkId)]) -> Result<()> {
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
}

fn translation_key(from: &RepoId, id: &ChunkId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(from.as_bytes());
    key[32..].copy_from_slice(id.as_bytes());
    key
}
