//! Snapshot layer: saving, listing and finding snapshots. Writing a
//! snapshot is the commit point of a backup (format-spec/07).

use crate::error::{Error, ErrorKind, Result};
use crate::format::envelope::ObjectType;
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::store::MAX_SNAPSHOT;

/// Seals and writes a snapshot under a new random id.
///
/// # Errors
/// Backend errors.
pub fn save(repo: &Repository, snapshot: &Snapshot) -> Result<SnapshotId> {
    let id = SnapshotId::random();
    let sealed = repo
        .sealer()
        .seal(ObjectType::Snapshot, id.as_bytes(), &snapshot.encode(), 3);
    crate::backend::write_bytes(
        repo.backend().as_ref(),
        &layout::snapshot_path(&id),
        &sealed,
    )?;
    Ok(id)
}

/// Reads and authenticates one snapshot.
///
/// # Errors
/// Backend errors; [`ErrorKind::Corrupt`] for a damaged snapshot.
pub fn load(repo: &Repository, id: &SnapshotId) -> Result<Snapshot> {
    let stored = repo.backend().read(&layout::snapshot_path(id), None)?;
    let plain = repo
        .sealer()
        .open(ObjectType::Snapshot, id.as_bytes(), &stored, MAX_SNAPSHOT)?;
    Snapshot::decode(&plain).map_err(|e| e.context(format!("snapshot {id}")))
}

/// Every snapshot, oldest first.
///
/// # Errors
/// A failed listing or a damaged snapshot.
pub fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut out = Vec::new();
    for info in repo.backend().list(layout::SNAPSHOTS_DIR)? {
        let id = layout::parse_snapshot_path(&info.path)?;
        out.push((id, load(repo, &id)?));
    }
    out.sort_by_key(|(id, s)| (s.time, *id));
    Ok(out)
}

/// Finds a snapshot by `latest` or a unique prefix of its id.
///
/// # Errors
/// [`ErrorKind::NotFound`] for no match, [`ErrorKind::InvalidInput`] for
/// an ambiguous prefix.
pub fn find(repo: &Repository, name: &str) -> Result<(SnapshotId, Snapshot)> {
    let mut all = list(repo)?;
    if name == "latest" {
        return all
            .pop()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the repository has no snapshots"));
    }
    let prefix = name.to_ascii_lowercase();
    let mut matches: Vec<_> = all
        .into_iter()
        .filter(|(id, _)| id.to_hex().starts_with(&prefix))
        .collect();
    match matches.len() {
        1 => Ok(matches.pop().expect("one match")),
        0 => Err(Error::new(
            ErrorKind::NotFound,
            format!("no snapshot matches {name:?}"),
        )),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} matches several snapshots"),
        )),
    }
}
