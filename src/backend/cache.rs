//! Object cache decorator (backend layer): keeps local copies of a remote
//! repository's small metadata objects (`config`, `keys/*`, `snapshots/*`,
//! `index/*`, `prune/*`), so that `snapshots`, `ls` or a nightly backup do
//! not download them on every run. Design: format-spec/07-layout-and-
//! writes.md, "Retry, caching".
//!
//! The invariant it owns: a read answered from the cache returns what the
//! backend would have returned. Every name in a repository is written once
//! and never rewritten (random ids; `config` is fixed), so a copy stays
//! valid for as long as its name exists, and existence is what this
//! decorator checks: a whole-object read is answered from the cache only if
//! this instance's latest listing of the object's directory (or its own
//! write, or an earlier read) showed the name with the cached copy's size.
//! A listing evicts cached names it does not show; a delete evicts the name.
//! The first read of `config` goes to the backend, and a `config` that
//! differs from the cached one (another repository at the same location)
//! empties the whole cache before anything else is cached.
//!
//! Local damage never becomes a repository error: each cached file starts
//! with a BLAKE3 hash of the object's name and bytes, checked on every hit;
//! a mismatch evicts the file and reads from the backend. Any failure to
//! read or write the cache only leaves that object uncached. Files are
//! written to a temporary name and renamed; directories are private to
//! their owner (the objects are sealed, but their names and sizes are
//! metadata). Ranged reads, packs and every other name pass through.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, ObjectInfo, check_path, oversized, within_limit};
use crate::error::Result;
use crate::format::layout;

/// Bytes of the hash in front of each cached object.
const HASH_LEN: usize = 32;
/// BLAKE3 derive-key context of that hash.
const HASH_CONTEXT: &str = "kura object cache v1";
/// Directories whose objects are cached (besides `config`).
const CACHED_DIRS: [&str; 4] = [
    layout::KEYS_DIR,
    layout::SNAPSHOTS_DIR,
    layout::INDEX_DIR,
    layout::PRUNE_DIR,
];

/// Which names are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `config` and the objects directly in [`CACHED_DIRS`].
    Metadata,
    /// Every valid name: lets the conformance suite exercise the cache.
    #[cfg_attr(not(test), allow(dead_code))]
    Everything,
}

impl Scope {
    fn object(self, path: &str) -> bool {
        if check_path(path).is_err() {
            return false;
        }
        match self {
            Self::Metadata => {
                path == layout::CONFIG
                    || path.split_once('/').is_some_and(|(dir, name)| {
                        CACHED_DIRS.contains(&dir) && !name.contains('/')
                    })
            }
            Self::Everything => true,
        }
    }

    fn dir(self, dir: &str) -> bool {
        check_path(dir).is_ok() && (self == Self::Everything || CACHED_DIRS.contains(&dir))
    }
}

/// Where the object cache of the repository at `location` lives under a
/// cache root: `<root>/<hex BLAKE3(location)>/objects`.
pub fn object_cache_dir(cache_root: &Path, location: &str) -> PathBuf {
    cache_root
        .join(blake3::hash(location.as_bytes()).to_hex().as_str())
        .join("objects")
}

/// What this instance knows of the repository.
#[derive(Default)]
struct Known {
    /// Names known to exist, with their sizes: from the latest listing of
    /// their directory, this instance's writes, or reads.
    sizes: HashMap<String, u64>,
    /// Whether `config` was read from the backend and the cache checked
    /// against it.
    config_checked: bool,
}

/// A backend decorator caching metadata objects on local disk.
pub struct CachingBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    scope: Scope,
    known: Mutex<Known>,
    /// Whether a cache I/O failure was reported already (once is enough).
    warned: AtomicBool,
}

impl CachingBackend {
    /// Caches `inner`'s metadata objects in [`object_cache_dir`]`(cache_root,
    /// location)`; `location` names the repository as the user gave it.
    pub fn new(inner: Arc<dyn Backend>, cache_root: &Path, location: &str) -> Self {
        Self::with_scope(
            inner,
            object_cache_dir(cache_root, location),
            Scope::Metadata,
        )
    }

    fn with_scope(inner: Arc<dyn Backend>, dir: PathBuf, scope: Scope) -> Self {
        Self {
            inner,
            dir,
            scope,
            known: Mutex::new(Known::default()),
            warned: AtomicBool::new(false),
        }
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn file(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    fn cache_failed(&self, what: &str, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "object cache {}: {what}: {e}; going on without it",
                self.dir.display()
            );
        }
    }

    /// The cached bytes of `path`, if a whole copy is there. A damaged copy
    /// is removed.
    fn load(&self, path: &str) -> Option<Vec<u8>> {
        let file = self.file(path);
        let mut raw = match fs::read(&file) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.cache_failed(&format!("reading {path}"), &e);
                return None;
            }
        };
        if raw.len() < HASH_LEN || raw[..HASH_LEN] != object_hash(path, &raw[HASH_LEN..]) {
            tracing::warn!("object cache: the copy of {path} is damaged; reading the original");
            let _ = fs::remove_file(&file);
            return None;
        }
        raw.drain(..HASH_LEN);
        Some(raw)
    }

    /// Puts a copy of `path` in the cache, replacing any.
    fn store(&self, path: &str, bytes: &[u8]) {
        let file = self.file(path);
        if let Err(e) = write_private(&file, &object_hash(path, bytes), bytes) {
            self.cache_failed(&format!("storing {path}"), &e);
        }
    }

    fn evict(&self, path: &str) {
        match fs::remove_file(self.file(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                self.cache_failed(&format!("evicting {path}"), &e);
            }
            _ => {}
        }
    }

    /// Removes every cached copy under `dir` whose name `listed` lacks
    /// (temporary files of other processes included: their rename then
    /// fails, which only leaves that object uncached).
    fn evict_unlisted(&self, dir: &str, listed: &HashSet<&str>) {
        let mut stack = vec![(self.file(dir), dir.to_owned())];
        while let Some((full, rel)) = stack.pop() {
            let entries = match fs::read_dir(&full) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return self.cache_failed(&format!("listing {rel}"), &e),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = format!("{rel}/{name}");
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), child));
                } else if !listed.contains(child.as_str()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Empties the whole cache: it was another repository's.
    fn wipe(&self) {
        let Some(parent) = self.dir.parent() else {
            return;
        };
        let aside = parent.join(format!(
            ".objects-wiped-{}",
            hex::encode(crate::algorithms::crypto::random_array::<8>())
        ));
        match fs::rename(&self.dir, &aside) {
            Ok(()) => {
                tracing::info!(
                    "object cache {}: the repository was replaced; emptied",
                    self.dir.display()
                );
                if let Err(e) = fs::remove_dir_all(&aside) {
                    self.cache_failed("removing the old copies", &e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.cache_failed("emptying the cache", &e),
        }
    }

    /// Makes `bytes` (just read from or written to the backend) the cached
    /// `config`, emptying the cache first if it held another.
    fn adopt_config(&self, bytes: &[u8]) {
        if self.load(layout::CONFIG).as_deref() != Some(bytes) {
            self.wipe();
            self.store(layout::CONFIG, bytes);
        }
        self.known().config_checked = true;
    }

    /// A metadata object from its cached copy if that is whole (its size
    /// the listed one), else from `fetch`, then cached.
    fn read_cached(&self, path: &str, fetch: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
        let size = self.known().sizes.get(path).copied();
        if let Some(size) = size
            && let Some(bytes) = self.load(path)
        {
            if bytes.len() as u64 == size {
                return Ok(bytes);
            }
            self.evict(path);
        }
        let bytes = fetch()?;
        self.store(path, &bytes);
        self.known()
            .sizes
            .insert(path.to_owned(), bytes.len() as u64);
        Ok(bytes)
    }

    fn read_config(&self, fetch: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
        if self.known().config_checked
            && let Some(bytes) = self.load(layout::CONFIG)
        {
            return Ok(bytes);
        }
        let bytes = fetch()?;
        self.adopt_config(&bytes);
        Ok(bytes)
    }
}

/// The hash in front of a cached object: binds the bytes to the name.
fn object_hash(path: &str, bytes: &[u8]) -> [u8; HASH_LEN] {
    let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    hasher.update(&(path.len() as u64).to_le_bytes());
    hasher.update(path.as_bytes());
    hasher.update(bytes);
    *hasher.finalize().as_bytes()
}

/// Writes `head` and `body` to `file` through a temporary name in the same
/// directory, creating directories private to the owner. Not synced: a
/// copy torn by a crash fails its hash and is read again.
fn write_private(file: &Path, head: &[u8], body: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().ok_or(io::ErrorKind::InvalidInput)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = file.file_name().ok_or(io::ErrorKind::InvalidInput)?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        hex::encode(crate::algorithms::crypto::random_array::<8>())
    ));
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(head)?;
            f.write_all(body)
        })
        .and_then(|()| fs::rename(&temp, file));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

impl Backend for CachingBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let listing = self.inner.list(dir)?;
        if self.scope.dir(dir) {
            let prefix = format!("{dir}/");
            {
                let mut known = self.known();
                known.sizes.retain(|path, _| !path.starts_with(&prefix));
                for o in listing.iter().filter(|o| self.scope.object(&o.path)) {
                    known.sizes.insert(o.path.clone(), o.size);
                }
            }
            let listed = listing.iter().map(|o| o.path.as_str()).collect();
            self.evict_unlisted(dir, &listed);
        }
        Ok(listing)
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        if range.is_some() || !self.scope.object(path) {
            return self.inner.read(path, range);
        }
        if path == layout::CONFIG {
            return self.read_config(|| self.inner.read(path, None));
        }
        self.read_cached(path, || self.inner.read(path, None))
    }

    /// The size the last listing gave refuses an oversized object without
    /// a request; a cached copy is within its limit or not used.
    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let fetch = || self.inner.read_at_most(path, limit);
        if !self.scope.object(path) {
            return fetch();
        }
        if path == layout::CONFIG {
            return within_limit(path, self.read_config(fetch)?, limit);
        }
        if let Some(size) = self.known().sizes.get(path).copied()
            && size > limit
        {
            return Err(oversized(path, Some(size), limit));
        }
        within_limit(path, self.read_cached(path, fetch)?, limit)
    }

    fn write_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        if !self.scope.object(path) {
            return self.inner.write_bytes(path, data);
        }
        let mut reader = data;
        self.write(path, &mut reader)
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        if !self.scope.object(path) {
            return self.inner.write(path, data);
        }
        let bytes = super::read_source(path, data)?;
        super::write_bytes(self.inner.as_ref(), path, &bytes)?;
        if path == layout::CONFIG {
            self.adopt_config(&bytes);
        } else {
            self.store(path, &bytes);
            self.known()
                .sizes
                .insert(path.to_owned(), bytes.len() as u64);
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)?;
        if self.scope.object(path) {
            self.known().sizes.remove(path);
            self.evict(path);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn exclusive_create(&self) -> Result<bool> {
        self.inner.exclusive_create()
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemoryBackend, conformance};

    #[test]
    fn conforms_when_every_object_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let backend = CachingBackend::with_scope(
            Arc::new(MemoryBackend::new()),
            objects.clone(),
            Scope::Everything,
        );
        conformance::run_shared(Arc::new(backend));
        let cached = fs::read(objects.join("conformance/once")).unwrap();
        assert_eq!(
            &cached[HASH_LEN..],
            b"first",
            "the suite went through the cache"
        );
    }

    #[test]
    fn only_metadata_names_are_cached() {
        let s = Scope::Metadata;
        for yes in ["config", "keys/ab", "snapshots/ab", "index/ab", "prune/ab"] {
            assert!(s.object(yes), "{yes}");
        }
        for no in [
            "data/ab/cd",
            "locks/x",
            "snapshots/a/b",
            "snapshots/.x",
            "../config",
            "x",
        ] {
            assert!(!s.object(no), "{no}");
        }
        assert!(s.dir("snapshots") && !s.dir("data") && !s.dir("snapshots/.."));
    }
}
