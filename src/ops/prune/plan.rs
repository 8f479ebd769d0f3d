//! Operations layer, prune steps 1-5 (format-spec/12): list and read
//! everything (`survey`), mark the live chunks (`mark`), sweep ripe
//! records, condemn dead packs and choose packs to repack (here). The
//! result is a [`PrunePlan`]; making
//! it changes nothing in the repository (only the local cache is synced),
//! so `--dry-run` is the plan. Any unreadable record, index file or
//! snapshot aborts here, before [`super::execute`] writes anything.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::Path;

use serde::{Serialize, Serializer};

use super::mark::{Marked, mark};
use super::survey::{PackUse, Survey, confirmed_by_headers, dead_packs};
use super::{PruneOptions, PruneReport};
use crate::chunkstore::index::{ChunkIndex, ChunkSet, ChunkSetReader};
use crate::error::Result;
use crate::format::pack::PackKind;
use crate::id::{IndexId, PackId, RecordId, SnapshotId};
use crate::repository::Repository;

/// What a prune run will do, decided before it changes anything.
#[derive(Serialize)]
pub struct PrunePlan {
    /// The run's time (Unix seconds): the new record's `created`.
    pub now: u64,
    /// The new record's grace; 0: condemn and delete in this run.
    pub grace: u64,
    pub snapshots: usize,
    pub live_chunks: u64,
    /// Packs listed in `data/`, and their bytes.
    pub packs: usize,
    pub bytes: u64,
    /// Ripe records, deleted at the end of the run (step 8).
    #[serde(serialize_with = "hex_ids")]
    pub ripe_records: Vec<RecordId>,
    /// Snapshots the current records name as forgotten: the new record
    /// carries them forward (format-spec/12, "Forgotten snapshots").
    #[serde(serialize_with = "hex_ids")]
    pub forgotten: Vec<SnapshotId>,
    /// Packs of ripe records nothing took back, with listed sizes (step 3).
    #[serde(serialize_with = "hex_sized")]
    pub delete: Vec<(PackId, u64)>,
    /// Condemned packs a snapshot needs: named in a new index file.
    #[serde(serialize_with = "hex_ids")]
    pub resurrect: Vec<PackId>,
    /// Orphans holding the only copy of live chunks: named likewise.
    #[serde(serialize_with = "hex_ids")]
    pub adopt: Vec<PackId>,
    /// Packs condemned whole: no live blob, or an orphan seen before.
    #[serde(serialize_with = "hex_sized")]
    pub condemn: Vec<(PackId, u64)>,
    /// Packs whose live blobs are copied, then condemned, least live first.
    pub repack: Vec<Repack>,
    /// Orphans neither condemned nor adopted: the record's `seen_orphans`.
    #[serde(serialize_with = "hex_ids")]
    pub seen_orphans: Vec<PackId>,
    /// Unused bytes in packs that stay once the plan is carried out.
    pub unused_bytes_after: u64,
    #[serde(skip)]
    pub(super) index_files: IndexFiles,
    #[serde(skip)]
    pub(super) listed: HashMap<PackId, u64>,
    #[serde(skip)]
    pub(super) live: ChunkSetReader,
    /// Holds the live set's table (and its file) while the plan lives.
    #[serde(skip)]
    _live_set: ChunkSet,
}

/// A pack chosen for repacking.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Repack {
    #[serde(serialize_with = "hex")]
    pub pack: PackId,
    #[serde(skip)]
    pub kind: PackKind,
    /// Its size, as its index file records it.
    pub size: u64,
    /// Stored bytes of its blobs no snapshot needs.
    pub unused: u64,
}

/// The current index files as step 1 found them.
#[derive(Default)]
pub(super) struct IndexFiles {
    /// Current files and the packs each names, in listing order.
    pub current: Vec<(IndexId, Vec<PackId>)>,
    /// Current files the reference record saw (all with grace 0).
    pub old: HashSet<IndexId>,
    /// Listed files some current file supersedes (a crash's leftovers).
    pub leftovers: Vec<IndexId>,
}

impl PrunePlan {
    /// Whether the run deletes what it condemns (grace 0).
    pub fn at_once(&self) -> bool {
        self.grace == 0
    }

    /// Bytes of the packs chosen for repacking.
    pub fn repack_bytes(&self) -> u64 {
        self.repack.iter().map(|r| r.size).sum()
    }

    /// The report of a run that carries the plan out and every repack
    /// succeeds: what `--dry-run` shows.
    pub fn report(&self) -> PruneReport {
        let mut deleted = self.delete.clone();
        if self.at_once() {
            let condemned = self.condemn.iter().copied();
            let repacked = self.repack.iter().map(|r| (r.pack, r.size));
            let listed = |(p, _): &(PackId, u64)| self.listed.contains_key(p);
            deleted.extend(condemned.chain(repacked).filter(listed));
        }
        let condemned_bytes: u64 = self.condemn.iter().map(|(_, s)| s).sum();
        PruneReport {
            snapshots: self.snapshots,
            live_chunks: self.live_chunks,
            packs: self.packs,
            bytes: self.bytes,
            condemned_packs: self.condemn.len() + self.repack.len(),
            condemned_bytes: condemned_bytes + self.repack_bytes(),
            repacked_packs: self.repack.len(),
            repacked_bytes: self.repack_bytes(),
            deleted_packs: deleted.len(),
            freed_bytes: deleted.iter().map(|(_, s)| s).sum(),
            resurrected_packs: self.resurrect.len(),
            adopted_packs: self.adopt.len(),
            records_swept: self.ripe_records.len(),
            unused_bytes_after: self.unused_bytes_after,
            ..PruneReport::default()
        }
    }
}

/// Builds the plan: steps 1-5 of format-spec/12. `index` is synced with
/// the repository; `scratch` holds the live set.
///
/// # Errors
/// A failed listing; an unreadable record, index file, snapshot or tree;
/// a live chunk found nowhere (the repository is damaged); cache or
/// live-set I/O errors. Nothing in the repository has changed then.
pub fn plan(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    options: &PruneOptions,
) -> Result<PrunePlan> {
    let now = options.clock.now_unix();
    let found = Survey::read(repo, index, now, options.grace == 0)?;
    let marked = mark(repo, index, scratch, &found.snapshot_ids, found.unindexed())?;
    let live = marked.live.reader()?;
    let (delete, resurrect) = found.sweep(&marked.needed);
    let uses = found.measure(repo, &live)?;
    let mut condemn = confirmed_by_headers(repo, &live, dead_packs(&uses))?;
    let (orphans_condemned, adopt, seen_orphans) = found.sort_orphans(&marked.needed);
    condemn.extend(orphans_condemned);
    let (repack, unused_bytes_after) = choose_repacks(&uses, &condemn, options);
    let Marked {
        live: live_set,
        snapshots,
        ..
    } = marked;
    Ok(PrunePlan {
        now,
        grace: options.grace,
        snapshots,
        live_chunks: live_set.len(),
        packs: found.listed.len(),
        bytes: found.listed.values().sum(),
        ripe_records: found.ripe().map(|(id, _)| *id).collect(),
        forgotten: found.forgotten(),
        delete,
        resurrect,
        adopt,
        condemn,
        repack,
        seen_orphans,
        unused_bytes_after,
        index_files: found.index_files,
        listed: found.listed,
        live,
        _live_set: live_set,
    })
}

/// Step 5: the packs to repack, least live first, while unused bytes
/// exceed `max_unused` of the total and the bytes read stay within
/// `max_repack_bytes`; and the unused bytes left after.
fn choose_repacks(
    uses: &HashMap<PackId, PackUse>,
    condemn: &[(PackId, u64)],
    options: &PruneOptions,
) -> (Vec<Repack>, u64) {
    let condemned: HashSet<PackId> = condemn.iter().map(|(p, _)| *p).collect();
    let staying = || uses.iter().filter(|(p, _)| !condemned.contains(p));
    let mut total: u64 = staying().map(|(_, u)| u.size).sum();
    let mut unused: u64 = staying()
        .filter(|(_, u)| u.old)
        .map(|(_, u)| u.dead_bytes)
        .sum();
    let mut candidates: Vec<(PackId, PackUse)> = staying()
        .filter(|(_, u)| u.old && u.dead_bytes > 0)
        .map(|(p, u)| (*p, *u))
        .collect();
    candidates.sort_by(|a, b| {
        a.1.live_share()
            .total_cmp(&b.1.live_share())
            .then(a.0.cmp(&b.0))
    });
    let mut repack = Vec::new();
    let mut repack_bytes = 0u64;
    for (pack, u) in candidates {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let limit = (total as f64 * options.max_unused) as u64;
        if unused <= limit || repack_bytes.saturating_add(u.size) > options.max_repack_bytes {
            break;
        }
        repack_bytes += u.size;
        unused -= u.dead_bytes;
        total -= u.dead_bytes;
        repack.push(Repack {
            pack,
            kind: u.kind,
            size: u.size,
            unused: u.dead_bytes,
        });
    }
    (repack, unused)
}

fn hex<S: Serializer>(id: &PackId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(id)
}

#[allow(clippy::ptr_arg)] // serde passes the field as it is
fn hex_ids<S: Serializer, T: Display>(ids: &Vec<T>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(ToString::to_string))
}

#[allow(clippy::ptr_arg)] // serde passes the field as it is
fn hex_sized<S: Serializer>(
    packs: &Vec<(PackId, u64)>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(packs.iter().map(|(p, size)| (p.to_string(), size)))
}
