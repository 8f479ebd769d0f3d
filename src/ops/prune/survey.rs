//! Operations layer, prune steps 1, 3 and 4 (format-spec/12): what a run
//! finds when it lists and reads everything, and what follows from it
//! once the live chunks are marked: which condemned packs the sweep
//! deletes or resurrects, which orphans are condemned or adopted, and how
//! much of each indexed pack is live. Reads only.

use std::collections::{HashMap, HashSet};

use super::plan::IndexFiles;
use crate::chunkstore::index::{
    ChunkIndex, ChunkSetReader, read_index_file, summarize_current_index_files,
};
use crate::error::Result;
use crate::format::pack::{PackKind, group_raw_len, groups};
use crate::format::prune::PruneRecord;
use crate::id::{IndexId, PackId, RecordId, SnapshotId};
use crate::repository::Repository;
use crate::repository::records;
use crate::repository::snapshots;

/// Step 1: everything listed and read, and what follows from the records.
pub(super) struct Survey {
    records: Vec<(RecordId, PruneRecord)>,
    /// Positions in `records` of the ripe ones (every one with grace 0).
    ripe: Vec<usize>,
    /// Grace 0: act as if a ripe record had seen everything.
    at_once: bool,
    /// The newest ripe record's position in `records`.
    reference: Option<usize>,
    pub index_files: IndexFiles,
    pub snapshot_ids: Vec<SnapshotId>,
    pub listed: HashMap<PackId, u64>,
    /// Packs the current index files name, with a file naming each.
    named: HashMap<PackId, IndexId>,
    /// Packs a young current index file names: maybe a running backup's.
    exempt: HashSet<PackId>,
}

impl Survey {
    /// Lists and reads every record, current index file and snapshot id,
    /// lists the packs and syncs `index`.
    pub(super) fn read(
        repo: &Repository,
        index: &ChunkIndex,
        now: u64,
        at_once: bool,
    ) -> Result<Self> {
        let records = records::load_all_at(repo, now)?;
        let ripe: Vec<usize> = (0..records.len())
            .filter(|&i| at_once || records[i].1.is_ripe(now))
            .collect();
        // A forget record has seen nothing: it is never the reference.
        let reference = (ripe.iter().copied())
            .filter(|&i| !records[i].1.is_forget_only())
            .max_by_key(|&i| records[i].1.created);
        let index_files = read_index_files(repo)?;
        let snapshot_ids = snapshots::list_ids(repo)?;
        let listed = repo.list_packs()?;
        index.sync(repo)?;
        let mut found = Survey {
            records,
            ripe,
            at_once,
            reference,
            index_files,
            snapshot_ids,
            listed,
            named: HashMap::new(),
            exempt: HashSet::new(),
        };
        found.sort_index_files();
        Ok(found)
    }

    /// Fills `named`, `exempt` and the index files' `old`.
    fn sort_index_files(&mut self) {
        for (file, packs) in &self.index_files.current {
            let old = self.at_once
                || self
                    .reference
                    .is_some_and(|r| self.records[r].1.seen_index.contains(file));
            if old {
                self.index_files.old.insert(*file);
            }
            for p in packs {
                self.named.insert(*p, *file);
                if !old {
                    self.exempt.insert(*p);
                }
            }
        }
    }

    pub(super) fn ripe(&self) -> impl Iterator<Item = &(RecordId, PruneRecord)> {
        self.ripe.iter().map(|&i| &self.records[i])
    }

    /// The snapshots every current record names as forgotten, each once,
    /// sorted: the new record carries them all, so that losing one record
    /// loses as few names as possible.
    pub(super) fn forgotten(&self) -> Vec<SnapshotId> {
        let all: std::collections::BTreeSet<SnapshotId> = (self.records.iter())
            .flat_map(|(_, r)| r.forgotten.iter().copied())
            .collect();
        all.into_iter().collect()
    }

    /// Every pack some record condemns, each once, in record order.
    fn all_condemned(&self) -> Vec<(PackId, u64)> {
        let mut seen = HashSet::new();
        self.records
            .iter()
            .flat_map(|(_, r)| r.condemned.iter().copied())
            .filter(|(p, _)| seen.insert(*p))
            .collect()
    }

    /// Listed packs no current index file names and no record condemns.
    fn orphans(&self) -> Vec<(PackId, u64)> {
        let condemned: HashSet<PackId> = self.all_condemned().iter().map(|(p, _)| *p).collect();
        self.listed
            .iter()
            .filter(|(p, _)| !self.named.contains_key(p) && !condemned.contains(p))
            .map(|(p, s)| (*p, *s))
            .collect()
    }

    /// Packs no current index file describes, whose headers marking reads
    /// for blobs the index lacks: condemned ones, then orphans.
    pub(super) fn unindexed(&self) -> Vec<(PackId, u64)> {
        let mut packs = self.all_condemned();
        packs.extend(self.orphans());
        packs
    }

    /// Step 3: of the ripe records' packs, those to delete (listed, with
    /// their listed size) and those to resurrect (needed by a snapshot).
    /// A pack a current index file names was taken back: it stays.
    pub(super) fn sweep(&self, needed: &HashSet<PackId>) -> (Vec<(PackId, u64)>, Vec<PackId>) {
        let (mut delete, mut resurrect) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for (_, r) in self.ripe() {
            for (p, _) in &r.condemned {
                if !seen.insert(*p) || self.named.contains_key(p) {
                    continue;
                }
                if needed.contains(p) {
                    resurrect.push(*p);
                } else if let Some(size) = self.listed.get(p) {
                    delete.push((*p, *size));
                }
                // Otherwise it is already gone: nothing to free.
            }
        }
        (delete, resurrect)
    }

    /// Step 4 for orphans: (condemned, adopted, seen and left alone). A
    /// needed orphan holds the only copy of live chunks; one the reference
    /// record saw is condemned; the rest wait for a later run.
    pub(super) fn sort_orphans(
        &self,
        needed: &HashSet<PackId>,
    ) -> (Vec<(PackId, u64)>, Vec<PackId>, Vec<PackId>) {
        let (mut condemn, mut adopt, mut seen) = (Vec::new(), Vec::new(), Vec::new());
        for (p, size) in self.orphans() {
            let seen_before = self.at_once
                || self
                    .reference
                    .is_some_and(|r| self.records[r].1.seen_orphans.contains(&p));
            if needed.contains(&p) {
                adopt.push(p);
            } else if seen_before {
                condemn.push((p, size));
            } else {
                seen.push(p);
            }
        }
        (condemn, adopt, seen)
    }

    /// How much of each pack the current index files name is live.
    pub(super) fn measure(
        &self,
        repo: &Repository,
        live: &ChunkSetReader,
    ) -> Result<HashMap<PackId, PackUse>> {
        let mut uses: HashMap<PackId, PackUse> = HashMap::new();
        for (file, _) in &self.index_files.current {
            let f = read_index_file(repo, file)?;
            for pack in &f.packs {
                let old = self.index_files.old.contains(file) && !self.exempt.contains(&pack.id);
                let (mut dead_bytes, mut live_blobs) = (0u64, 0usize);
                for group in groups(&pack.entries) {
                    // A partly live group counts its dead chunks' share of
                    // its stored bytes (format-spec/12, step 5).
                    let (mut dead_raw, mut group_live) = (0u64, 0usize);
                    for e in group {
                        if live.contains(&e.id)? {
                            group_live += 1;
                        } else {
                            dead_raw += u64::from(e.raw_len);
                        }
                    }
                    live_blobs += group_live;
                    let stored = u64::from(group[0].stored_len);
                    dead_bytes += match group_raw_len(group) {
                        _ if group_live == 0 => stored,
                        0 => 0,
                        raw => u64::try_from(
                            u128::from(stored) * u128::from(dead_raw) / u128::from(raw),
                        )
                        .expect("at most the group's stored length"),
                    };
                }
                let u = uses.entry(pack.id).or_insert(PackUse {
                    kind: pack.kind,
                    size: pack.size,
                    dead_bytes,
                    live_blobs,
                    old,
                });
                u.old &= old;
                // Two files describing one pack differently: one of them
                // is wrong (or forged); the more live description counts.
                u.live_blobs = u.live_blobs.max(live_blobs);
                u.dead_bytes = u.dead_bytes.min(dead_bytes);
            }
        }
        Ok(uses)
    }
}

/// Step 1 for index files: every current one must read; any damage aborts
/// the run before it changes anything.
fn read_index_files(repo: &Repository) -> Result<IndexFiles> {
    // One file held at a time: of each, only its pack ids are kept.
    let (mut files, current) = summarize_current_index_files(repo, 1, |_, file| {
        Ok(file.packs.iter().map(|p| p.id).collect())
    })?;
    if let Some((id, e)) = std::mem::take(&mut files.damaged).into_iter().next() {
        return Err(e.context(format!(
            "prune reads every index file before it changes anything, and index file {id} \
             is damaged; run `kura repair index` (it rebuilds the index around the file \
             and deletes it), then prune again"
        )));
    }
    Ok(IndexFiles {
        current,
        old: HashSet::new(),
        leftovers: files.leftovers(),
    })
}

/// Per pack of the current index: what share of it is live.
#[derive(Debug, Clone, Copy)]
pub(super) struct PackUse {
    pub kind: PackKind,
    pub size: u64,
    /// Stored bytes of blobs no snapshot needs.
    pub dead_bytes: u64,
    pub live_blobs: usize,
    /// Named by old files only, none of them exempt: prune may touch it.
    pub old: bool,
}

impl PackUse {
    /// Share of the pack's blob bytes that is live.
    pub fn live_share(&self) -> f64 {
        1.0 - self.dead_bytes as f64 / self.size.max(1) as f64
    }
}

/// Step 4 for indexed packs: old ones without a live blob.
/// The packs of `dead` whose own headers name no live chunk: an index
/// file's word that a pack is unused is checked against the pack itself
/// before it is condemned (format-spec/12, step 4). A pack whose header
/// names a live chunk, or does not read, is kept with a warning.
///
/// # Errors
/// Live-set I/O errors.
pub(super) fn confirmed_by_headers(
    repo: &Repository,
    live: &ChunkSetReader,
    dead: Vec<(PackId, u64)>,
) -> Result<Vec<(PackId, u64)>> {
    let mut out = Vec::with_capacity(dead.len());
    for (pack, size) in dead {
        let header = match repo.read_pack_header(&pack, size) {
            Ok(header) => header,
            Err(e) => {
                tracing::warn!("pack {pack} is kept: its header does not read ({e})");
                continue;
            }
        };
        let mut holds_live = false;
        for e in &header.entries {
            holds_live |= live.contains(&e.id)?;
        }
        if holds_live {
            tracing::warn!(
                "pack {pack} is kept: an index file calls it unused, but its own header \
                 names live chunks (a wrong or forged index file; run `kura check`)"
            );
        } else {
            out.push((pack, size));
        }
    }
    Ok(out)
}

pub(super) fn dead_packs(uses: &HashMap<PackId, PackUse>) -> Vec<(PackId, u64)> {
    uses.iter()
        .filter(|(_, u)| u.old && u.live_blobs == 0)
        .map(|(p, u)| (*p, u.size))
        .collect()
}
