//! Index files in the repository: writing and reading them through the
//! repository's typed objects.
//!
//! Owns the rule for supersedes lists (format-spec/06, "Author block"): an
//! admin reader honours one only in a file whose author block verifies as
//! the admin's; in any other file a non-empty list is reported and read as
//! empty (its entries still count). A put-only reader cannot verify and
//! honours the list as written: the worst a forged one does to it is hide
//! entries, which costs uploads, never data. Only an admin writes lists
//! (the repository layer refuses a put-only handle).

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
    let mut file: IndexFile = repo.load(id)?;
    let author = repo.authorship(crate::format::envelope::ObjectType::Index, id.as_bytes());
    let Some(author) = author.filter(|a| !a.is_verified_admin()) else {
        return Ok(file);
    };
    if repo.is_admin() && !file.supersedes.is_empty() {
        crate::error::warn_skipped_damage(
            &format!("supersedes list of index file {id}"),
            &crate::Error::corrupt(format!(
                "written by {}, and only the admin's supersedes lists count; its {} \
                 entries are ignored, the file's index entries are kept",
                author.writer,
                file.supersedes.len()
            )),
        );
        file.supersedes.clear();
    }
    Ok(file)
}
