//! Reconciling the cache with the index files the repository lists
//! (format-spec/06: superseded files are never loaded).

use crate::error::Result;
use crate::error::{ErrorKind, warn_skipped_damage};
use crate::id::IndexId;
use crate::repository::Repository;
use redb::Durability;
use std::collections::HashSet;

use super::current::read_current_index_files;
use super::{ChunkIndex, LOADED, SUPERSEDED, SyncReport, db_err};

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
    /// new listing, so the sync lists again, up to [`SYNC_ROUNDS`] times.
    ///
    /// A sync that fails leaves the cache as it was, or emptied: index
    /// entries are inserted only once every listed file has been read.
    ///
    /// A cache file that fails meanwhile is replaced by memory (see the
    /// module doc), and the sync starts over there.
    ///
    /// # Errors
    /// A failed listing (never read as "no index files"), backend errors
    /// reading an index file, a file still gone after [`SYNC_ROUNDS`]
    /// listings ([`ErrorKind::NotFound`]), or cache I/O errors in memory.
    pub fn sync(&self, repo: &Repository) -> Result<SyncReport> {
        self.take_stale();
        let report = self.sync_once(repo)?;
        if self.take_stale() {
            return self.sync_once(repo);
        }
        Ok(report)
    }

    fn sync_once(&self, repo: &Repository) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let (files, superseded) = loop {
            let mut loaded = HashSet::new();
            let files = read_current_index_files(repo, SYNC_ROUNDS, |listed| {
                let (now_loaded, cached_superseded) = self.cached_for(listed, &mut report)?;
                loaded.clone_from(&now_loaded);
                Ok(&now_loaded | &cached_superseded)
            })?;
            // A new file replaces one already loaded (prune crashed before
            // deleting it, or ran since): start over without the old one.
            if files.superseded.is_disjoint(&loaded) {
                let superseded = files.superseded.clone();
                break (files, superseded);
            }
            self.clear()?;
            report.rebuilt = true;
        };
        for (id, e) in files.damaged {
            if e.kind() == ErrorKind::NotFound {
                return Err(e);
            }
            warn_skipped_damage(&format!("index file {id}"), &e);
            if !superseded.contains(&id) {
                report.index_files_damaged += 1;
            }
        }
        for (id, file) in &files.current {
            self.insert(Some(id), &file.packs)?;
            report.index_files_loaded += 1;
        }
        self.remember_superseded(&superseded, &report)?;
        Ok(report)
    }

    /// The index files the cache has loaded and those it knows are
    /// superseded, after emptying it if a loaded one is no longer `listed`.
    fn cached_for(
        &self,
        listed: &[IndexId],
        report: &mut SyncReport,
    ) -> Result<(HashSet<IndexId>, HashSet<IndexId>)> {
        let listed: HashSet<&IndexId> = listed.iter().collect();
        let loaded = self.ids(LOADED)?;
        if loaded.iter().any(|id| !listed.contains(id)) {
            self.clear()?;
            report.rebuilt = true;
            return Ok((HashSet::new(), HashSet::new()));
        }
        Ok((loaded, self.ids(SUPERSEDED)?))
    }

    /// Records `superseded` in the cache, durably if the sync changed it.
    fn remember_superseded(
        &self,
        superseded: &HashSet<IndexId>,
        report: &SyncReport,
    ) -> Result<()> {
        let durability = if report.index_files_loaded > 0 || report.rebuilt {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write_with(durability, |txn| {
            let mut table = txn.open_table(SUPERSEDED).map_err(db_err)?;
            for id in superseded {
                table.insert(id.as_bytes(), ()).map_err(db_err)?;
            }
            Ok(())
        })
    }
}
