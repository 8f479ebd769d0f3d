//! `copy`: copies snapshots from one repository (the source) into another
//! (the target), an off-site copy, sending only the data the target lacks.
//! Operations layer; it owns the invariant that a copied snapshot is
//! committed in the target exactly as a backup commits one.
//!
//! # Different keys, same chunks
//!
//! Each repository has its own keys, so the same plaintext has a different
//! chunk id in each (keyed BLAKE3) and no stored byte can be copied as it
//! is. The source's chunking is kept: every data chunk is read from the
//! source (authenticated and checked against its source id) and put whole
//! into the target's chunk store, which names it with the target's key and
//! stores it only if the target's index lacks it. The target's chunker
//! never runs, so the two repositories may have different chunker
//! parameters, with one limit: a data blob may not be longer than the
//! target's `chunker.max` (format-spec/03), so a copy into a target whose
//! `max` is smaller than the source's is refused before anything is
//! written.
//!
//! Trees name chunk ids and subtree ids, so they are rewritten, bottom-up:
//! every directory (and part of a large directory) and every extent list
//! is read from the source, each data chunk id and subtree id in it is
//! translated, and the tree is stored in the target. Names, metadata,
//! extent lengths and holes are unchanged; each tree is translated once
//! per run however many snapshots share it.
//!
//! # Sending only what the target lacks
//!
//! Translating a chunk id needs the chunk's plaintext. To avoid reading
//! chunks the target already has, copy keeps a store of translations of
//! its own (a redb file beside the target's index cache,
//! [`translations_file`], or in memory without a cache root), keyed by (source repository id, source chunk id), filled by
//! every copy. An entry is used only if the target's index still lists its
//! target id, in a pack the target's writers trust (not missing, not found
//! damaged, not condemned by a prune), with the chunk's length; otherwise
//! the chunk is read from the source again. The store is independent of
//! the index cache and outlives its rebuilds (a translation never changes:
//! both ids are functions of the plaintext and a repository's fixed keys);
//! losing it costs reads from the source, never uploads of chunks the
//! target has.
//!
//! # Snapshots
//!
//! The copy keeps every member of the source snapshot (times, host, user,
//! paths, tags, program, `incomplete`, and the summary of the original
//! backup) except three (format-spec/11, "Copies"):
//! - `tree`: the translated root tree;
//! - `parent`: the source's parent id means nothing in the target; it
//!   becomes the target's copy of that parent if there is one (snapshots
//!   are copied oldest first), else it is dropped;
//! - `copy_of`: the original backup, as (repository id, snapshot id): the
//!   source snapshot's own `copy_of` if it is itself a copy, else the
//!   source repository's id and the source snapshot's id.
//!
//! A source snapshot is already in the target when some target snapshot
//! has the same original: its `copy_of` names it, or it is that original
//! (a snapshot copied back to where it was made). Such snapshots are
//! skipped without reading their trees, so a copy run again copies nothing
//! and reads no tree and no data chunk. Into a target opened with a
//! put-only key, which cannot read its snapshots, the copies this machine
//! remembers making (beside the translations) stand in for them, while
//! their snapshot ids are still listed. A copy deleted from the target
//! (`forget`) is copied again by the next run that selects it; a copy
//! rewritten by `repair snapshots` loses its `copy_of`, so the next copy
//! brings the whole snapshot back beside the repaired one.
//!
//! # Write ordering and crashes
//!
//! The target sees exactly what a backup does (format-spec/07 and 12):
//! its prune records are read and orphan packs adopted before anything is
//! stored (an interrupted copy resumes from the packs it uploaded), packs
//! that are missing, damaged or condemned are not relied on, and for each
//! snapshot in turn the new packs are written, then the index files
//! naming them, then the commit check runs, then the snapshot is written.
//! A crash at any point leaves one of the crash states of a backup; the
//! snapshots written before it are whole copies. The source is only read.
//!
//! A source snapshot that cannot be read whole (a damaged tree or chunk)
//! stops the copy with that error (`Corrupt`); the snapshots copied before
//! it stay. `check` and `repair snapshots` on the source come first.

mod translations;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::chunkstore::commit::{Started, commit_check, writing_store};
use crate::chunkstore::index::ChunkIndex;
use crate::chunkstore::{ChunkStore, ChunkStoreOptions, SecureReport, StoreStats};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::PackKind;
use crate::format::snapshot::{CopyOf, Snapshot};
use crate::format::tree::{Extent, Payload};
use crate::id::{ChunkId, RepoId, SnapshotId};
use crate::ops::progress::{NoProgress, Progress};
use crate::repository::Repository;
use crate::repository::snapshots;
use crate::snapshot::Filter;
use crate::snapshot::tree::{self, ContentBuilder};

use translations::Translations;
pub use translations::translations_file;

/// Data chunks read from the source at once (in parallel); with
/// [`READ_AHEAD_BYTES`] it bounds the plaintext held in memory.
const READ_BATCH: usize = 64;
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Translations learnt and not yet written to the store: when there are
/// this many, they are written (the rest at the end of each snapshot).
/// 8,192 (about 1 MB in memory, 256 MB of data at 32 KiB chunks) keeps
/// a large copy's memory flat; one transaction per batch costs little.
const TRANSLATIONS_AHEAD: usize = 1 << 13;

/// Which snapshots to copy, and how.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// The source snapshots to copy; empty means all of them.
    pub snapshots: Vec<SnapshotId>,
    /// Of those, only the ones this accepts.
    pub filter: Filter,
    /// Only decide which snapshots would be copied: read no tree, write
    /// nothing.
    pub dry_run: bool,
    /// How the target's chunk store writes.
    pub store: ChunkStoreOptions,
    /// The cache root under which the translations learnt are kept for the
    /// next copy into the same target ([`translations_file`]); `None`
    /// keeps them for this run only.
    pub cache_root: Option<PathBuf>,
}

/// A source snapshot and its copy in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    /// The copy (new, or found there already); `None` on a dry run.
    pub target: Option<SnapshotId>,
}

/// What a copy did. Serialized with the store's and the commit check's
/// counts beside the others.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// The snapshots copied (on a dry run: to copy), oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// The snapshots selected that the target already holds.
    pub already_copied: Vec<CopiedSnapshot>,
    /// Data chunks read from the source (the target lacked them, or the
    /// cache did not know their ids there), and their bytes.
    pub chunks_read: u64,
    pub bytes_read: u64,
    /// What the target's chunk store did (`chunks_new`, `bytes_stored`:
    /// what was sent, trees included).
    #[serde(flatten)]
    pub stored: StoreStats,
    /// Orphan packs of an interrupted writer that the target adopted.
    pub packs_adopted: usize,
    /// Unindexed target packs whose header did not authenticate.
    pub packs_refused: Vec<String>,
    /// Target packs a concurrent prune condemned that the commit check
    /// took back or copied.
    #[serde(flatten)]
    pub secured: SecureReport,
}

/// Copies snapshots of `source` into `target` (module documentation).
/// Both indexes must have been synced.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] if the target's chunks may not be as long
/// as the source's (before anything is written); a named snapshot that
/// does not exist ([`ErrorKind::NotFound`]); damage in the source
/// ([`ErrorKind::Corrupt`]); listing, backend, cache and translation store
/// errors; the
/// commit check's error if data it relied on was pruned meanwhile. The
/// snapshots copied before an error stay.
pub fn copy(
    source: &Repository,
    source_index: &ChunkIndex,
    target: &Repository,
    target_index: &ChunkIndex,
    options: &CopyOptions,
) -> Result<CopyReport> {
    copy_with_progress(
        source,
        source_index,
        target,
        target_index,
        options,
        &NoProgress,
    )
}

/// [`copy`], reporting the content bytes of each file translated and
/// each file done.
///
/// # Errors
/// As [`copy`].
pub fn copy_with_progress(
    source: &Repository,
    source_index: &ChunkIndex,
    target: &Repository,
    target_index: &ChunkIndex,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Started::now();
    let mut report = CopyReport::default();
    let file = (options.cache_root.as_deref()).map(|root| translations_file(root, target.id()));
    let translations = Translations::open(file.as_deref(), target_index.cache_bytes())?;
    let (todo, mut copies) = plan(source, target, &translations, options, &mut report)?;
    if todo.is_empty() {
        return Ok(report);
    }
    check_chunk_limit(source, target)?;
    if options.dry_run {
        report.copied = todo
            .iter()
            .map(|p| CopiedSnapshot {
                source: p.id,
                target: None,
            })
            .collect();
        return Ok(report);
    }
    let (store, adopted) = writing_store(target, target_index, options.store)?;
    report.packs_adopted = adopted.packs.len();
    report.packs_refused = adopted
        .damaged
        .iter()
        .map(|(id, e)| format!("pack {id}: {e}"))
        .collect();
    let reader = ChunkStore::new(source, source_index, ChunkStoreOptions::default());
    let mut translator = Translator {
        source: &reader,
        target: &store,
        index: target_index,
        translations: &translations,
        from: *source.id(),
        progress,
        trees: HashMap::new(),
        fresh: HashMap::new(),
        chunks_read: 0,
        bytes_read: 0,
    };
    for Pending { id, snap, original } in todo {
        let root = translator
            .tree(&snap.tree_id()?)
            .map_err(|e| e.context(format!("copying snapshot {id}")))?;
        translator.record()?;
        // A backup's order: packs, index files, the commit check, then
        // the snapshot (format-spec/07, "Write ordering"; 12, rule 3).
        store.flush()?;
        add(&mut report.secured, commit_check(&store, &started)?);
        let parent = parent_copy(source, &snap, &copies)?;
        let copy = Snapshot {
            tree: root.to_hex(),
            parent: parent.map(|p| p.to_hex()),
            copy_of: Some(original.clone()),
            ..snap
        };
        let new = snapshots::save(target, &copy)?;
        tracing::debug!(source = %id, target = %new, "copy: snapshot written");
        // Only a hint for the next copy into a target it cannot read.
        let remembered = original_ids(&original)
            .and_then(|(repo, snapshot)| translations.record_copy(&repo, &snapshot, &new));
        if let Err(e) = remembered {
            tracing::warn!("copy {new} not remembered: {e}");
        }
        copies.insert(original, new);
        report.copied.push(CopiedSnapshot {
            source: id,
            target: Some(new),
        });
    }
    report.chunks_read = translator.chunks_read;
    report.bytes_read = translator.bytes_read;
    report.stored = store.stats();
    Ok(report)
}

/// A selected source snapshot the target does not hold yet.
struct Pending {
    id: SnapshotId,
    snap: Snapshot,
    /// The backup it is, or is a copy of.
    original: CopyOf,
}

/// Splits the selected snapshots into those the target holds (added to
/// `report`) and those to copy, oldest first; returns the latter and the
/// target's snapshots by the backup each is.
fn plan(
    source: &Repository,
    target: &Repository,
    translations: &Translations,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(Vec<Pending>, HashMap<CopyOf, SnapshotId>)> {
    let copies = if target.is_admin() {
        snapshots::list(target)?
            .into_iter()
            .map(|(id, s)| (original_of(target.id(), &id, &s), id))
            .collect()
    } else {
        copies_remembered(target, translations)?
    };
    let mut todo = Vec::new();
    for (id, snap) in select(source, options)? {
        let original = original_of(source.id(), &id, &snap);
        match copies.get(&original) {
            Some(copy) => report.already_copied.push(CopiedSnapshot {
                source: id,
                target: Some(*copy),
            }),
            None => todo.push(Pending { id, snap, original }),
        }
    }
    Ok((todo, copies))
}

/// The copies in a target this handle cannot read (a put-only key): those
/// this machine remembers making whose snapshots are still listed. Without
/// that memory every selected snapshot is copied again (its data is
/// deduplicated; the snapshot objects are new).
fn copies_remembered(
    target: &Repository,
    translations: &Translations,
) -> Result<HashMap<CopyOf, SnapshotId>> {
    let listed: HashSet<SnapshotId> = snapshots::list_ids(target)?.into_iter().collect();
    Ok(translations
        .copies()?
        .into_iter()
        .filter(|(_, _, copy)| listed.contains(copy))
        .map(|(repo, snapshot, copy)| (CopyOf::new(&repo, &snapshot), copy))
        .collect())
}

/// The ids a [`CopyOf`] names in hex.
fn original_ids(original: &CopyOf) -> Result<(RepoId, SnapshotId)> {
    Ok((
        RepoId::from_hex(&original.repository)?,
        SnapshotId::from_hex(&original.snapshot)?,
    ))
}

/// The source snapshots chosen by `options`, oldest first.
fn select(source: &Repository, options: &CopyOptions) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut chosen = if options.snapshots.is_empty() {
        snapshots::list(source)?
    } else {
        let mut ids = options.snapshots.clone();
        ids.sort();
        ids.dedup();
        let mut named = ids
            .into_iter()
            .map(|id| Ok((id, snapshots::load(source, &id)?)))
            .collect::<Result<Vec<_>>>()?;
        named.sort_by_key(|(id, s)| (s.time, *id));
        named
    };
    chosen.retain(|(_, s)| options.filter.matches(s));
    Ok(chosen)
}

/// The backup snapshot `id` of repository `repo` is, or is a copy of.
fn original_of(repo: &RepoId, id: &SnapshotId, snap: &Snapshot) -> CopyOf {
    snap.copy_of
        .clone()
        .unwrap_or_else(|| CopyOf::new(repo, id))
}

/// The target's copy of the source snapshot's parent, if it has one.
fn parent_copy(
    source: &Repository,
    snap: &Snapshot,
    copies: &HashMap<CopyOf, SnapshotId>,
) -> Result<Option<SnapshotId>> {
    let Some(id) = snap.parent_id()? else {
        return Ok(None);
    };
    match snapshots::load(source, &id) {
        Ok(parent) => Ok(copies.get(&original_of(source.id(), &id, &parent)).copied()),
        // Forgotten, or damaged: the copy has no parent.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuses a target whose data blobs may be shorter than the source's
/// chunks (format-spec/03: a data blob is at most `chunker.max`).
fn check_chunk_limit(source: &Repository, target: &Repository) -> Result<()> {
    let from = source.config().chunker.params.max;
    let to = target.config().chunker.params.max;
    if from > to {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the target's chunks are at most {to} bytes, the source's up to {from}: \
                 copy keeps the source's chunks whole, so the target must be made with a \
                 chunker max of at least {from}"
            ),
        ));
    }
    Ok(())
}

fn add(total: &mut SecureReport, more: SecureReport) {
    total.packs_resurrected += more.packs_resurrected;
    total.packs_copied += more.packs_copied;
    total.blobs_copied += more.blobs_copied;
    total.bytes_copied += more.bytes_copied;
}

/// Rewrites source trees into the target, translating chunk ids.
struct Translator<'a, 'r> {
    source: &'a ChunkStore<'r>,
    target: &'a ChunkStore<'r>,
    /// The target's index cache.
    index: &'a ChunkIndex,
    /// What earlier copies learnt, and where this one records.
    translations: &'a Translations,
    from: RepoId,
    progress: &'a dyn Progress,
    /// Source tree id -> target tree id, for this run.
    trees: HashMap<ChunkId, ChunkId>,
    /// Translations of chunks this run read, not yet in the store.
    fresh: HashMap<ChunkId, ChunkId>,
    chunks_read: u64,
    bytes_read: u64,
}

impl Translator<'_, '_> {
    /// Stores the translation of directory `id` in the target, below it
    /// first; returns its target id.
    fn tree(&mut self, id: &ChunkId) -> Result<ChunkId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let mut entries = tree::load_directory(self.source, id)?;
        for e in &mut entries {
            match &e.payload {
                Payload::Dir(sub) => e.payload = Payload::Dir(self.tree(sub)?),
                Payload::File(content) => {
                    // One extent list at a time, translated and pushed to
                    // the target's builder: a disk image of millions of
                    // chunks holds one list in memory.
                    let mut built = ContentBuilder::new(self.target);
                    for list in tree::extent_lists(self.source, content, e.meta.size) {
                        for x in self.extents(list?)? {
                            built.push(x)?;
                        }
                    }
                    e.payload = Payload::File(built.finish()?);
                    self.progress.file_done();
                }
                _ => {}
            }
        }
        let new = tree::store_directory(self.target, entries)?;
        self.trees.insert(*id, new);
        Ok(new)
    }

    /// A file's extents with target ids; the chunks whose target id is
    /// not known to be stored are read from the source and stored.
    fn extents(&mut self, mut extents: Vec<Extent>) -> Result<Vec<Extent>> {
        let mut map: HashMap<ChunkId, ChunkId> = HashMap::new();
        let mut lookup = Vec::new();
        let mut seen = HashSet::new();
        for e in &extents {
            if let Extent::Data { id, len } = e
                && seen.insert(*id)
            {
                match self.fresh.get(id) {
                    Some(t) => {
                        map.insert(*id, *t);
                    }
                    None => lookup.push((*id, *len)),
                }
            }
        }
        let ids: Vec<ChunkId> = lookup.iter().map(|(id, _)| *id).collect();
        let cached = self.translations.get(&self.from, &ids)?;
        let mut missing = Vec::new();
        for ((id, len), known) in lookup.into_iter().zip(cached) {
            match known {
                Some(t) if self.stored(&t, len)? => {
                    map.insert(id, t);
                }
                _ => missing.push((id, len)),
            }
        }
        for batch in read_batches(&missing) {
            let chunks = &missing[batch];
            for ((id, _), new) in chunks.iter().zip(self.fetch(chunks)?) {
                map.insert(*id, new);
            }
        }
        for e in &mut extents {
            if let Extent::Data { id, len } = e {
                *id = map.get(id).copied().ok_or_else(|| {
                    Error::new(ErrorKind::Io, format!("chunk {id} was not translated"))
                })?;
                self.progress.bytes(u64::from(*len));
            }
        }
        if self.fresh.len() >= TRANSLATIONS_AHEAD {
            self.record()?;
        }
        Ok(extents)
    }

    /// Whether the target may refer to its chunk `id` of `len` bytes: it
    /// is indexed there in a pack it trusts (with that length), or this
    /// run stored it.
    fn stored(&self, id: &ChunkId, len: u32) -> Result<bool> {
        if let Some(loc) = self.index.lookup(id)?
            && loc.raw_len != len
        {
            return Ok(false);
        }
        self.target.all_stored(&[*id])
    }

    /// Reads `chunks` from the source (in parallel, each authenticated and
    /// checked against its id and its extent's length), stores them in the
    /// target and returns their target ids.
    fn fetch(&mut self, chunks: &[(ChunkId, u32)]) -> Result<Vec<ChunkId>> {
        let source = self.source;
        // As many parts as the source serves reads at once, each read in
        // runs of neighbouring chunks (one request per run, not per chunk:
        // over S3 that was most of a copy's time).
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let ways = source.read_concurrency().max(1);
        let part = ids.len().div_ceil(ways).max(1);
        let plain: Vec<Vec<u8>> = super::with_io_threads(ways, || {
            ids.par_chunks(part)
                .map(|ids| source.get_many(ids))
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        for ((id, len), data) in chunks.iter().zip(&plain) {
            if data.len() != *len as usize {
                return Err(Error::corrupt(format!(
                    "chunk {id} is {} bytes; its extent says {len}",
                    data.len()
                )));
            }
        }
        let mut data = Vec::with_capacity(plain.iter().map(Vec::len).sum());
        let mut ranges = Vec::with_capacity(plain.len());
        for p in plain {
            ranges.push(data.len()..data.len() + p.len());
            data.extend_from_slice(&p);
        }
        let ids = self.target.put_chunks(PackKind::Data, data, &ranges)?;
        for ((id, len), new) in chunks.iter().zip(&ids) {
            self.fresh.insert(*id, *new);
            self.chunks_read += 1;
            self.bytes_read += u64::from(*len);
        }
        Ok(ids)
    }

    /// Writes the translations learnt to the store, durably. A chunk
    /// whose pack a crash then loses is read again: the target's index
    /// decides whether a translation is used.
    fn record(&mut self) -> Result<()> {
        let pairs: Vec<(ChunkId, ChunkId)> = self.fresh.drain().collect();
        self.translations.record(&self.from, &pairs)
    }
}

/// Consecutive ranges of `chunks` to read at once: at most [`READ_BATCH`]
/// chunks and about [`READ_AHEAD_BYTES`].
fn read_batches(chunks: &[(ChunkId, u32)]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, len)) in chunks.iter().enumerate() {
        if i > start && (i - start >= READ_BATCH || bytes + u64::from(*len) > READ_AHEAD_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += u64::from(*len);
    }
    if start < chunks.len() {
        out.push(start..chunks.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_batches_bound_count_and_bytes() {
        let chunk = |len| (ChunkId([0; 32]), len);
        assert!(read_batches(&[]).is_empty());
        let small = vec![chunk(100); 130];
        assert_eq!(read_batches(&small), vec![0..64, 64..128, 128..130]);
        let big = vec![chunk(3 << 20); 5];
        assert_eq!(read_batches(&big), vec![0..2, 2..4, 4..5]);
        // A chunk larger than the byte bound still gets a batch.
        let huge = vec![chunk(9 << 20), chunk(1)];
        assert_eq!(read_batches(&huge), vec![0..1, 1..2]);
    }
}
