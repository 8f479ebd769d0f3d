//! Operations layer: one file per operation, Options -> fn -> Report.
//! Reports derive `serde::Serialize`: the CLI's `--json` output is theirs,
//! ids as hex and snapshot paths as [`RawPath`] (a string when UTF-8).
//! A listing of entries (`find`, `diff`, and the CLI's `ls`) gives each
//! name as `ls --json` does instead ([`serialize_entry_path`]): `path`
//! always a string, and `path_hex` where the bytes are not UTF-8.

use crate::format::snapshot::RawPath;

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod find;
pub mod forget;
pub mod history;
pub mod ls;
pub mod mount;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod session;
pub mod tar;

use std::path::{Component, Path};

/// The components of a path in a snapshot as a user gives it: `db/site.sql`
/// and `/db/site.sql` are the same path; `.` and `..` name nothing.
pub fn snapshot_path(path: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect()
}

/// Writes an entry's path as the fields `path`, text (lossy where the
/// bytes are not UTF-8: for reading), and `path_hex`, the exact bytes in
/// hex, present only where they are not UTF-8: two names never serialize
/// the same, and a program can always recover the bytes.
pub(crate) fn serialize_entry_path<S: serde::ser::SerializeStruct>(
    out: &mut S,
    path: &[u8],
) -> Result<(), S::Error> {
    out.serialize_field("path", &String::from_utf8_lossy(path))?;
    if std::str::from_utf8(path).is_ok() {
        out.skip_field("path_hex")
    } else {
        out.serialize_field("path_hex", &hex::encode(path))
    }
}

/// Serializes paths of a snapshot as reports show paths: each a string
/// when it is UTF-8, else `{"hex": ...}` ([`RawPath`]).
pub(crate) fn serialize_paths<S: serde::Serializer>(
    paths: &[Vec<u8>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| RawPath::from_bytes(p)))
}

/// Runs `f` on a rayon pool of at least `threads` threads: more than the
/// cores when what the threads wait for is a remote repository's latency
/// (`Backend::concurrency`). Runs it on the current pool when that is
/// large enough.
///
/// # Errors
/// [`crate::ErrorKind::Io`] if the threads cannot be started; else `f`'s.
pub(crate) fn with_io_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> crate::Result<T> {
    if threads <= rayon::current_num_threads() {
        return f();
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::new(crate::ErrorKind::Io, format!("starting I/O threads: {e}")))?
        .install(f)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn snapshot_paths_are_absolute_or_relative_alike() {
        let want = vec![b"db".to_vec(), b"site.sql".to_vec()];
        assert_eq!(super::snapshot_path(Path::new("db/site.sql")), want);
        assert_eq!(super::snapshot_path(Path::new("/db/./site.sql")), want);
        assert!(super::snapshot_path(Path::new("/")).is_empty());
    }
}
