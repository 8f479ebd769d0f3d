//! Pack health as `check` learnt it: when each pack was last verified
//! whole, which were found missing or damaged; and which packs backups
//! must therefore not rely on.

use crate::error::Result;
use crate::id::PackId;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use std::collections::HashSet;

use super::{ChunkIndex, DAMAGED, PACKS, VERIFIED, db_err};

impl ChunkIndex {
    /// When pack `id` was last verified whole (Unix seconds), if ever.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn verified_at(&self, id: &PackId) -> Result<Option<u64>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(VERIFIED).map_err(db_err)?;
        Ok(table.get(id.as_bytes()).map_err(db_err)?.map(|v| v.value()))
    }

    /// Records that `packs` were verified whole at `when` (Unix seconds).
    /// The record survives cache rebuilds from index files: it is about
    /// packs, whose names never change meaning.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn mark_verified(&self, packs: &[PackId], when: u64) -> Result<()> {
        self.write_with(Durability::Immediate, |txn| {
            let mut table = txn.open_table(VERIFIED).map_err(db_err)?;
            for p in packs {
                table.insert(p.as_bytes(), when).map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// Records what a check learnt about packs: `damaged` were found
    /// missing or damaged at `when` (Unix seconds); `whole` were read whole
    /// and verified, which clears an earlier mark. Backups and `repair
    /// snapshots` do not rely on marked packs.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn record_pack_health(
        &self,
        damaged: &[PackId],
        whole: &[PackId],
        when: u64,
    ) -> Result<()> {
        if damaged.is_empty() && whole.is_empty() {
            return Ok(()); // no synced commit for nothing
        }
        self.write_with(Durability::Immediate, |txn| {
            let mut table = txn.open_table(DAMAGED).map_err(db_err)?;
            for p in whole {
                table.remove(p.as_bytes()).map_err(db_err)?;
            }
            for p in damaged {
                table.insert(p.as_bytes(), when).map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// The packs a check found missing or damaged and has not found whole
    /// since.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn damaged_packs(&self) -> Result<HashSet<PackId>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(DAMAGED).map_err(db_err)?;
        let mut out = HashSet::new();
        for item in table.iter().map_err(db_err)? {
            out.insert(PackId(item.map_err(db_err)?.0.value()));
        }
        Ok(out)
    }

    /// The packs some loaded index file names that `listed` (a listing of
    /// `data/`) lacks: their blobs are lost unless stored elsewhere too.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn packs_missing_from(&self, listed: &HashSet<PackId>) -> Result<Vec<PackId>> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(PACKS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let id = PackId(item.map_err(db_err)?.0.value());
            if !listed.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The packs whose blobs a writer must not rely on: those
    /// [`Self::damaged_packs`] names and those missing from `listed`.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn distrusted_packs(&self, listed: &HashSet<PackId>) -> Result<HashSet<PackId>> {
        let mut out = self.damaged_packs()?;
        out.extend(self.packs_missing_from(listed)?);
        Ok(out)
    }

    /// Whether some loaded index file names pack `id`.
    ///
    /// # Errors
    /// Cache I/O errors.
    pub fn knows_pack(&self, id: &PackId) -> Result<bool> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(PACKS).map_err(db_err)?;
        Ok(table.get(id.as_bytes()).map_err(db_err)?.is_some())
    }
}
