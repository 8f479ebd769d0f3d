//! Snapshot layer (4): what a snapshot holds and how snapshots are chosen.
//! Trees of directories and file contents ([`tree`]), choosing snapshots by
//! name, filter and point in time ([`select`]), retention policies
//! ([`retention`]), UTC times ([`time`]) and durations ([`duration`]).
//! Built on the chunk store and the repository's typed snapshot objects;
//! never touches a backend.

pub mod duration;
pub mod retention;
pub mod select;
pub mod time;
pub mod tree;
pub mod walk;

pub use select::{Filter, find, find_id, newest_at};
pub use time::{civil_utc, days_from_civil, parse_instant, parse_utc};
