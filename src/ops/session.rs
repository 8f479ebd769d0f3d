//! Operations layer: what an operation opens on this machine before it
//! runs. Owns the local cache policy (format-spec/06, "Local cache"):
//! everything kura keeps of a repository lives under
//! `<cache root>/<repository id>/`, a caller without a cache root keeps the
//! index in memory for the run, and a cache that cannot be opened is
//! replaced by one in memory rather than failing the operation. Which
//! cache root to use (environment, flags) is the caller's to decide.

use std::path::{Path, PathBuf};

use crate::chunkstore::index::{CACHE_BYTES, ChunkIndex, cache_file};
use crate::error::Result;
use crate::id::RepoId;
use crate::repository::Repository;

/// How to open a repository's index for an operation.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// The cache root; `None` keeps the index in memory for this run only
    /// (every index file is read again by the next run).
    pub cache_root: Option<PathBuf>,
    /// Bring the cache in line with the repository's index files before
    /// returning it (what every operation that reads or writes data needs).
    pub sync: bool,
    /// The cache file's page cache in bytes; `None` for
    /// [`crate::chunkstore::index::CACHE_BYTES`].
    pub cache_bytes: Option<usize>,
}

/// The index of `repo` as `options` ask: its cache file under the cache
/// root (created, with a directory only its owner may read, if missing),
/// or one in memory, synced if asked.
///
/// # Errors
/// As [`ChunkIndex::sync`] when syncing: a failed listing, backend errors
/// reading an index file, cache I/O errors. A cache file that cannot be
/// opened is not an error (a warning is logged and memory used).
pub fn open_index(repo: &Repository, options: &IndexOptions) -> Result<ChunkIndex> {
    let file = options
        .cache_root
        .as_deref()
        .map(|root| cache_file(root, repo.id()));
    let index =
        ChunkIndex::open_with_cache(file.as_deref(), options.cache_bytes.unwrap_or(CACHE_BYTES))?;
    if options.sync {
        index.sync(repo)?;
    }
    Ok(index)
}

/// Where an operation may put large temporary files for repository
/// `repo`: `<cache root>/<repository id>`, or the system's temporary
/// directory without a cache root.
pub fn scratch_dir(cache_root: Option<&Path>, repo: &RepoId) -> PathBuf {
    cache_root.map_or_else(std::env::temp_dir, |root| root.join(repo.to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::in_memory_for_tests as repo;

    #[test]
    fn the_index_lives_under_the_cache_root_or_in_memory() {
        let repo = repo();
        let dir = tempfile::tempdir().unwrap();
        let options = IndexOptions {
            cache_root: Some(dir.path().to_path_buf()),
            sync: true,
            cache_bytes: None,
        };
        let index = open_index(&repo, &options).unwrap();
        assert!(index.is_empty().unwrap());
        let file = cache_file(dir.path(), repo.id());
        assert!(file.is_file(), "{} was created", file.display());
        assert_eq!(
            scratch_dir(Some(dir.path()), repo.id()),
            file.parent().unwrap()
        );

        let in_memory = open_index(&repo, &IndexOptions::default()).unwrap();
        assert!(in_memory.is_empty().unwrap());
        assert_eq!(scratch_dir(None, repo.id()), std::env::temp_dir());
    }
}
