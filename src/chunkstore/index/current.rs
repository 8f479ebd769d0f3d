//! Chunk store layer: the current index files (format-spec/06). List
//! `index/`, read and authenticate each file, drop those a read file
//! supersedes; a file listed and then gone before it is read was merged by
//! a concurrent prune, so `index/` is listed again. Every reader of "the
//! current index files" (the cache's sync, check, prune) goes through
//! [`visit_current_index_files`] (or [`summarize_current_index_files`]),
//! which holds one whole file at a time, and applies its own policy to
//! damage.

use std::collections::HashSet;

use crate::error::{Error, ErrorKind, Result};
use crate::format::index::IndexFile;
use crate::id::IndexId;
use crate::repository::Repository;

use super::read_index_file;

/// The index files of one listing of `index/`, sorted out (the files
/// themselves went to the reader as they were read).
#[derive(Debug, Default)]
pub struct CurrentIndexFiles {
    /// Every id the listing found, in its order.
    pub listed: Vec<IndexId>,
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

/// What reads the current index files: told each listing, it names the
/// files it has already (not read again), then receives every other file
/// as it is read and authenticated, in listing order, before it is known
/// whether a file read later supersedes it (a visitor that keeps files
/// must drop those in [`CurrentIndexFiles::superseded`] at the end).
pub trait IndexFileVisitor {
    /// Called once per listing (a file gone when read makes it list
    /// again): the listed ids the visitor has, which are not read.
    ///
    /// # Errors
    /// The visitor's own, which end the reading.
    fn listed(&mut self, listed: &[IndexId]) -> Result<HashSet<IndexId>>;

    /// One file read and authenticated.
    ///
    /// # Errors
    /// The visitor's own, which end the reading.
    fn file(&mut self, id: IndexId, file: IndexFile) -> Result<()>;
}

/// The current index files, each reduced by `summary` as it is read (its
/// pack list, or a step's findings about it), so that memory holds one
/// whole file at a time; the summaries of files a later file supersedes
/// are dropped. Summaries are in listing order.
///
/// # Errors
/// As [`visit_current_index_files`], and `summary`'s.
pub fn summarize_current_index_files<T>(
    repo: &Repository,
    rounds: usize,
    summary: impl FnMut(&IndexId, IndexFile) -> Result<T>,
) -> Result<(CurrentIndexFiles, Vec<(IndexId, T)>)> {
    struct Summaries<T, F> {
        summary: F,
        files: Vec<(IndexId, T)>,
    }
    impl<T, F: FnMut(&IndexId, IndexFile) -> Result<T>> IndexFileVisitor for Summaries<T, F> {
        fn listed(&mut self, _: &[IndexId]) -> Result<HashSet<IndexId>> {
            self.files.clear(); // a new listing reads them again
            Ok(HashSet::new())
        }
        fn file(&mut self, id: IndexId, file: IndexFile) -> Result<()> {
            let summary = (self.summary)(&id, file)?;
            self.files.push((id, summary));
            Ok(())
        }
    }
    let mut visitor = Summaries {
        summary,
        files: Vec::new(),
    };
    let files = visit_current_index_files(repo, rounds, &mut visitor)?;
    let mut summaries = visitor.files;
    summaries.retain(|(id, _)| !files.superseded.contains(id));
    Ok((files, summaries))
}

/// Lists `index/` and reads every listed file except those the visitor
/// has already (it is asked after each listing), handing each to
/// `visitor` as it is read, so that memory holds one index file at a
/// time. A file listed and gone when read makes it list again, up to
/// `rounds` listings in all; in the last one such a file counts as
/// damaged.
///
/// # Errors
/// A failed listing (never read as "no index files"), backend errors other
/// than a missing or damaged file, and the visitor's.
pub fn visit_current_index_files(
    repo: &Repository,
    rounds: usize,
    visitor: &mut impl IndexFileVisitor,
) -> Result<CurrentIndexFiles> {
    let mut round = 1;
    loop {
        let last = round >= rounds;
        match read_listing(repo, last, visitor) {
            Err(e) if e.kind() == ErrorKind::NotFound && !last => {
                tracing::debug!("an index file went away while reading, listing again: {e}");
                round += 1;
            }
            result => return result,
        }
    }
}

/// One listing's worth of [`visit_current_index_files`]; unless `last`, a
/// file that is gone stops it with [`ErrorKind::NotFound`].
fn read_listing(
    repo: &Repository,
    last: bool,
    visitor: &mut impl IndexFileVisitor,
) -> Result<CurrentIndexFiles> {
    let listed = repo.list::<IndexFile>()?;
    let skip = visitor.listed(&listed)?;
    let mut superseded = HashSet::new();
    let mut damaged = Vec::new();
    for id in listed.iter().filter(|id| !skip.contains(id)) {
        match read_index_file(repo, id) {
            Ok(file) => {
                superseded.extend(file.supersedes.iter().copied());
                visitor.file(*id, file)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound && !last => return Err(e),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                damaged.push((*id, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(CurrentIndexFiles {
        listed,
        superseded,
        damaged,
    })
}
