//! Index files in the repository: writing and reading them through the
//! repository's typed objects.

use crate::error::Result;
use crate::format::index::IndexFile;
use crate::id::IndexId;
use crate::repository::Repository;

/// Seals and writes a new index file (create-only) and returns its id.
/// The caller records it in its cache once this returns.
///
/// # Errors
/// Backend errors.
pub fn write_index_file(repo: &Repository, file: &IndexFile, level: i32) -> Result<IndexId> {
    let id = IndexId::random();
    write_index_file_as(repo, &id, file, level)?;
    Ok(id)
}

/// Seals and writes index file `file` under an id chosen beforehand (prune
/// names its new files in its record before writing them).
///
/// # Errors
/// Backend errors.
pub fn write_index_file_as(
    repo: &Repository,
    id: &IndexId,
    file: &IndexFile,
    level: i32,
) -> Result<()> {
    repo.save(id, file, level)
}

/// Reads, authenticates and decodes one index file.
///
/// # Errors
/// Backend errors, [`ErrorKind::Corrupt`] for a damaged file.
pub fn read_index_file(repo: &Repository, id: &IndexId) -> Result<IndexFile> {
    repo.load(id)
}
