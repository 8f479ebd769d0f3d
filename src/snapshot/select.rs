//! Snapshot layer: choosing snapshots by name (`latest`, an id prefix), by
//! host, tags and paths, and by point in time.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::repository::snapshots::{list, list_ids, load};

/// Finds a snapshot by `latest` or a unique prefix of its id.
///
/// # Errors
/// [`ErrorKind::NotFound`] for no match, [`ErrorKind::InvalidInput`] for
/// an ambiguous prefix.
pub fn find(repo: &Repository, name: &str) -> Result<(SnapshotId, Snapshot)> {
    if name == "latest" {
        // Not one dated in the future (format-spec/11, "Dates").
        let now = repo.clock().now_ns();
        return list(repo)?
            .into_iter()
            .rev()
            .find(|(_, s)| !super::is_future(s, now))
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the repository has no snapshots"));
    }
    let id = find_id(repo, name)?;
    Ok((id, load(repo, &id)?))
}

/// The id of the snapshot `name` names: `latest` (the newest readable one)
/// or a unique prefix of its id. A prefix is resolved without reading any
/// snapshot, so a damaged one can be named too.
///
/// # Errors
/// As [`find`].
pub fn find_id(repo: &Repository, name: &str) -> Result<SnapshotId> {
    if name == "latest" {
        return find(repo, name).map(|(id, _)| id);
    }
    let prefix = name.to_ascii_lowercase();
    let mut matches: Vec<SnapshotId> = list_ids(repo)?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&prefix))
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

/// Which snapshots a listing or a point-in-time lookup considers. Every
/// condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host: Option<String>,
    /// Tags the snapshot must all have.
    pub tags: Vec<String>,
    /// Paths the snapshot must all have backed up, compared by component
    /// (`/srv/www/`, `srv/www` and `/srv/www` are the same).
    pub paths: Vec<PathBuf>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.hostname == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| {
                let want = path_components(p.as_os_str().as_bytes());
                s.paths
                    .iter()
                    .any(|sp| sp.to_bytes().is_ok_and(|b| path_components(&b) == want))
            })
    }
}

/// The names of a `/`-separated path, without empty and `.` components.
fn path_components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// The newest snapshot taken at or before `time_ns` (start time, ns since
/// the epoch) that `filter` accepts.
///
/// # Errors
/// [`ErrorKind::NotFound`] if there is none.
pub fn newest_at(
    repo: &Repository,
    time_ns: i64,
    filter: &Filter,
) -> Result<(SnapshotId, Snapshot)> {
    newest_in(&list(repo)?, time_ns, filter)
        .cloned()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "no snapshot was taken at or before that time",
            )
        })
}

/// [`newest_at`] among `snapshots` (oldest first, as
/// [`crate::repository::snapshots::list`] gives them), for a caller that
/// keeps the listing (`mount`'s `by-date`).
pub fn newest_in<'a>(
    snapshots: &'a [(SnapshotId, Snapshot)],
    time_ns: i64,
    filter: &Filter,
) -> Option<&'a (SnapshotId, Snapshot)> {
    snapshots
        .iter()
        .rev()
        .find(|(_, s)| s.time <= time_ns && filter.matches(s))
}

/// The snapshots `names` name (`latest` or id prefixes, as [`find`]), or
/// every snapshot if `names` is empty; of those the ones `filter` accepts,
/// each once, oldest first.
///
/// # Errors
/// As [`find`] for each name; a failed listing.
pub fn choose(
    repo: &Repository,
    names: &[String],
    filter: &Filter,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut chosen = if names.is_empty() {
        list(repo)?
    } else {
        names
            .iter()
            .map(|name| find(repo, name))
            .collect::<Result<Vec<_>>>()?
    };
    chosen.retain(|(_, s)| filter.matches(s));
    chosen.sort_by_key(|(id, s)| (s.time, *id));
    chosen.dedup_by_key(|(id, _)| *id);
    Ok(chosen)
}
