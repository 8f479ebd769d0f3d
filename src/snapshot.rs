//! Snapshot layer: saving, listing and finding snapshots. Writing a
//! snapshot is the commit point of a backup (format-spec/07).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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
    for id in list_ids(repo)? {
        match load(repo, &id) {
            Ok(s) => out.push((id, s)),
            // A damaged snapshot must not stop backups or restores of the
            // others (`check` reports it); one deleted since the listing
            // (a concurrent forget) is simply gone.
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                tracing::warn!("snapshot {id} skipped: {e}");
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
    repo.backend()
        .list(layout::SNAPSHOTS_DIR)?
        .iter()
        .map(|info| layout::parse_snapshot_path(&info.path))
        .collect()
}

/// Finds a snapshot by `latest` or a unique prefix of its id.
///
/// # Errors
/// [`ErrorKind::NotFound`] for no match, [`ErrorKind::InvalidInput`] for
/// an ambiguous prefix.
pub fn find(repo: &Repository, name: &str) -> Result<(SnapshotId, Snapshot)> {
    if name == "latest" {
        return list(repo)?
            .pop()
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
    list(repo)?
        .into_iter()
        .rev()
        .find(|(_, s)| s.time <= time_ns && filter.matches(s))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "no snapshot was taken at or before that time",
            )
        })
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (UTC,
/// as `kura snapshots` shows times; a `T` may stand for the space) into
/// nanoseconds since the epoch. A bare date means the end of that day.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else.
pub fn parse_utc(text: &str) -> Result<i64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a time (want YYYY-MM-DD[ HH:MM[:SS]], UTC): {text:?}"),
        )
    };
    let (date, clock) = match text.trim().split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c)),
        None => (text.trim(), None),
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, day] = d.as_slice() else {
        return Err(bad());
    };
    let (y, m, day) = (num(y)?, num(m)?, num(day)?);
    let (hh, mm, ss) = match clock {
        None => (23, 59, 59),
        Some(c) => {
            let parts: Vec<&str> = c.split(':').collect();
            match parts.as_slice() {
                [h, mi] => (num(h)?, num(mi)?, 0),
                [h, mi, sec] => (num(h)?, num(mi)?, num(sec)?),
                _ => return Err(bad()),
            }
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Ok(secs * 1_000_000_000 + if clock.is_none() { 999_999_999 } else { 0 })
}

/// Year, month, day and hour (UTC) of a time in nanoseconds since the epoch.
pub fn civil_utc(ns: i64) -> (i64, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let hour = u32::try_from(secs.rem_euclid(86_400) / 3600).unwrap_or(0);
    // civil_from_days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// Days since 1970-01-01 of a proleptic Gregorian date
/// (`days_from_civil`, H. Hinnant).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn parses_utc_times() {
        assert_eq!(parse_utc("1970-01-01 00:00").unwrap(), 0);
        assert_eq!(
            parse_utc("2026-11-20 03:00").unwrap(),
            1_795_143_600 * 1_000_000_000
        );
        assert_eq!(
            parse_utc("2026-11-20T03:00:05").unwrap(),
            1_795_143_605 * 1_000_000_000
        );
        assert_eq!(
            parse_utc("2000-02-29").unwrap(),
            (951_868_799 * 1_000_000_000) + 999_999_999
        );
        for bad in ["2026-13-01", "yesterday", "2026-11-20 25:00", "2026-11"] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }
}
