//! `repair index` and `repair snapshots`.
//!
//! `repair index` rebuilds the repository's index from the packs
//! themselves. Every pack's header is read and authenticated (with
//! `read_data`, the whole pack is verified, so packs with damaged blobs are
//! left out too); new index files list the good packs and supersede every
//! index file that existed when the repair started (format-spec/06,
//! "Supersedes list"), then the old files are deleted.
//!
//! Afterwards no index entry points into a missing or damaged pack, so
//! the next backup stores such chunks again and its snapshot is whole;
//! snapshots that needed them stay damaged (`check` names them) until
//! `repair snapshots` rewrites them.
//!
//! A prune record that does not authenticate stops every backup and prune
//! (it could condemn any pack, format-spec/12), and no reader can learn
//! which packs it condemned; `repair index` deletes it after the new index
//! files are written. That is safe: deleting a record only ever keeps
//! packs, and every pack the record condemned is listed in the new index
//! files like any other, so a later prune condemns again what no snapshot
//! needs.
//!
//! Crash safety: the new files are written before any old one is deleted,
//! and a reader disregards a file that an authenticated file supersedes; a
//! crash leaves old and new files side by side, which is consistent. A
//! backup running meanwhile is safe: its packs are either listed here or
//! named by its own index file, written after the listing and therefore
//! not superseded.
//!
//! `repair snapshots` rewrites snapshots whose trees need lost data so that
//! they restore what is left (format-spec/11, "Repaired snapshots"). A blob
//! is lost when no index names it, or names it only in packs that are
//! missing or that a check found damaged, and it cannot be read from them
//! either; a blob that still reads whole from a damaged pack is stored
//! again instead. A blob in a pack no index file names (condemned by a
//! prune record while a backup committed a snapshot needing it, or an
//! orphan after a lost index file) is present, not lost: it is read
//! through the chunk store's `Locator` and nothing is cut or stored, so
//! this command never drops data that is still in a pack. A file with a lost data chunk or extent list is left
//! out; a directory whose tree is lost stays as an empty directory with
//! its metadata. New trees are written through the chunk store and
//! flushed (packs, then index files) before the new snapshot is written;
//! only then is the old one deleted. A snapshot that is whole is not
//! touched; one with nothing readable (its object or its root tree is
//! lost) is deleted.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::chunkstore::commit::{Started, commit_check};
use crate::chunkstore::index::{ChunkIndex, write_index_file};
use crate::chunkstore::pack::verify_pack;
use crate::chunkstore::{ChunkStore, ChunkStoreOptions};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack, PACKS_PER_FILE};
use crate::format::pack::PackKind;
use crate::format::prune::PruneRecord;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Payload};
use crate::id::{ChunkId, IndexId, PackId, RecordId, SnapshotId};
use crate::repository::Repository;
use crate::repository::{records, snapshots};
use crate::snapshot::tree::{self, ContentBuilder};

/// How to repair.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairIndexOptions {
    /// Verify every pack whole, not only its header.
    pub read_data: bool,
    /// Report, change nothing.
    pub dry_run: bool,
    /// Dates what was learnt about packs, in the cache.
    pub clock: Clock,
}

/// What the repair found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairIndexReport {
    pub packs_indexed: usize,
    /// Packs left out, with why (`[{"pack", "problem"}]`).
    #[serde(serialize_with = "serialize_dropped_packs")]
    pub packs_dropped: Vec<(PackId, String)>,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    /// Prune records deleted because they do not authenticate, with why
    /// (`[{"record", "problem"}]`).
    #[serde(serialize_with = "serialize_damaged_records")]
    pub prune_records_deleted: Vec<(RecordId, String)>,
}

fn serialize_damaged_records<S: serde::Serializer>(
    records: &[(RecordId, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Damaged<'a> {
        record: RecordId,
        problem: &'a str,
    }
    s.collect_seq(records.iter().map(|(record, problem)| Damaged {
        record: *record,
        problem,
    }))
}

/// The prune records that do not authenticate, with why.
fn damaged_prune_records(repo: &Repository) -> Result<Vec<(RecordId, String)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match records::load(repo, &id) {
            Err(e) if e.kind() == ErrorKind::Corrupt => out.push((id, e.to_string())),
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(out)
}

fn serialize_dropped_packs<S: serde::Serializer>(
    packs: &[(PackId, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Dropped<'a> {
        pack: PackId,
        problem: &'a str,
    }
    s.collect_seq(packs.iter().map(|(pack, problem)| Dropped {
        pack: *pack,
        problem,
    }))
}

/// Rebuilds the index files from the packs and refills `index` (the cache).
///
/// # Errors
/// Listing and backend errors other than damage; nothing is deleted unless
/// every new index file was written.
pub fn repair_index(
    repo: &Repository,
    index: &ChunkIndex,
    options: &RepairIndexOptions,
) -> Result<RepairIndexReport> {
    let old: Vec<IndexId> = repo.list::<IndexFile>()?;
    let mut report = RepairIndexReport::default();
    let mut good = Vec::new();
    let mut listed: Vec<(PackId, u64)> = repo.list_packs()?.into_iter().collect();
    listed.sort_unstable();
    for (id, size) in listed {
        let header = if options.read_data {
            repo.read_pack(&id, None)
                .and_then(|bytes| verify_pack(repo.sealer(), &id, &bytes))
        } else {
            repo.read_pack_header(&id, size)
        };
        match header {
            Ok(h) => good.push(IndexedPack {
                id,
                kind: h.kind,
                size,
                entries: h.entries,
            }),
            Err(e) if matches!(e.kind(), crate::ErrorKind::Corrupt) => {
                report.packs_dropped.push((id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    report.packs_indexed = good.len();
    report.prune_records_deleted = damaged_prune_records(repo)?;
    if options.dry_run {
        return Ok(report);
    }
    // What was learnt about packs goes to the cache as a check's would.
    let dropped: Vec<PackId> = report.packs_dropped.iter().map(|(id, _)| *id).collect();
    let whole: Vec<PackId> = if options.read_data {
        good.iter().map(|p| p.id).collect()
    } else {
        Vec::new()
    };
    index.record_pack_health(&dropped, &whole, options.clock.now_unix())?;
    let level = crate::chunkstore::ChunkStoreOptions::default().compression_level;
    for chunk in good.chunks(PACKS_PER_FILE) {
        let file = IndexFile {
            supersedes: old.clone(),
            packs: chunk.to_vec(),
        };
        write_index_file(repo, &file, level)?;
        report.index_files_written += 1;
    }
    if good.is_empty() && !old.is_empty() {
        // An empty file still supersedes the old ones.
        let file = IndexFile {
            supersedes: old.clone(),
            packs: Vec::new(),
        };
        write_index_file(repo, &file, level)?;
        report.index_files_written += 1;
    }
    for id in &old {
        repo.delete::<IndexFile>(id)?;
        report.index_files_deleted += 1;
    }
    if !report.prune_records_deleted.is_empty() {
        // A newer record first, so that no client that saw the damaged
        // ones takes their going for a rollback (their forgotten names,
        // unreadable, are lost: format-spec/12, "Forgotten snapshots").
        let marker = PruneRecord::forgetting(options.clock.now_unix(), Vec::new());
        records::save(repo, &RecordId::random(), &marker)?;
    }
    for (id, _) in &report.prune_records_deleted {
        repo.delete::<PruneRecord>(id)?;
    }
    index.sync(repo)?;
    index.persist()?;
    index.refill(repo)?;
    Ok(report)
}

/// The tag every snapshot written by `repair snapshots` carries.
pub const REPAIRED_TAG: &str = "repaired";

/// Which snapshots to repair, and whether to change anything.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// The snapshots to look at; empty means every snapshot.
    pub snapshots: Vec<SnapshotId>,
    /// Report what would be dropped; write and delete nothing.
    pub dry_run: bool,
    /// Dates the forget record written before the old snapshots go.
    pub clock: Clock,
}

/// What a repaired snapshot no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    /// The path from the snapshot's root, `/`-separated, without a leading
    /// `/` (the root tree mirrors absolute paths: `srv/www/index.php`).
    /// Serialized absolute, as text (`/srv/www/index.php`).
    #[serde(serialize_with = "serialize_absolute")]
    pub path: Vec<u8>,
    pub kind: DroppedKind,
    /// The lost object and why, e.g. `blob 3fa2...: ... not found`.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DroppedKind {
    /// A file with lost content, left out of its directory.
    #[serde(rename = "file")]
    File,
    /// A directory whose tree is lost, kept empty with its metadata.
    #[serde(rename = "directory emptied")]
    Directory,
}

fn serialize_absolute<S: serde::Serializer>(
    path: &[u8],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("/{}", String::from_utf8_lossy(path)))
}

/// What happens to a damaged snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Replaced by a new snapshot (its id; `None` on a dry run).
    Replaced(Option<SnapshotId>),
    /// Deleted: nothing of it can be read (why).
    Removed(String),
}

/// `{"action": "replaced" | "removed", "new_snapshot", "reason"}`, the
/// two that do not apply `null`.
impl serde::Serialize for SnapshotAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (action, new, reason) = match self {
            Self::Replaced(new) => ("replaced", *new, None),
            Self::Removed(why) => ("removed", None, Some(why)),
        };
        let mut out = s.serialize_map(Some(3))?;
        out.serialize_entry("action", action)?;
        out.serialize_entry("new_snapshot", &new)?;
        out.serialize_entry("reason", &reason)?;
        out.end()
    }
}

/// One damaged snapshot; its action's fields sit beside the others.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRepair {
    pub snapshot: SnapshotId,
    #[serde(flatten)]
    pub action: SnapshotAction,
    pub dropped: Vec<Dropped>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    pub snapshots_checked: usize,
    /// The damaged snapshots only; whole ones are not listed. Serialized
    /// as `snapshots`.
    #[serde(rename = "snapshots")]
    pub repaired: Vec<SnapshotRepair>,
    /// Data chunks that still read whole from a pack found damaged and
    /// were stored again (on a dry run: would be).
    pub blobs_salvaged: usize,
}

/// Rewrites the snapshots that need lost data (module documentation).
/// `index` must have been synced.
///
/// # Errors
/// Listing, backend and cache errors (damage is not an error). Snapshots
/// replaced before an error stay replaced; the rest are untouched.
pub fn repair_snapshots(
    repo: &Repository,
    index: &ChunkIndex,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let listed: HashSet<PackId> = repo.list_packs()?.into_keys().collect();
    let started = Started::now();
    // Trees come from the repository only: what is lost there is what a
    // repair must see, whatever this machine's cache still holds.
    let store_options = ChunkStoreOptions {
        tree_cache: false,
        ..ChunkStoreOptions::default()
    };
    let store = ChunkStore::new(repo, index, store_options);
    store.distrust(index.distrusted_packs(&listed)?);
    let mut ids = if options.snapshots.is_empty() {
        snapshots::list_ids(repo)?
    } else {
        options.snapshots.clone()
    };
    ids.sort();
    ids.dedup();
    let mut rewriter = Rewriter {
        store: &store,
        dry_run: options.dry_run,
        trees: HashMap::new(),
        chunks: HashMap::new(),
        salvaged: 0,
    };
    let mut report = RepairSnapshotsReport::default();
    let mut plans = Vec::new();
    for id in ids {
        report.snapshots_checked += 1;
        if let Some(plan) = plan_repair(repo, &mut rewriter, id)? {
            plans.push(plan);
        }
    }
    report.blobs_salvaged = rewriter.salvaged;
    if !options.dry_run {
        // The order of format-spec/11, "Repaired snapshots": new trees and
        // blobs durable and indexed, then each new snapshot, then the old
        // one is deleted.
        store.flush()?;
        // The backup's commit check: nothing the new snapshots need may be
        // condemned by a prune that ran meanwhile.
        commit_check(&store, &started)?;
        let existing = if plans.is_empty() {
            Vec::new()
        } else {
            snapshots::list(repo)?
        };
        if !plans.is_empty() {
            // format-spec/12, "Forgotten snapshots": named before deleted.
            let gone = plans.iter().map(|p| p.repair.snapshot).collect();
            let record = PruneRecord::forgetting(options.clock.now_unix(), gone);
            records::save(repo, &RecordId::random(), &record)?;
        }
        for plan in &mut plans {
            commit(repo, &existing, plan)?;
        }
    }
    report.repaired = plans.into_iter().map(|p| p.repair).collect();
    Ok(report)
}

/// A damaged snapshot and what to write in its place.
struct Plan {
    repair: SnapshotRepair,
    /// The snapshot with its new root; `None` to delete it.
    replacement: Option<Snapshot>,
}

fn is_damage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound)
}

/// Decides what to do with snapshot `id`: `None` if it is whole.
fn plan_repair(
    repo: &Repository,
    rewriter: &mut Rewriter<'_, '_>,
    id: SnapshotId,
) -> Result<Option<Plan>> {
    let removed = |why: String| Plan {
        repair: SnapshotRepair {
            snapshot: id,
            action: SnapshotAction::Removed(why),
            dropped: Vec::new(),
        },
        replacement: None,
    };
    let snap = match snapshots::load(repo, &id) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            return Ok(Some(removed(format!(
                "the snapshot object is damaged: {e}"
            ))));
        }
        // Deleted since the listing (a concurrent forget): nothing to do.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let out = rewriter.tree(&snap.tree_id()?)?;
    if let Some(why) = &out.lost {
        return Ok(Some(removed(format!("its root tree is lost: {why}"))));
    }
    if out.dropped.is_empty() {
        return Ok(None);
    }
    let mut replacement = snap;
    replacement.tree = out.id.to_hex();
    // No longer all of the backup it copied: a later copy brings that back.
    replacement.copy_of = None;
    if !replacement.tags.iter().any(|t| t == REPAIRED_TAG) {
        replacement.tags.push(REPAIRED_TAG.to_owned());
    }
    Ok(Some(Plan {
        repair: SnapshotRepair {
            snapshot: id,
            action: SnapshotAction::Replaced(None),
            dropped: out.dropped.clone(),
        },
        replacement: Some(replacement),
    }))
}

/// Writes a plan: the new snapshot (unless an earlier run that crashed
/// before deleting the old one already wrote it), then deletes the old.
fn commit(repo: &Repository, existing: &[(SnapshotId, Snapshot)], plan: &mut Plan) -> Result<()> {
    let old = plan.repair.snapshot;
    if let Some(new) = &plan.replacement {
        let written = existing
            .iter()
            .find(|(id, s)| *id != old && s == new)
            .map(|(id, _)| *id);
        let id = match written {
            Some(id) => id,
            None => snapshots::save(repo, new)?,
        };
        plan.repair.action = SnapshotAction::Replaced(Some(id));
    }
    repo.delete::<Snapshot>(&old)
}

/// A tree as repaired: the id to refer to instead, and what was dropped
/// below it (paths relative to it).
struct Rewritten {
    id: ChunkId,
    /// Why the tree itself cannot be read, if it cannot.
    lost: Option<String>,
    dropped: Vec<Dropped>,
}

/// Walks trees once per id, rebuilding those with lost parts.
struct Rewriter<'a, 'r> {
    store: &'a ChunkStore<'r>,
    dry_run: bool,
    trees: HashMap<ChunkId, Rc<Rewritten>>,
    /// Chunks already looked at that have no trusted copy: why each is
    /// lost, or `None` if it was read and stored again.
    chunks: HashMap<ChunkId, Option<String>>,
    salvaged: usize,
}

impl Rewriter<'_, '_> {
    fn tree(&mut self, id: &ChunkId) -> Result<Rc<Rewritten>> {
        if let Some(done) = self.trees.get(id) {
            return Ok(Rc::clone(done));
        }
        let out = match tree::load_directory(self.store, id) {
            Ok(entries) => self.directory(id, entries)?,
            Err(e) if is_damage(&e) => Rewritten {
                id: *id,
                lost: Some(format!("tree {id}: {e}")),
                dropped: Vec::new(),
            },
            Err(e) => return Err(e),
        };
        let out = Rc::new(out);
        self.trees.insert(*id, Rc::clone(&out));
        Ok(out)
    }

    /// Rebuilds directory `id` from `entries`, leaving out lost files and
    /// emptying lost subdirectories. Stored again even when unchanged (the
    /// same bytes, so the same id): that puts a tree read from a damaged
    /// pack into a sound one.
    fn directory(&mut self, id: &ChunkId, entries: Vec<Entry>) -> Result<Rewritten> {
        let mut kept = Vec::with_capacity(entries.len());
        let mut dropped = Vec::new();
        for mut e in entries {
            match &e.payload {
                Payload::Dir(sub) => {
                    let below = self.tree(sub)?;
                    if let Some(reason) = &below.lost {
                        dropped.push(Dropped {
                            path: e.name.clone(),
                            kind: DroppedKind::Directory,
                            reason: reason.clone(),
                        });
                        e.payload = Payload::Dir(self.store_directory(Vec::new(), *sub)?);
                    } else {
                        dropped.extend(below.dropped.iter().map(|d| Dropped {
                            path: [&e.name[..], b"/", &d.path].concat(),
                            ..d.clone()
                        }));
                        e.payload = Payload::Dir(below.id);
                    }
                }
                Payload::File(content) => {
                    if let Some(reason) = self.file(content, e.meta.size)? {
                        dropped.push(Dropped {
                            path: e.name.clone(),
                            kind: DroppedKind::File,
                            reason,
                        });
                        continue;
                    }
                }
                _ => {}
            }
            kept.push(e);
        }
        Ok(Rewritten {
            id: self.store_directory(kept, *id)?,
            lost: None,
            dropped,
        })
    }

    /// Stores a directory; a dry run stores nothing and keeps `old`.
    fn store_directory(&self, entries: Vec<Entry>, old: ChunkId) -> Result<ChunkId> {
        if self.dry_run {
            Ok(old)
        } else {
            tree::store_directory(self.store, entries)
        }
    }

    /// Why a file's content is lost, or `None` if every part of it can be
    /// relied on (some perhaps after being stored again).
    fn file(&mut self, content: &Content, size: u64) -> Result<Option<String>> {
        // Extent lists read from a damaged pack go to a sound one: they are
        // stored again as they are read, one at a time (the canonical split
        // gives them the same ids), so a huge file holds one in memory.
        let mut again = (matches!(content, Content::Indirect(_)) && !self.dry_run)
            .then(|| ContentBuilder::new(self.store));
        for list in tree::extent_lists(self.store, content, size) {
            let list = match list {
                Ok(x) => x,
                Err(e) if is_damage(&e) => return Ok(Some(format!("extent list: {e}"))),
                Err(e) => return Err(e),
            };
            let ids: Vec<ChunkId> = tree::data_ids(&list);
            if !self.store.all_stored(&ids)? {
                for id in &ids {
                    if let Some(reason) = self.salvage(id)? {
                        return Ok(Some(reason));
                    }
                }
            }
            if let Some(builder) = again.as_mut() {
                for x in list {
                    builder.push(x)?;
                }
            }
        }
        if let Some(builder) = again {
            builder.finish()?;
        }
        Ok(None)
    }

    /// Makes data chunk `id` safe to rely on: `None` if a trusted copy is
    /// indexed, or if it still reads whole from an untrusted one (it is
    /// then stored again); else why it is lost.
    fn salvage(&mut self, id: &ChunkId) -> Result<Option<String>> {
        if let Some(known) = self.chunks.get(id) {
            return Ok(known.clone());
        }
        if self.store.all_stored(&[*id])? {
            return Ok(None);
        }
        // In a pack no index file names (condemned by a prune, or an
        // orphan): present, so nothing is lost and nothing is stored again.
        // The next prune keeps a condemned pack a snapshot needs, and
        // `repair index` adopts an orphan.
        if self.store.unindexed_location(id)?.is_some() && self.store.get(id).is_ok() {
            self.chunks.insert(*id, None);
            return Ok(None);
        }
        let outcome = match self.store.get(id) {
            Ok(plain) => {
                if !self.dry_run {
                    self.store.put_blob(PackKind::Data, &plain)?;
                }
                self.salvaged += 1;
                None
            }
            Err(e) if is_damage(&e) => Some(format!("blob {id}: {e}")),
            Err(e) => return Err(e),
        };
        self.chunks.insert(*id, outcome.clone());
        Ok(outcome)
    }
}
