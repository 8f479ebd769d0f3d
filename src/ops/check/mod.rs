//! `check`: verifies a repository and names what is damaged and which
//! snapshots and files it affects.
//!
//! Structure (always):
//! 1. every index file authenticates and decodes;
//! 2. every pack an index file names exists with the size it records, and
//!    its header (two ranged reads) lists exactly the index's entries;
//! 3. packs that no index file names are reported as orphans (not damage:
//!    a backup may be running, or was killed; the next one adopts them);
//! 4. every snapshot authenticates, every tree blob it reaches loads, and
//!    every data chunk a file needs is in the index or, through the chunk
//!    store's `Locator`, in the header of a pack no index file names. Such
//!    a pack is not damage but a note: one a prune record condemns is kept
//!    by the next prune after the grace (prune's condemn race,
//!    format-spec/12); an orphan is adopted by `kura repair index` (or the
//!    next backup). Trees are walked once
//!    per tree id (results are memoized), so unchanged directories shared
//!    by many snapshots cost one visit; the walk is `snapshot::walk`'s;
//! 5. every prune record authenticates, and every key slot decodes (a slot
//!    that does not is damage no password can use; whether a slot's sealed
//!    key is whole only its own password can tell).
//!
//! Data (`read_data`): the chosen packs (indexed or not: a reader may need
//! an unindexed one) are downloaded whole and every blob
//! is authenticated, decompressed and its id recomputed
//! (`verify_pack_blobs`); the blobs that fail count as damaged in step 4
//! (all of a pack's blobs, if its header, layout or padding fails). A subset takes the
//! packs verified longest ago first (never-verified packs first), using the
//! verification times kept in the local cache, so that a nightly `1/7`
//! covers every pack within a week.
//!
//! A blob stored in several packs is lost only when no index record of a
//! sound pack lists it: a stale record (one that disagrees with a pack
//! another record describes correctly) is damage to its index file, not to
//! the pack. Packs found missing or damaged are marked in the local cache,
//! and packs read whole unmarked, so that backups and `repair snapshots`
//! stop relying on damaged ones (`ChunkIndex::record_pack_health`).
//!
//! Listing failures and backend errors are errors ("could not check"),
//! never damage; damage is what the repository's own bytes show.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::chunkstore::ChunkStore;
use crate::chunkstore::index::{ChunkIndex, read_index_file, summarize_current_index_files};
use crate::chunkstore::pack::verify_pack_blobs;
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::{PackEntry, PackHeader, PackKind};
use crate::format::prune::PruneRecord;
use crate::format::snapshot::Snapshot;
use crate::id::{ChunkId, IndexId, PackId, RecordId, SnapshotId};
use crate::repository::snapshots;
use crate::repository::{Repository, records};

mod subset;
mod trees;

use subset::choose;
pub use subset::{Subset, parse_size};
use trees::TreeChecker;

/// What to check.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CheckOptions {
    /// Read pack contents too; `None` checks structure only.
    pub read_data: Option<Subset>,
    /// Dates the packs verified and marked damaged, in the cache.
    pub clock: Clock,
}

/// One problem found, with what it affects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The damaged object, e.g. `pack 3fa2...`, `index 9c1e...`,
    /// `snapshot 77ab...`, `blob 12cd...`.
    pub object: String,
    pub problem: String,
    /// Snapshot files (and trees) that cannot be restored whole because of
    /// it: `<snapshot id> <path>`.
    pub affects: Vec<String>,
}

impl Damage {
    /// The command that repairs this kind of damage, for the message that
    /// names it: a damaged index file is superseded by `repair index`, a
    /// damaged snapshot object is removed by `repair snapshots`, a damaged
    /// prune record is deleted by `repair index` (which indexes every pack
    /// again, those the record condemned included), a key slot that does
    /// not decode is removed by `key remove`, and lost
    /// packs, trees or blobs are cut out of the snapshots that need them
    /// and then out of the index. `None` for damage no command repairs.
    pub fn repair(&self) -> Option<&'static str> {
        let kind = self.object.split(' ').next().unwrap_or_default();
        match kind {
            "index" | "prune" => Some("kura repair index"),
            "key" => Some("kura key remove ID, with another password"),
            "snapshot" => Some("kura repair snapshots"),
            "pack" | "tree" | "blob" => {
                Some("kura repair snapshots, then kura repair index --read-data")
            }
            _ => None,
        }
    }
}

/// What a check found. Serialized with condemned packs as a count.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub packs: usize,
    pub index_files: usize,
    pub snapshots: usize,
    pub trees: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Packs no index file names (left by an interrupted backup).
    pub orphan_packs: Vec<PackId>,
    /// Packs a prune record condemned, awaiting deletion (format-spec/12);
    /// not orphans, not damage.
    #[serde(serialize_with = "serialize_count")]
    pub condemned_packs: Vec<PackId>,
    /// Not damage: unindexed packs snapshots need, with what happens to them.
    pub notes: Vec<String>,
    /// Names in the object folders that are no object (a sync tool's
    /// conflicted copy, a README): ignored by every command, reported here,
    /// not damage.
    pub strays: Vec<String>,
    pub damage: Vec<Damage>,
}

fn serialize_count<S: serde::Serializer>(packs: &[PackId], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(packs.len() as u64)
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// Checks `repo`; `index` must have been synced with it.
///
/// # Errors
/// Listing and backend errors (the check could not be completed), cache
/// errors. Damage is not an error: it is in the report.
pub fn check(repo: &Repository, index: &ChunkIndex, options: &CheckOptions) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let listed: HashMap<PackId, u64> = repo.list_packs()?;
    report.packs = listed.len();
    report.strays = repo.strays()?;
    let records = check_records(repo, &listed, &mut report)?;
    let indexed: HashSet<PackId> = records
        .sound
        .iter()
        .flat_map(|(_, packs)| packs.iter().map(|(p, _)| *p))
        .collect();
    report.orphan_packs = listed
        .keys()
        .filter(|p| !indexed.contains(p))
        .copied()
        .collect();
    report.orphan_packs.sort();
    let condemning = check_prune_records(repo, &mut report)?;
    for (id, e) in repo.damaged_keys()? {
        report
            .damage
            .push(damage(format!("key slot {id}"), &e, Vec::new()));
    }
    // Damaged packs, with the blobs that fail if they are known (`None`:
    // all of them).
    let mut damaged: HashMap<PackId, Option<HashSet<ChunkId>>> =
        records.damaged_packs.iter().map(|p| (*p, None)).collect();
    let mut verified = Vec::new();
    if let Some(subset) = options.read_data {
        // Every listed pack, unindexed ones too (a reader may need them);
        // packs the structure check already found damaged are not read
        // (or reported) again.
        let mut candidates: Vec<(PackId, u64)> = listed
            .iter()
            .filter(|(p, _)| !damaged.contains_key(p))
            .map(|(p, s)| (*p, *s))
            .collect();
        candidates.sort();
        let chosen = choose(index, candidates, subset)?;
        let (whole, bad) = read_packs(repo, &chosen, &indexed, &mut report)?;
        index.mark_verified(&whole, options.clock.now_unix())?;
        damaged.extend(bad);
        verified = whole;
    }
    let marked: Vec<PackId> = damaged.keys().copied().collect();
    index.record_pack_health(&marked, &verified, options.clock.now_unix())?;
    index.refill(repo)?;
    let bad_blobs = lost_blobs(repo, &records.sound, &damaged)?;
    let now = options.clock.now_ns();
    let needed = walk_snapshots(repo, index, (&bad_blobs, &damaged), now, &mut report)?;
    let notes = unindexed_notes(&needed, &condemning, &damaged);
    report.notes.extend(notes);
    Ok(report)
}

/// Step 4 for every snapshot: damage below each is gathered per object.
/// Returns the unindexed packs snapshots need, with the snapshots.
fn walk_snapshots(
    repo: &Repository,
    index: &ChunkIndex,
    (bad_blobs, damaged): (&HashMap<ChunkId, PackId>, &HashMap<PackId, FailedBlobs>),
    now_ns: i64,
    report: &mut CheckReport,
) -> Result<HashMap<PackId, Vec<SnapshotId>>> {
    // Trees are read from the repository, not from the cache: that is
    // what is being checked.
    let options = crate::chunkstore::ChunkStoreOptions {
        tree_cache: false,
        ..Default::default()
    };
    let store = ChunkStore::new(repo, index, options);
    let mut walker = TreeChecker {
        store: &store,
        index,
        bad_blobs,
        damaged,
        memo: HashMap::new(),
        open: Vec::new(),
    };
    let mut by_object: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut needed: HashMap<PackId, Vec<SnapshotId>> = HashMap::new();
    for id in repo.list::<Snapshot>()? {
        report.snapshots += 1;
        let loaded = snapshots::load(repo, &id);
        let future = loaded
            .as_ref()
            .ok()
            .filter(|s| crate::snapshot::is_future(s, now_ns));
        if let Some(s) = future {
            report.notes.push(format!(
                "snapshot {id} is dated {} s in the future: it is never latest, never a \
                 parent, and no retention rule counts it (a wrong clock, or a forgery by \
                 whoever wrote it: see `kura snapshots` for its writer)",
                (s.time - now_ns) / 1_000_000_000
            ));
        }
        let root = match loaded.and_then(|s| s.tree_id()) {
            Ok(root) => root,
            Err(e) if is_damage(&e) => {
                report
                    .damage
                    .push(damage(format!("snapshot {id}"), &e, Vec::new()));
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in walker.walk(&root)?.iter() {
            if let Some(pack) = p.unindexed {
                let users = needed.entry(pack).or_default();
                if users.last() != Some(&id) {
                    users.push(id);
                }
                continue;
            }
            let path = String::from_utf8_lossy(&p.path).into_owned();
            by_object
                .entry((p.object.clone(), p.what.clone()))
                .or_default()
                .push(format!("{} /{path}", short(&id)));
        }
    }
    report.trees = walker.memo.len();
    // Tree blobs read from unindexed packs (no snapshot named: the walk
    // reads each tree once).
    for pack in store.unindexed_packs_used() {
        needed.entry(pack).or_default();
    }
    let mut found: Vec<Damage> = by_object
        .into_iter()
        .map(|((object, problem), affects)| Damage {
            object,
            problem,
            affects,
        })
        .collect();
    found.sort_by(|a, b| a.object.cmp(&b.object));
    report.damage.extend(found);
    Ok(needed)
}

/// One note per unindexed pack a snapshot needs: a condemned one is kept
/// by the next prune after the grace; an orphan is adopted by
/// `kura repair index`. A damaged one has its own note (`report_damaged_pack`).
fn unindexed_notes(
    needed: &HashMap<PackId, Vec<SnapshotId>>,
    condemning: &HashMap<PackId, RecordId>,
    damaged: &HashMap<PackId, FailedBlobs>,
) -> Vec<String> {
    let mut packs: Vec<&PackId> = needed.keys().filter(|p| !damaged.contains_key(p)).collect();
    packs.sort();
    packs
        .into_iter()
        .map(|pack| {
            let users = &needed[pack];
            let mut who: Vec<String> = users.iter().take(3).map(short).collect();
            if users.len() > 3 {
                who.push(format!("{} more", users.len() - 3));
            }
            let who = match users.len() {
                0 => "a snapshot's trees need it".to_owned(),
                1 => format!("snapshot {} needs it", who[0]),
                _ => format!("snapshots {} need it", who.join(", ")),
            };
            match condemning.get(pack) {
                Some(record) => format!(
                    "pack {pack} is condemned by prune record {record} but {who}; \
                     the next prune after the grace keeps it"
                ),
                None => format!(
                    "pack {pack} is in no index file but {who}; `kura repair index` adopts it"
                ),
            }
        })
        .collect()
}

/// Prune records must authenticate and be honoured (the admin's, dated
/// sanely); the packs they condemn are told apart from orphans.
fn check_prune_records(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<HashMap<PackId, RecordId>> {
    let mut condemned = HashMap::new();
    let now = repo.clock().now_unix();
    for id in repo.list::<PruneRecord>()? {
        match records::load_judged(repo, &id, None) {
            Ok((r, None)) => {
                // Wrongly dated: the admin's, but prune leaves it out
                // (a clock that was wrong, or is); told, not damage.
                if let Some(why) = records::refused_date(repo, &r, now) {
                    report.notes.push(format!(
                        "prune record {id} is {why}; prune ignores it until it is not"
                    ));
                }
                for (p, _) in &r.condemned {
                    condemned.entry(*p).or_insert(id);
                }
            }
            // Forged, or a put-only key's: prune leaves it out, and so
            // does the tally of condemned packs.
            Ok((_, Some(why))) => {
                let e = Error::corrupt(format!("ignored by prune: {why}"));
                report
                    .damage
                    .push(damage(format!("prune record {id}"), &e, Vec::new()));
            }
            Err(e) if is_damage(&e) => {
                report
                    .damage
                    .push(damage(format!("prune record {id}"), &e, Vec::new()));
            }
            Err(e) => return Err(e),
        }
    }
    let (waiting, orphans): (Vec<PackId>, Vec<PackId>) = report
        .orphan_packs
        .iter()
        .partition(|p| condemned.contains_key(*p));
    report.condemned_packs = waiting;
    report.orphan_packs = orphans;
    Ok(condemned)
}

fn short(id: &SnapshotId) -> String {
    id.to_hex()[..16].to_owned()
}

pub(super) fn is_damage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound)
}

fn damage(object: String, e: &Error, affects: Vec<String>) -> Damage {
    Damage {
        object,
        problem: e.to_string(),
        affects,
    }
}

/// What steps 1 and 2 found about the pack records of the current index
/// files.
struct Records {
    /// Per current index file, per pack record: the pack, and whether it
    /// exists with the recorded size and a header equal to the record.
    sound: Vec<(IndexId, Vec<(PackId, bool)>)>,
    /// Packs no record describes correctly (missing ones included).
    damaged_packs: HashSet<PackId>,
}

/// Steps 1 and 2: every index file authenticates (damaged ones are
/// reported, superseded ones included), and each pack record of a current
/// file agrees with the listing and the pack's header (read once per
/// pack). A file listed and gone when read was merged by a prune meanwhile
/// (format-spec/06): `index/` is listed again, a few times, before a file
/// still missing counts as damage. A record that disagrees is damage,
/// named by the pack; the pack itself is damaged only if no record agrees
/// with it.
///
/// One index file is held at a time, and of each pack's header a digest,
/// so memory grows with the number of packs, not of chunks.
fn check_records(
    repo: &Repository,
    listed: &HashMap<PackId, u64>,
    report: &mut CheckReport,
) -> Result<Records> {
    const ROUNDS: usize = 4;
    let mut headers: HashMap<PackId, std::result::Result<blake3::Hash, String>> = HashMap::new();
    let (files, current) = summarize_current_index_files(repo, ROUNDS, |file_id, file| {
        let mut problems = Vec::with_capacity(file.packs.len());
        for pack in &file.packs {
            let problem = match listed.get(&pack.id) {
                None => Some(format!("missing (named by index {file_id})")),
                Some(&size) if size != pack.size => Some(format!(
                    "is {size} bytes; index {file_id} says {}",
                    pack.size
                )),
                Some(&size) => {
                    if let Entry::Vacant(slot) = headers.entry(pack.id) {
                        slot.insert(match repo.read_pack_header(&pack.id, size) {
                            Ok(h) => Ok(header_digest(&h)),
                            Err(e) if is_damage(&e) => Err(e.to_string()),
                            Err(e) => return Err(e),
                        });
                    }
                    match &headers[&pack.id] {
                        Ok(h) if *h == record_digest(pack.kind, &pack.entries) => None,
                        Ok(_) => Some(format!("header disagrees with index {file_id}")),
                        Err(e) => Some(e.clone()),
                    }
                }
            };
            problems.push((pack.id, problem));
        }
        Ok(problems)
    })?;
    report.index_files = files.listed.len();
    for (id, e) in &files.damaged {
        report
            .damage
            .push(damage(format!("index {id}"), e, Vec::new()));
    }
    let mut described = HashSet::new();
    let mut failed = HashSet::new();
    let mut sound = Vec::with_capacity(current.len());
    for (file_id, problems) in current {
        let mut oks = Vec::with_capacity(problems.len());
        for (pack, problem) in problems {
            oks.push((pack, problem.is_none()));
            if let Some(problem) = problem {
                failed.insert(pack);
                report.damage.push(Damage {
                    object: format!("pack {pack}"),
                    problem,
                    affects: Vec::new(),
                });
            } else {
                described.insert(pack);
            }
        }
        sound.push((file_id, oks));
    }
    Ok(Records {
        sound,
        damaged_packs: failed.difference(&described).copied().collect(),
    })
}

/// A digest of what a pack header says (its kind and entries), to compare
/// index records with it without keeping every header.
fn header_digest(header: &PackHeader) -> blake3::Hash {
    record_digest(header.kind, &header.entries)
}

/// [`header_digest`] of a pack of `kind` with `entries`.
fn record_digest(kind: PackKind, entries: &[PackEntry]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[kind as u8]);
    for e in entries {
        h.update(e.id.as_bytes());
        h.update(&e.offset.to_le_bytes());
        h.update(&e.stored_len.to_le_bytes());
        h.update(&e.raw_offset.to_le_bytes());
        h.update(&e.raw_len.to_le_bytes());
    }
    h.finalize()
}

/// The blobs with no copy that can be relied on, each with a damaged pack
/// that holds it: a copy counts if its record is sound and the pack did not
/// fail as a whole or at that blob.
///
/// With no damage there is nothing to look for. Otherwise the current
/// index files are read again, one at a time, twice: for the copies that
/// fail, then for sound copies of those (a file gone meanwhile, merged by
/// a prune, is skipped: its replacement names the same copies).
fn lost_blobs(
    repo: &Repository,
    sound: &[(IndexId, Vec<(PackId, bool)>)],
    damaged: &HashMap<PackId, FailedBlobs>,
) -> Result<HashMap<ChunkId, PackId>> {
    let unsound = sound
        .iter()
        .any(|(_, packs)| packs.iter().any(|(_, ok)| !ok));
    if damaged.is_empty() && !unsound {
        return Ok(HashMap::new());
    }
    // Every copy the current files record, with whether it can be relied
    // on, one file at a time.
    let copies = |f: &mut dyn FnMut(ChunkId, PackId, bool)| -> Result<()> {
        for (file_id, oks) in sound {
            let file = match read_index_file(repo, file_id) {
                Ok(f) => f,
                Err(e) if is_damage(&e) => continue,
                Err(e) => return Err(e),
            };
            for (pack, (_, ok)) in file.packs.iter().zip(oks) {
                for e in &pack.entries {
                    let good = *ok
                        && match damaged.get(&pack.id) {
                            None => true,
                            Some(None) => false,
                            Some(Some(bad)) => !bad.contains(&e.id),
                        };
                    f(e.id, pack.id, good);
                }
            }
        }
        Ok(())
    };
    let mut lost: HashMap<ChunkId, PackId> = HashMap::new();
    copies(&mut |id, pack, good| {
        if !good {
            lost.insert(id, pack);
        }
    })?;
    if !lost.is_empty() {
        copies(&mut |id, _, good| {
            if good {
                lost.remove(&id);
            }
        })?;
    }
    Ok(lost)
}

/// What reading a pack whole showed: the blobs that fail.
type PackOutcome = Result<Vec<(ChunkId, Error)>>;

/// The blobs of a damaged pack that fail; `None`: all of them (the pack
/// failed as a whole).
pub(super) type FailedBlobs = Option<HashSet<ChunkId>>;

/// Packs read whole, and damaged packs with their failed blobs.
type ReadOutcome = (Vec<PackId>, Vec<(PackId, FailedBlobs)>);

/// Reads the chosen packs whole, several at a time, and verifies every blob;
/// an unindexed pack (not in `indexed`) deleted since it was listed is
/// skipped (a prune swept it), not damage. Returns the packs found whole, and those found damaged with the blobs
/// that fail (`None` if the pack failed as a whole).
fn read_packs(
    repo: &Repository,
    chosen: &[(PackId, u64)],
    indexed: &HashSet<PackId>,
    report: &mut CheckReport,
) -> Result<ReadOutcome> {
    // As many packs in flight as the backend suggests (two locally, more
    // over a network).
    let results: Vec<(PackId, u64, PackOutcome)> =
        super::with_io_threads(repo.io_concurrency(), || {
            Ok(chosen
                .par_iter()
                .map(|(id, size)| {
                    let outcome = repo
                        .read_pack(id, None)
                        .and_then(|bytes| verify_pack_blobs(repo.sealer(), id, &bytes))
                        .map(|(_, bad)| bad);
                    (*id, *size, outcome)
                })
                .collect())
        })?;
    let (mut whole, mut damaged) = (Vec::new(), Vec::new());
    for (id, size, outcome) in results {
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::NotFound)
            && !indexed.contains(&id)
        {
            // An unindexed pack gone since the listing: a prune swept it.
            continue;
        }
        report.packs_read += 1;
        report.bytes_read += size;
        match outcome {
            Ok(bad) if bad.is_empty() => whole.push(id),
            Ok(bad) => {
                let problem = format!("{} damaged blobs; first: {}", bad.len(), bad[0].1);
                report_damaged_pack(report, id, indexed, problem);
                damaged.push((id, Some(bad.into_iter().map(|(b, _)| b).collect())));
            }
            Err(e) if is_damage(&e) => {
                damaged.push((id, None));
                report_damaged_pack(report, id, indexed, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok((whole, damaged))
}

/// A damaged indexed pack is damage; a damaged unindexed one is a note
/// (the files that need it are damage, found by the walk; prune deletes it
/// once nothing does).
fn report_damaged_pack(
    report: &mut CheckReport,
    id: PackId,
    indexed: &HashSet<PackId>,
    problem: String,
) {
    if indexed.contains(&id) {
        report.damage.push(Damage {
            object: format!("pack {id}"),
            problem,
            affects: Vec::new(),
        });
    } else {
        report.notes.push(format!(
            "pack {id} is in no index file and damaged ({problem}); files that need it \
             are listed as damage, and prune deletes it once nothing does"
        ));
    }
}
