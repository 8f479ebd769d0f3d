//! Snapshot layer (4): what a snapshot holds and how snapshots are chosen.
//! Trees of directories and file contents ([`tree`]), choosing snapshots by
//! name, filter and point in time ([`select`]), retention policies
//! ([`retention`]), UTC times ([`time`]) and durations ([`duration`]), and
//! the files cache a backup without a readable parent relies on
//! ([`files_cache`]).
//! Built on the chunk store and the repository's typed snapshot objects;
//! never touches a backend.

pub mod duration;
pub mod files_cache;
pub mod retention;
pub mod select;
pub mod time;
pub mod tree;
pub mod walk;

pub use select::{Filter, find, find_id, newest_at};

/// How far after the reader's now a snapshot may be dated before it is
/// taken for a forgery or a wrong clock (format-spec/11, "Dates").
pub const FUTURE_SKEW_NS: i64 = 86_400 * 1_000_000_000;

/// Whether `snapshot` is dated more than [`FUTURE_SKEW_NS`] after
/// `now_ns`: such a snapshot is never `latest`, never a parent, never
/// counted by a retention rule, and `check` notes it.
pub fn is_future(snapshot: &crate::format::snapshot::Snapshot, now_ns: i64) -> bool {
    snapshot.time > now_ns.saturating_add(FUTURE_SKEW_NS)
}
pub use time::{civil_utc, days_from_civil, parse_instant, parse_utc};
