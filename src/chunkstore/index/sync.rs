//! Reconciling the cache with the index files the repository lists
//! (format-spec/06: superseded files are never loaded).

use crate::error::ErrorKind;
use crate::error::Result;
use crate::format::index::IndexFile;
use crate::id::IndexId;
use crate::repository::Repository;
use redb::Durability;
use std::collections::HashMap;
use std::collections::HashSet;

use super::{ChunkIndex, LOADED, SUPERSEDED, SyncReport, db_err, read_index_file};

/// How many times [`ChunkIndex::sync`] lists `index/` before it gives up on
/// index files that keep going away between listing and reading.
const SYNC_ROUNDS: usize = 8;

impl ChunkIndex {
    /// Brings the cache in line with the repository's index files: loads
    /// new ones, and starts over if one it had loaded is gone. A damaged
    /// index file is skipped with a warning (format-spec/06: its packs'
    /// entries come back from their headers, by adoption or `repair
    /// index`), so one bad file does not stop restores of the rest.
    ///
    /// An index file that is listed and then gone before it is read was
    /// superseded meanwhile (a prune merged it); the replacement is in a
    /// new listing, so the sync starts over, up to [`SYNC_ROUNDS`] times.
    ///
    /// # Errors
    /// A failed listing (never read as "no index files"), backend errors
    /// reading an index file, or cache I/O errors.
    pub fn sync(&self, repo: &Repository) -> Result<SyncReport> {
        let mut round = 1;
        loop {
            match self.sync_once(repo) {
                Err(e) if e.kind() == ErrorKind::NotFound && round < SYNC_ROUNDS => {
                    tracing::debug!("an index file went away while syncing, listing again: {e}");
                    round += 1;
                }
                result => return result,
            }
        }
    }

    /// One round of [`Self::sync`]. A round that fails leaves the cache
    /// as it was, or emptied: index entries are inserted only once every
    /// listed file has been read.
    fn sync_once(&self, repo: &Repository) -> Result<SyncReport> {
        let listed = repo.list::<IndexFile>()?;
        let listed_set: HashSet<IndexId> = listed.iter().copied().collect();
        let mut report = SyncReport::default();
        let (mut loaded, mut superseded) = (self.ids(LOADED)?, self.ids(SUPERSEDED)?);
        if loaded.iter().any(|id| !listed_set.contains(id)) {
            self.clear()?;
            (loaded, superseded) = (HashSet::new(), HashSet::new());
            report.rebuilt = true;
        }
        let mut files = HashMap::new();
        let mut damaged = HashSet::new();
        loop {
            for id in &listed {
                if loaded.contains(id)
                    || superseded.contains(id)
                    || files.contains_key(id)
                    || damaged.contains(id)
                {
                    continue;
                }
                match read_index_file(repo, id) {
                    Ok(file) => {
                        files.insert(*id, file);
                    }
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!("index file {id} skipped: {e}");
                        damaged.insert(*id);
                    }
                    Err(e) => return Err(e),
                }
            }
            let newly: HashSet<IndexId> = files
                .values()
                .flat_map(|f| f.supersedes.iter().copied())
                .collect();
            // A new file replaces one already loaded (prune crashed before
            // deleting it, or ran since): start over without the old one.
            if newly.is_disjoint(&loaded) {
                superseded.extend(newly);
                break;
            }
            self.clear()?;
            (loaded, superseded) = (HashSet::new(), HashSet::new());
            report.rebuilt = true;
        }
        report.index_files_damaged = damaged.difference(&superseded).count();
        for (id, file) in files.iter().filter(|(id, _)| !superseded.contains(id)) {
            self.insert(Some(id), &file.packs)?;
            report.index_files_loaded += 1;
        }
        let durability = if report.index_files_loaded > 0 || report.rebuilt {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write_with(durability, |txn| {
            let mut table = txn.open_table(SUPERSEDED).map_err(db_err)?;
            for id in &superseded {
                table.insert(id.as_bytes(), ()).map_err(db_err)?;
            }
            Ok(())
        })?;
        Ok(report)
    }
}
