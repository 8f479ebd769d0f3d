//! Chunk store layer: the current index files (format-spec/06). List
//! `index/`, read and authenticate each file, drop those a read file
//! supersedes; a file listed and then gone before it is read was merged by
//! a concurrent prune, so `index/` is listed again. Every reader of "the
//! current index files" (the cache's sync, check, prune) goes through
//! [`read_current_index_files`] and applies its own policy to damage.

use std::collections::HashSet;

use crate::error::{Error, ErrorKind, Result};
use crate::format::index::IndexFile;
use crate::id::IndexId;
use crate::repository::Repository;

use super::read_index_file;

/// The index files of one listing of `index/`, sorted out.
#[derive(Debug, Default)]
pub struct CurrentIndexFiles {
    /// Every id the listing found, in its order.
    pub listed: Vec<IndexId>,
    /// Files read and authenticated that no read file supersedes, in
    /// listing order.
    pub current: Vec<(IndexId, IndexFile)>,
    /// Every id some read file supersedes, listed or not.
    pub superseded: HashSet<IndexId>,
    /// Listed files that do not authenticate ([`ErrorKind::Corrupt`]), and,
    /// in the last round only, files that were gone when read
    /// ([`ErrorKind::NotFound`]), with their errors, in listing order.
    /// Superseded ones included.
    pub damaged: Vec<(IndexId, Error)>,
}

impl CurrentIndexFiles {
    /// Listed files some read file supersedes: a crash's leftovers, or
    /// files a concurrent prune is about to delete.
    pub fn leftovers(&self) -> Vec<IndexId> {
        let superseded = &self.superseded;
        self.listed
            .iter()
            .filter(|id| superseded.contains(id))
            .copied()
            .collect()
    }
}

/// Lists `index/` and reads every listed file except those `known` names
/// (the caller has them already; it is asked after each listing). A file
/// listed and gone when read makes it list again, up to `rounds` listings
/// in all; in the last one such a file counts as damaged.
///
/// # Errors
/// A failed listing (never read as "no index files"), backend errors other
/// than a missing or damaged file, and `known`'s errors.
pub fn read_current_index_files(
    repo: &Repository,
    rounds: usize,
    mut known: impl FnMut(&[IndexId]) -> Result<HashSet<IndexId>>,
) -> Result<CurrentIndexFiles> {
    let mut round = 1;
    loop {
        let last = round >= rounds;
        match read_listing(repo, last, &mut known) {
            Err(e) if e.kind() == ErrorKind::NotFound && !last => {
                tracing::debug!("an index file went away while reading, listing again: {e}");
                round += 1;
            }
            result => return result,
        }
    }
}

/// One listing's worth of [`read_current_index_files`]; unless `last`, a
/// file that is gone stops it with [`ErrorKind::NotFound`].
fn read_listing(
    repo: &Repository,
    last: bool,
    known: &mut impl FnMut(&[IndexId]) -> Result<HashSet<IndexId>>,
) -> Result<CurrentIndexFiles> {
    let listed = repo.list::<IndexFile>()?;
    let skip = known(&listed)?;
    let mut files = Vec::new();
    let mut damaged = Vec::new();
    for id in listed.iter().filter(|id| !skip.contains(id)) {
        match read_index_file(repo, id) {
            Ok(file) => files.push((*id, file)),
            Err(e) if e.kind() == ErrorKind::NotFound && !last => return Err(e),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                damaged.push((*id, e));
            }
            Err(e) => return Err(e),
        }
    }
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    files.retain(|(id, _)| !superseded.contains(id));
    Ok(CurrentIndexFiles {
        listed,
        current: files,
        superseded,
        damaged,
    })
}
