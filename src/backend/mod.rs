//! Backend layer: where the repository's objects live. The trait is small on
//! purpose: list, ranged read, create-only atomic write, delete. Retry,
//! caching and fault injection are decorators that wrap a backend
//! ([`RetryBackend`], [`CachingBackend`], [`FaultyBackend`]); a remote
//! repository is used through [`decorate_remote`].
//!
//! Contract (format-spec/07-layout-and-writes.md), checked for every backend
//! by [`conformance::run`]:
//! - `write` is create-only and atomic: the whole object appears under its
//!   final name, or nothing does; an existing name is never overwritten
//!   ([`ErrorKind::AlreadyExists`]).
//! - `list` returns every object under a directory, recursively, with its
//!   size, or fails; it never reports a partial listing as complete.
//! - `read` of a missing object is [`ErrorKind::NotFound`]; a range that
//!   reaches past the end is [`ErrorKind::Corrupt`].
//! - `delete` is idempotent.
//! - `read_at_most` never reads an object whole that is longer than its
//!   limit: the size comes from a stat (or a probe one byte past the
//!   limit) before the read, so a hostile 2 GiB file at an object's name
//!   costs a request, not 2 GiB of memory.

pub mod cache;
pub mod conformance;
pub mod faulty;
pub mod hooked;
pub mod local;
pub mod location;
pub mod memory;
pub mod retry;
pub mod s3;
pub mod serve;
pub mod sftp;

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

pub use cache::CachingBackend;
pub use faulty::FaultyBackend;
pub use hooked::HookedBackend;
pub use local::LocalBackend;
pub use location::{Location, RemoteOptions};
pub use memory::MemoryBackend;
pub use retry::{RetryBackend, RetryPolicy};

/// An object found by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub size: u64,
}

/// Storage for repository objects, addressed by `/`-separated paths.
pub trait Backend: Send + Sync {
    /// Every object whose path starts with `dir/`, recursively.
    ///
    /// # Errors
    /// Any failure to list completely; never a silently short list.
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>>;

    /// The object's bytes, or the `range` of them.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if absent; [`ErrorKind::Corrupt`] if the
    /// range reaches past the end.
    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>>;

    /// The whole object if it is at most `limit` bytes.
    ///
    /// Backends override this with a stat before the read (or a read
    /// that stops at `limit + 1` bytes). The default probes the byte at
    /// offset `limit` with a ranged read: if it exists the object is too
    /// long and is not read; otherwise it is read whole and its length
    /// checked again (it may have grown in between).
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] naming both sizes for an object longer than
    /// `limit` (see [`oversized`]); otherwise as [`Self::read`].
    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        match self.read(path, Some(limit..limit + 1)) {
            Ok(_) => return Err(oversized(path, None, limit)),
            // Past the end (or damage that the whole read reports again).
            Err(e) if e.kind() == ErrorKind::Corrupt => {}
            Err(e) => return Err(e),
        }
        within_limit(path, self.read(path, None)?, limit)
    }

    /// Creates `path` with everything `data` yields, atomically.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if the name is taken (the old object is
    /// untouched); the reader's error if it fails, with nothing visible.
    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()>;

    /// [`Self::write`] from a byte slice. Backends and decorators that
    /// would otherwise copy the bytes into a buffer of their own (to send
    /// them in pieces, or again on a retry) take them from here, so a pack
    /// on its way out is held once.
    ///
    /// # Errors
    /// As [`Self::write`].
    fn write_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        let mut reader = data;
        self.write(path, &mut reader)
    }

    /// Removes `path`; succeeds if it is already gone.
    ///
    /// # Errors
    /// Any failure other than absence.
    fn delete(&self, path: &str) -> Result<()>;

    /// A short human description (for messages), e.g. the root path.
    fn describe(&self) -> String;

    /// How many requests are worth having in flight at once (pack uploads,
    /// ranged reads during restore and check). Local disks gain little
    /// beyond the core count; remote stores hide latency with more.
    /// Decorators pass their inner backend's value through.
    fn concurrency(&self) -> usize {
        2
    }

    /// Whether two writers racing to create the same name are serialized
    /// by the storage (exactly one wins). True for local disks and stores
    /// that honour `If-None-Match: *`; false for object stores that ignore
    /// it, where create-only is a check before the write and racing
    /// writers of one name may both succeed (format-spec/07: only
    /// `config`, at `init`, is a name two writers could choose).
    ///
    /// # Errors
    /// Whatever finding out costs (a probe write on object stores).
    fn exclusive_create(&self) -> Result<bool> {
        Ok(true)
    }

    /// Removes what writers killed mid-write left behind (a local
    /// backend's temporary files) if older than `older_than`; returns how
    /// many. Never touches an object. The default has nothing to remove
    /// (object stores expire unfinished uploads by their own rules).
    ///
    /// # Errors
    /// I/O errors while looking or removing.
    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }
}

/// The stack of decorators a remote repository is used through: a
/// [`CachingBackend`] of its metadata objects under `cache_root` (none
/// without a cache root) over a [`RetryBackend`] with the default
/// [`RetryPolicy`] over `inner`. `location` names the repository as the user
/// gave it (it keys the cache directory). Local repositories are used
/// undecorated: their reads cost no more than the cache's.
pub fn decorate_remote(
    inner: Arc<dyn Backend>,
    cache_root: Option<&Path>,
    location: &str,
) -> Arc<dyn Backend> {
    decorate_remote_with(inner, cache_root, location, usize::MAX)
}

/// [`decorate_remote`], suggesting at most `max_concurrency` requests at
/// once (`--memory small`: each holds up to a pack).
pub fn decorate_remote_with(
    inner: Arc<dyn Backend>,
    cache_root: Option<&Path>,
    location: &str,
    max_concurrency: usize,
) -> Arc<dyn Backend> {
    let retrying: Arc<dyn Backend> = Arc::new(
        RetryBackend::new(inner, RetryPolicy::default()).with_max_concurrency(max_concurrency),
    );
    match cache_root {
        Some(root) => Arc::new(CachingBackend::new(retrying, root, location)),
        None => retrying,
    }
}

/// Writes a byte slice; the common case of [`Backend::write`].
///
/// # Errors
/// As [`Backend::write`].
pub fn write_bytes(backend: &dyn Backend, path: &str, data: &[u8]) -> Result<()> {
    backend.write_bytes(path, data)
}

/// Everything `data` yields, for backends that send a write's bytes from
/// memory (a failing source then writes nothing at all).
///
/// # Errors
/// The reader's error, as [`ErrorKind::Io`] (or its own kind).
pub(crate) fn read_source(path: &str, data: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("{path}: reading the data to write"), e))?;
    Ok(bytes)
}

/// The error for an object longer than its kind may be: damage to that
/// object ([`ErrorKind::Corrupt`]), naming its size when known and the
/// limit. Readers skip it as they skip any damaged object.
pub fn oversized(path: &str, size: Option<u64>, limit: u64) -> Error {
    let size = size.map_or_else(|| "longer than".to_owned(), |s| format!("{s} bytes, over"));
    Error::corrupt(format!(
        "{path} is {size} the limit of {limit} bytes for its kind; not read"
    ))
}

/// `bytes` if they are at most `limit` long, else [`oversized`].
///
/// # Errors
/// [`ErrorKind::Corrupt`] as [`oversized`].
pub(crate) fn within_limit(path: &str, bytes: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    if bytes.len() as u64 > limit {
        return Err(oversized(path, Some(bytes.len() as u64), limit));
    }
    Ok(bytes)
}

/// Checks that `data` holds exactly the requested range.
pub(crate) fn check_range(path: &str, range: &Range<u64>, object_len: u64) -> Result<()> {
    if range.start > range.end || range.end > object_len {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "{path}: range {}..{} reaches past the end ({object_len} bytes)",
                range.start, range.end
            ),
        ));
    }
    Ok(())
}

/// Rejects paths that could escape a backend's root.
pub(crate) fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".." || part.starts_with('.'));
    if bad {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("invalid object path {path:?}"),
        ));
    }
    Ok(())
}

/// Whether `name` has the form of an object name (64 hex digits). kura's
/// own folders are words and two-digit fan-out folders, so a directory
/// named like this stands where an object should be: backends list it as
/// a non-file at that name, which readers report as damage to the object.
pub(crate) fn is_object_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}
