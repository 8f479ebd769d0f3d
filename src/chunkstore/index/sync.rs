//! Reconciling the cache with the index files the repository lists
//! (format-spec/06: superseded files are never loaded).

use crate::error::Result;
use crate::error::{ErrorKind, warn_skipped_damage};
use crate::id::IndexId;
use crate::repository::Repository;
use redb::Durability;
use std::collections::HashSet;

use super::current::{IndexFileVisitor, visit_current_index_files};
use super::{ChunkIndex, LOADED, SUPERSEDED, SyncReport, db_err};
use crate::format::index::IndexFile;

/// How many times [`ChunkIndex::sync`] lists `index/` before it gives up on
/// index files that keep going away between listing and reading.
const SYNC_ROUNDS: usize = 8;

/// Entries a sync holds in memory before it records them in the cache:
/// about 3 MB decoded, however many index files the repository has.
const SYNC_BATCH_ENTRIES: usize = 1 << 16;

/// Records index files in the cache as a sync reads them.
struct Loader<'a> {
    index: &'a ChunkIndex,
    report: SyncReport,
    /// Files the cache holds: loaded before this listing, and since.
    loaded: HashSet<IndexId>,
    /// Every id a file read in this sync supersedes: never recorded, and
    /// not read again.
    superseded: HashSet<IndexId>,
    /// Files read and not yet recorded, with their entry count.
    batch: Vec<(IndexId, IndexFile)>,
    batch_entries: usize,
    /// Entries read that make a batch.
    batch_limit: usize,
}

impl Loader<'_> {
    /// Records the files read so far (those not superseded) in one
    /// transaction.
    fn flush(&mut self) -> Result<()> {
        let superseded = &self.superseded;
        self.batch.retain(|(id, _)| !superseded.contains(id));
        self.index.insert_files(&self.batch)?;
        self.report.index_files_loaded += self.batch.len();
        self.loaded.extend(self.batch.drain(..).map(|(id, _)| id));
        self.batch_entries = 0;
        Ok(())
    }
}

impl IndexFileVisitor for Loader<'_> {
    fn listed(&mut self, listed: &[IndexId]) -> Result<HashSet<IndexId>> {
        self.flush()?;
        let (loaded, cached_superseded) = self.index.cached_for(listed, &mut self.report)?;
        let skip = &(&loaded | &cached_superseded) | &self.superseded;
        self.loaded = loaded;
        Ok(skip)
    }

    fn file(&mut self, id: IndexId, file: IndexFile) -> Result<()> {
        self.superseded.extend(file.supersedes.iter().copied());
        self.batch_entries += file.packs.iter().map(|p| p.entries.len()).sum::<usize>();
        self.batch.push((id, file));
        if self.batch_entries >= self.batch_limit {
            self.flush()?;
        }
        Ok(())
    }
}

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
    /// Files are recorded in the cache as they are read, a batch of about
    /// [`SYNC_BATCH_ENTRIES`] entries at a time (one transaction, which
    /// marks them loaded), so memory does not grow with the repository's
    /// index. A file recorded and then found superseded by one read later
    /// makes the sync empty the cache and start over, skipping every file
    /// it now knows to be superseded. A sync that fails leaves the cache
    /// holding whole index files, each marked loaded; the next sync reads
    /// the rest (and starts over if one of them supersedes a loaded one).
    /// Callers use the cache only after a sync succeeded.
    ///
    /// A cache file that fails meanwhile is replaced by memory (see the
    /// module doc), and the sync starts over there.
    ///
    /// # Errors
    /// A failed listing (never read as "no index files"), backend errors
    /// reading an index file, a file still gone after [`SYNC_ROUNDS`]
    /// listings ([`ErrorKind::NotFound`]), or cache I/O errors in memory.
    pub fn sync(&self, repo: &Repository) -> Result<SyncReport> {
        self.sync_in_batches(repo, SYNC_BATCH_ENTRIES)
    }

    /// [`Self::sync`] recording files once `batch_entries` entries are read.
    fn sync_in_batches(&self, repo: &Repository, batch_entries: usize) -> Result<SyncReport> {
        self.take_stale();
        let report = self.sync_once(repo, batch_entries)?;
        if self.take_stale() {
            return self.sync_once(repo, batch_entries);
        }
        Ok(report)
    }

    fn sync_once(&self, repo: &Repository, batch_limit: usize) -> Result<SyncReport> {
        let mut loader = Loader {
            index: self,
            batch_limit,
            report: SyncReport::default(),
            loaded: HashSet::new(),
            superseded: HashSet::new(),
            batch: Vec::new(),
            batch_entries: 0,
        };
        let files = loop {
            let files = visit_current_index_files(repo, SYNC_ROUNDS, &mut loader)?;
            loader.flush()?;
            // A file read supersedes one loaded, in an earlier sync (prune
            // crashed before deleting it, or ran since) or in this one
            // (listed before its replacement): start over without it.
            if files.superseded.is_disjoint(&loader.loaded) {
                break files;
            }
            self.clear()?;
            loader.report.rebuilt = true;
            loader.report.index_files_loaded = 0;
        };
        let Loader {
            mut report,
            superseded,
            ..
        } = loader;
        for (id, e) in files.damaged {
            if e.kind() == ErrorKind::NotFound {
                return Err(e);
            }
            warn_skipped_damage(&format!("index file {id}"), &e);
            if !superseded.contains(&id) {
                report.index_files_damaged += 1;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::index::write_index_file_as;
    use crate::format::index::IndexedPack;
    use crate::format::pack::{PackEntry, PackKind};
    use crate::id::{ChunkId, PackId};
    use crate::repository::in_memory_for_tests;

    /// A pack record of `n` entries whose chunk ids start with `tag`.
    fn pack(tag: u8, n: u8) -> IndexedPack {
        let entries = (0..n)
            .map(|i| PackEntry {
                id: chunk(tag, i),
                offset: u32::from(i) * 100,
                stored_len: 100,
                raw_offset: 0,
                raw_len: 60,
            })
            .collect();
        IndexedPack {
            id: PackId([tag; 32]),
            kind: PackKind::Data,
            size: u64::from(n) * 100,
            entries,
        }
    }

    fn chunk(tag: u8, i: u8) -> ChunkId {
        let mut id = [0; 32];
        (id[0], id[1]) = (tag, i);
        ChunkId(id)
    }

    /// An index file `old` listing packs 1 and 2, a file `other` listing
    /// pack 3, and `new` superseding `old` with pack 2 only (as prune
    /// writes it when pack 1 is deleted); the listing reads ids in order.
    fn repository_with_a_leftover(old: u8, new: u8) -> Repository {
        let repo = in_memory_for_tests();
        let write = |id: u8, supersedes: Vec<IndexId>, packs| {
            let file = IndexFile { supersedes, packs };
            write_index_file_as(&repo, &IndexId([id; 32]), &file, 3).unwrap();
        };
        write(old, Vec::new(), vec![pack(1, 3), pack(2, 3)]);
        write(0x80, Vec::new(), vec![pack(3, 3)]);
        write(new, vec![IndexId([old; 32])], vec![pack(2, 3)]);
        repo
    }

    #[test]
    fn a_superseded_file_is_dropped_whichever_is_read_first_and_however_files_are_batched() {
        // (old, new) ids: the leftover listed before its replacement, then after.
        for (old, new) in [(0x10, 0xf0), (0xf0, 0x10)] {
            // A batch of 1 entry records each file as soon as it is read, so
            // the leftover read first is recorded before its replacement.
            for batch in [1, SYNC_BATCH_ENTRIES] {
                let repo = repository_with_a_leftover(old, new);
                let index = ChunkIndex::open(None).unwrap();
                let report = index.sync_in_batches(&repo, batch).unwrap();
                let case = format!("old {old:#x}, new {new:#x}, batch {batch}");
                assert!(index.lookup(&chunk(1, 0)).unwrap().is_none(), "{case}");
                assert!(!index.knows_pack(&PackId([1; 32])).unwrap(), "{case}");
                for tag in [2, 3] {
                    let loc = index.lookup(&chunk(tag, 2)).unwrap();
                    assert_eq!(loc.map(|l| l.pack), Some(PackId([tag; 32])), "{case}");
                }
                let loaded = index.ids(LOADED).unwrap();
                let expected = HashSet::from([IndexId([new; 32]), IndexId([0x80; 32])]);
                assert_eq!(loaded, expected, "{case}");
                assert_eq!(report.index_files_loaded, 2, "{case}");
                let restarted = old < new && batch == 1;
                assert_eq!(report.rebuilt, restarted, "{case}");
                assert!(index.ids(SUPERSEDED).unwrap().contains(&IndexId([old; 32])));
                // The next sync reads nothing.
                let again = index.sync_in_batches(&repo, batch).unwrap();
                assert_eq!(again, SyncReport::default(), "{case}");
            }
        }
    }

    /// A chunk stored in two packs (two writers raced) has one location
    /// and the other as another copy, the same whether the files are
    /// recorded one by one or together (entries sorted by chunk id).
    #[test]
    fn a_chunk_in_two_packs_keeps_both_however_files_are_batched() {
        let mut results = Vec::new();
        for batch in [1, SYNC_BATCH_ENTRIES] {
            let repo = in_memory_for_tests();
            let mut second = pack(7, 3);
            second.entries.push(PackEntry {
                id: chunk(5, 1),
                offset: 300,
                stored_len: 100,
                raw_offset: 0,
                raw_len: 60,
            });
            second.size = 400;
            for (id, p) in [(0x10u8, pack(5, 3)), (0x20, second)] {
                let file = IndexFile {
                    supersedes: Vec::new(),
                    packs: vec![p],
                };
                write_index_file_as(&repo, &IndexId([id; 32]), &file, 3).unwrap();
            }
            let index = ChunkIndex::open(None).unwrap();
            index.sync_in_batches(&repo, batch).unwrap();
            let first = index.lookup(&chunk(5, 1)).unwrap().unwrap().pack;
            let mut all: Vec<PackId> = index
                .locations(&chunk(5, 1))
                .unwrap()
                .into_iter()
                .map(|l| l.pack)
                .collect();
            all.sort();
            assert_eq!(all, vec![PackId([5; 32]), PackId([7; 32])], "batch {batch}");
            assert_eq!(index.len().unwrap(), 6, "batch {batch}");
            results.push(first);
        }
        assert_eq!(results[0], results[1]);
    }
}
