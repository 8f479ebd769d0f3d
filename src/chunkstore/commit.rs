//! Chunk store layer: the commit protocol of a writer (format-spec/07 and
//! 12, "Backups"). A writer (backup, copy, repair) that started at time T
//! writes what it commits (a snapshot) only after every pack it relied on
//! is named by an index file and condemned by no prune record it has not
//! taken back: a condemned pack is taken back (resurrected in a new index
//! file) while the writer is young enough for the record's grace, and its
//! blobs are copied otherwise. The commit then has to follow the last
//! check within [`COMMIT_WINDOW`], or the check runs again.
//!
//! Owned invariant: nothing a writer commits depends on a pack that a
//! prune may delete. The prune records that count are read here
//! ([`Condemned::load`]), before a writer relies on anything and again at
//! each check.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::{ChunkStore, ChunkStoreOptions, lock};
use crate::chunkstore::index::{ChunkIndex, RebuildReport};
use crate::chunkstore::pack::verify_pack;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::IndexedPack;
use crate::format::layout;
use crate::format::pack::{PackHeader, PackKind, groups};
use crate::format::prune::PruneRecord;
use crate::id::{ChunkId, PackId, RecordId};
use crate::repository::Repository;
use crate::repository::records;

/// How long a writer may take from the start of its commit check to its
/// commit (format-spec/12, `W`).
pub const COMMIT_WINDOW: Duration = Duration::from_secs(300);

/// What [`ChunkStore::secure_relied`] had to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SecureReport {
    pub packs_resurrected: usize,
    pub packs_copied: usize,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
}

/// Packs condemned by some record: for each, the records condemning it
/// and their grace (seconds).
#[derive(Debug, Clone, Default)]
pub struct Condemned {
    packs: HashMap<PackId, Vec<(RecordId, u64)>>,
}

impl Condemned {
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a (RecordId, PruneRecord)>,
    ) -> Self {
        let mut packs: HashMap<PackId, Vec<(RecordId, u64)>> = HashMap::new();
        for (id, r) in records {
            for (p, _) in &r.condemned {
                packs.entry(*p).or_default().push((*id, r.grace));
            }
        }
        Self { packs }
    }

    /// Lists and reads every record.
    ///
    /// # Errors
    /// As [`records::load_all`]: a record that does not authenticate could
    /// condemn anything, so nothing may rely on its absence.
    pub fn load(repo: &Repository) -> Result<Self> {
        Ok(Self::from_records(&records::load_all(repo)?))
    }

    pub fn contains(&self, pack: &PackId) -> bool {
        self.packs.contains_key(pack)
    }

    /// The records condemning `pack`, with their grace.
    pub fn by(&self, pack: &PackId) -> &[(RecordId, u64)] {
        self.packs.get(pack).map_or(&[], Vec::as_slice)
    }

    pub fn packs(&self) -> HashSet<PackId> {
        self.packs.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }
}

/// Time since a writer started, on two clocks: the monotonic one keeps
/// counting while the process is stopped, the wall clock also across a
/// suspended machine. The larger counts.
pub(crate) struct Started {
    instant: Instant,
    wall: SystemTime,
}

impl Started {
    pub(crate) fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        let wall = self.wall.elapsed().unwrap_or(Duration::ZERO);
        self.instant.elapsed().max(wall)
    }
}

/// The commit check (format-spec/12, "Backups", rules 3 and 4): repeated
/// until nothing this writer relies on is condemned or missing, and the
/// commit can be written within [`COMMIT_WINDOW`] of the check.
///
/// # Errors
/// As [`ChunkStore::secure_relied`].
pub(crate) fn commit_check(store: &ChunkStore<'_>, started: &Started) -> Result<SecureReport> {
    let mut total = SecureReport::default();
    loop {
        let check = Started::now();
        let elapsed = started.elapsed().as_secs();
        let done = store.secure_relied(|grace| elapsed < grace / 2)?;
        total.packs_resurrected += done.packs_resurrected;
        total.packs_copied += done.packs_copied;
        total.blobs_copied += done.blobs_copied;
        total.bytes_copied += done.bytes_copied;
        if done == SecureReport::default() && check.elapsed() < COMMIT_WINDOW {
            if total != SecureReport::default() {
                tracing::info!(?total, "backup: packs condemned by a prune were secured");
            }
            return Ok(total);
        }
    }
}

/// A chunk store over `repo` that writes as a backup does (format-spec/07
/// and 12). Prune records are read first: packs they condemn are neither
/// deduplicated against nor adopted. Orphan packs are adopted (what an
/// interrupted writer uploaded is reused), and packs that are lost or
/// found damaged are not relied on.
///
/// # Errors
/// Listing, backend and cache errors; a prune record that does not
/// authenticate.
pub(crate) fn writing_store<'r>(
    repo: &'r Repository,
    index: &'r ChunkIndex,
    options: ChunkStoreOptions,
) -> Result<(ChunkStore<'r>, RebuildReport)> {
    let condemned = Condemned::load(repo)?.packs();
    let adopted = index.adopt_orphan_packs(repo, options.compression_level, &condemned)?;
    tracing::debug!(packs = adopted.packs.len(), "orphan packs adopted");
    let store = store_over_sound_packs(repo, index, options, &adopted.missing)?;
    store.distrust(condemned);
    Ok((store, adopted))
}

/// A chunk store that stores again what only lost packs (`missing` from
/// the listing) or packs a check found damaged hold, so the snapshot is
/// whole even before any repair.
fn store_over_sound_packs<'r>(
    repo: &'r Repository,
    index: &'r ChunkIndex,
    options: ChunkStoreOptions,
    missing: &[PackId],
) -> Result<ChunkStore<'r>> {
    let mut distrusted = index.damaged_packs()?;
    distrusted.extend(missing.iter().copied());
    if !distrusted.is_empty() {
        tracing::info!(
            packs = distrusted.len(),
            "backup: not relying on lost or damaged packs"
        );
    }
    let store = ChunkStore::new(repo, index, options);
    store.distrust(distrusted);
    Ok(store)
}

impl ChunkStore<'_> {
    /// The commit check of format-spec/12 ("Backups", rule 3): makes sure
    /// no pack this store relied on is condemned by a prune record or
    /// missing from the current index. Such a pack is named in a new index
    /// file if `may_resurrect(grace)` says the backup is young enough for
    /// the record's grace, otherwise its blobs are copied into new packs.
    /// Call after [`Self::flush`]; it flushes again if it copied.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] (with an explanation) if such a pack is
    /// gone: the snapshot must not be written, and a new backup will
    /// succeed. Listing, backend and cache
    /// errors.
    pub fn secure_relied(&self, may_resurrect: impl Fn(u64) -> bool) -> Result<SecureReport> {
        let mut report = SecureReport::default();
        let condemned = Condemned::load(self.repo)?;
        self.index.sync(self.repo)?;
        let doubtful = self.doubtful_packs(&condemned)?;
        if doubtful.is_empty() {
            return Ok(report);
        }
        self.distrust(doubtful.iter().copied());
        let mut resurrect = Vec::new();
        for p in &doubtful {
            let (header, bytes) = self.read_relied_pack(p)?;
            let by = condemned.by(p);
            if !by.is_empty() && by.iter().all(|(_, grace)| may_resurrect(*grace)) {
                lock(&self.shared.state)
                    .resurrected
                    .entry(*p)
                    .or_default()
                    .extend(by.iter().map(|(r, _)| *r));
                resurrect.push(IndexedPack {
                    id: *p,
                    kind: header.kind,
                    size: bytes.len() as u64,
                    entries: header.entries,
                });
            } else {
                self.copy_pack(p, &header, &bytes, &mut report)?;
            }
        }
        if !resurrect.is_empty() {
            self.write_index(&resurrect)?;
            report.packs_resurrected = resurrect.len();
            lock(&self.shared.state)
                .distrusted
                .retain(|p| !resurrect.iter().any(|r| r.id == *p));
        }
        self.flush()?;
        Ok(report)
    }

    /// The relied-on packs that a record condemns (other than one this
    /// store took them back from) or that the index no longer names,
    /// sorted.
    fn doubtful_packs(&self, condemned: &Condemned) -> Result<Vec<PackId>> {
        let relied = self.relied_packs();
        let mut doubtful: Vec<PackId> = Vec::new();
        let state = lock(&self.shared.state);
        for p in relied {
            // A pack this store took back from a record stays safe from
            // that record (the sweep sees the index file); only records
            // that came later, or a lost index entry, put it in doubt.
            let taken_back = state.resurrected.get(&p);
            let newly_condemned = condemned
                .by(&p)
                .iter()
                .any(|(r, _)| taken_back.is_none_or(|t| !t.contains(r)));
            if newly_condemned || !self.index.knows_pack(&p)? {
                doubtful.push(p);
            }
        }
        drop(state);
        doubtful.sort();
        Ok(doubtful)
    }

    /// Reads and authenticates relied-on pack `p`.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] if it is gone (pruned meanwhile);
    /// [`ErrorKind::Corrupt`] if it does not authenticate.
    fn read_relied_pack(&self, p: &PackId) -> Result<(PackHeader, Vec<u8>)> {
        let bytes = match self.repo.backend().read(&layout::pack_path(p), None) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "pack {p}, which this backup relied on, was pruned while the \
                         backup ran; no snapshot was written: run the backup again"
                    ),
                ));
            }
            other => other?,
        };
        let header = verify_pack(self.repo.sealer(), p, &bytes)?;
        Ok((header, bytes))
    }

    /// Copies the blobs of pack `p` (not yet pending here) into this
    /// store's open packs, and stops relying on `p`.
    fn copy_pack(
        &self,
        p: &PackId,
        header: &PackHeader,
        bytes: &[u8],
        report: &mut SecureReport,
    ) -> Result<()> {
        let mut state = lock(&self.shared.state);
        // Groups are copied whole, envelopes unchanged: one whose chunks
        // are all pending already is skipped, any other is copied with
        // every chunk it holds.
        for group in groups(&header.entries) {
            if group.iter().all(|e| state.pending.contains_key(&e.id)) {
                continue;
            }
            let e = &group[0];
            let blob = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            for c in group {
                state.pending.insert(c.id, header.kind);
            }
            report.blobs_copied += group.len() as u64;
            report.bytes_copied += u64::from(e.stored_len);
            let chunks: Vec<(ChunkId, u32)> = group.iter().map(|c| (c.id, c.raw_len)).collect();
            let packer = match header.kind {
                PackKind::Data => &mut state.data,
                PackKind::Tree => &mut state.tree,
            };
            if let Some(full) = packer.add_group(&self.shared.sealer, &chunks, blob) {
                self.upload(&mut state, full)?;
            }
        }
        state.relied.remove(p);
        report.packs_copied += 1;
        Ok(())
    }
}
