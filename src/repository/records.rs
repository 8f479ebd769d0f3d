//! Repository layer: typed I/O of prune records (format-spec/12-prune.md):
//! reading them all, reading one, writing one. Which packs they condemn,
//! and what a writer does about it, is the chunk store's commit protocol
//! (`chunkstore::commit`).

use crate::error::Result;
use crate::format::prune::PruneRecord;
use crate::id::RecordId;
use crate::repository::Repository;

/// Every record in the repository, oldest first.
///
/// # Errors
/// A failed listing, or a record that does not authenticate: a record that
/// cannot be read could condemn anything, so nothing may rely on its
/// absence; its error names the record and `kura repair index`, which
/// deletes it. A record listed but gone when read is skipped (it was swept).
pub fn load_all(repo: &Repository) -> Result<Vec<(RecordId, PruneRecord)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match load(repo, &id) {
            Ok(record) => out.push((id, record)),
            // Listed, then swept by a prune running now: that prune
            // deleted the record's packs before the record (format-spec
            // 12, step 8), so it condemns nothing that still exists.
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                tracing::debug!("prune record {id} was swept while being read");
            }
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                return Err(e.context(format!(
                    "prune record {id} is damaged, and a record that cannot be read could \
                     condemn any pack, so nothing is written or deleted until it is gone; \
                     run `kura repair index` (it indexes every pack again and deletes the \
                     record)"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(id, r)| (r.created, *id));
    Ok(out)
}

/// Reads and authenticates one record.
///
/// # Errors
/// Backend errors; [`crate::ErrorKind::Corrupt`] for a damaged record.
pub fn load(repo: &Repository, id: &RecordId) -> Result<PruneRecord> {
    repo.load(id)
}

/// Seals and writes `record` under `id` (create-only).
///
/// # Errors
/// Backend errors.
pub fn save(repo: &Repository, id: &RecordId, record: &PruneRecord) -> Result<()> {
    repo.save(id, record, 3)
}
