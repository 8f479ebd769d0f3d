//! Snapshot objects in the repository: saving, loading and listing them.
//! Writing a snapshot is the commit point of a backup (format-spec/07).

use crate::error::{ErrorKind, Result, warn_skipped_damage};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repository::Repository;

/// Seals and writes a snapshot under a new random id.
///
/// # Errors
/// Backend errors.
pub fn save(repo: &Repository, snapshot: &Snapshot) -> Result<SnapshotId> {
    let id = SnapshotId::random();
    repo.save(&id, snapshot, 3)?;
    Ok(id)
}

/// Reads and authenticates one snapshot.
///
/// # Errors
/// Backend errors; [`ErrorKind::Corrupt`] for a damaged snapshot.
pub fn load(repo: &Repository, id: &SnapshotId) -> Result<Snapshot> {
    repo.load(id)
}

/// Every snapshot, oldest first.
///
/// # Errors
/// A failed listing or a damaged snapshot.
pub fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut out = Vec::new();
    for id in list_ids(repo)? {
        match load(repo, &id) {
            Ok(s) => out.push((id, s)),
            // A damaged snapshot must not stop backups or restores of the
            // others (`check` reports it); one deleted since the listing
            // (a concurrent forget) is simply gone.
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                warn_skipped_damage(&format!("snapshot {id}"), &e);
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(id, s)| (s.time, *id));
    Ok(out)
}

/// The ids of all snapshot objects, unread.
///
/// # Errors
/// A failed listing, or a name that is not a snapshot id.
pub fn list_ids(repo: &Repository) -> Result<Vec<SnapshotId>> {
    repo.list::<Snapshot>()
}
