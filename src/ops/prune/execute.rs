//! Operations layer, prune steps 5 (copying) to 8 (format-spec/12):
//! carrying out a [`PrunePlan`]. Deletions that need no write come first:
//! the packs of ripe records that nothing took back (no current index file
//! names them, no snapshot needs them), superseded leftover index files
//! and stale temporaries. So a repository whose storage is full frees space
//! with kura alone: a run that cannot write still deletes what is ripe,
//! and says what it freed and what to run next. The writes then come in
//! the order the protocol's crash states rely on: index files naming
//! resurrected and adopted packs first, then repacked packs and their
//! index files, the record, the rewritten index files (superseded files
//! deleted only once every new one is written); the packs condemned at once
//! (grace 0) and the ripe records are deleted last.
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::plan::{IndexFiles, PrunePlan, Repack};
use super::{MERGE_AT, PruneOptions, PruneReport, SMALL_INDEX_FILE, TEMPORARY_AGE};
use crate::chunkstore::index::{
    ChunkIndex, ChunkSet, ChunkSetReader, read_index_file, write_index_file_as,
};
use crate::chunkstore::pack::{FinishedPack, Packer, PackerOptions, verify_pack};
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack, PACKS_PER_FILE};
use crate::format::pack::{PackEntry, PackKind, groups};
use crate::format::prune::PruneRecord;
use crate::id::{ChunkId, IndexId, PackId, RecordId};
use crate::repository::Repository;
use crate::repository::records;

/// Carries `plan` out and reports what was done.
///
/// # Errors
/// Backend errors while writing or deleting: what was written is
/// consistent (format-spec/12 "Crash states"), and a later run finishes
/// the work. A write that fails for lack of space comes after the ripe
/// packs are deleted, and its error says what was freed and what to run
/// next. A pack that cannot be repacked is not an error: it stays, with a
/// warning in the report.
pub fn execute(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    plan: &PrunePlan,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        snapshots: plan.snapshots,
        live_chunks: plan.live_chunks,
        packs: plan.packs,
        bytes: plan.bytes,
        unused_bytes_after: plan.unused_bytes_after,
        ..PruneReport::default()
    };
    delete_ripe(repo, plan, &mut report)?;
    let condemned = match write_all(repo, index, scratch, plan, options, &mut report) {
        Ok(condemned) => condemned,
        Err(e) if is_storage_full(&e) => return Err(storage_full(e, &report)),
        Err(e) if report.deleted_packs > 0 => return Err(failed_after_deleting(e, &report)),
        Err(e) => return Err(e),
    };
    delete_after_writes(repo, plan, &condemned, &mut report)?;
    index.persist()?;
    index.refill(repo)?;
    Ok(report)
}

/// Steps 5 to 7, every write of the run; returns the packs condemned.
fn write_all(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    plan: &PrunePlan,
    options: &PruneOptions,
    report: &mut PruneReport,
) -> Result<Vec<(PackId, u64)>> {
    let mut new_files = index_needed_packs(repo, index, plan, options.level, report)?;
    let out = NewPacks {
        repo,
        index,
        level: options.level,
        files: &mut new_files,
        waiting: Vec::new(),
    };
    let repacked = copy_repacks(repo, scratch, plan, out, report)?;
    let mut condemned = plan.condemn.clone();
    condemned.extend(repacked);
    condemned.sort();
    report.condemned_packs = condemned.len();
    report.condemned_bytes = condemned.iter().map(|(_, s)| s).sum();
    let rewrite = Rewrite::choose(&plan.index_files, &condemned);
    if !plan.at_once() {
        write_record(repo, plan, &condemned, &new_files, &rewrite, report)?;
    } else if !plan.ripe_records.is_empty() {
        // Records are about to be deleted: a newer one carries their
        // forgotten snapshots forward and stays the newest record
        // (format-spec/12, "Forgotten snapshots").
        let carry = PruneRecord::forgetting(plan.now, plan.forgotten.clone());
        records::save(repo, &RecordId::random(), &carry)?;
        report.record_written = true;
    }
    rewrite.write(repo, options.level, report)?;
    report.index_files_written += new_files.len();
    Ok(condemned)
}

/// Whether `e` (or a cause of it) says the storage has no space left or
/// a quota is used up: an OS error (local disks, `ENOSPC` and `EDQUOT`),
/// or the words servers use (S3's `QuotaExceeded`). OpenSSH's SFTP server
/// reports a full disk as a bare "Failure", which
/// [`failed_after_deleting`] covers.
fn is_storage_full(e: &Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let full = c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), StorageFull | QuotaExceeded));
        if full {
            return true;
        }
        cause = c.source();
    }
    let text = e.to_string().to_lowercase();
    [
        "no space left",
        "quota exceeded",
        "quotaexceeded",
        "insufficient storage",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// The error of a run whose writes failed for a reason it cannot name
/// after it deleted what was ripe: what it freed, and that a full storage
/// the server did not name may be the cause.
fn failed_after_deleting(e: Error, report: &PruneReport) -> Error {
    e.context(format!(
        "prune deleted {} ripe packs ({} bytes) before a write failed, and lost \
         nothing; run `kura prune` again (if the storage was full, the space freed \
         holds its record and index files)",
        report.deleted_packs, report.freed_bytes
    ))
}

/// The error of a run whose writes failed for lack of space after it
/// deleted what was ripe: what it freed, and what to run next.
fn storage_full(e: Error, report: &PruneReport) -> Error {
    let next = if report.deleted_packs > 0 {
        "run `kura prune` again: the space freed holds its record and index files".to_owned()
    } else {
        "no condemned pack was ripe for deleting yet; make room for a record and a few \
         index files (some KiB: `kura forget` another snapshot, or remove other files \
         on that disk) and run `kura prune` again"
            .to_owned()
    };
    e.context(format!(
        "the repository's storage is full: prune deleted {} ripe packs ({} bytes) \
         before its writes failed, and lost nothing; {next}",
        report.deleted_packs, report.freed_bytes
    ))
}

/// Names resurrected and adopted packs in new index files, first of all
/// writes: naming them keeps them, whatever happens next. Returns the
/// files' ids.
fn index_needed_packs(
    repo: &Repository,
    index: &ChunkIndex,
    plan: &PrunePlan,
    level: i32,
    report: &mut PruneReport,
) -> Result<Vec<IndexId>> {
    let mut packs = Vec::new();
    for p in plan.resurrect.iter().chain(&plan.adopt) {
        // Needed packs were read during marking, so they were listed.
        let Some(&size) = plan.listed.get(p) else {
            continue;
        };
        let header = repo.read_pack_header(p, size)?;
        packs.push(IndexedPack {
            id: *p,
            kind: header.kind,
            size,
            entries: header.entries,
        });
    }
    report.resurrected_packs = plan.resurrect.len();
    report.adopted_packs = plan.adopt.len();
    write_new_files(repo, index, &packs, level)
}

/// Writes `packs` into new index files (no supersedes), records them in
/// the cache, and returns their ids.
fn write_new_files(
    repo: &Repository,
    index: &ChunkIndex,
    packs: &[IndexedPack],
    level: i32,
) -> Result<Vec<IndexId>> {
    let mut ids = Vec::new();
    for chunk in packs.chunks(PACKS_PER_FILE) {
        let id = IndexId::random();
        write_file(repo, &id, Vec::new(), chunk.to_vec(), level)?;
        index.insert(Some(&id), chunk)?;
        index.refill(repo)?;
        ids.push(id);
    }
    Ok(ids)
}

/// Step 5, the copying: the live blobs of the planned packs into new
/// packs, named in new index files (`out`). Returns the packs repacked,
/// with their sizes; a pack that failed to read stays.
fn copy_repacks(
    repo: &Repository,
    scratch: &Path,
    plan: &PrunePlan,
    mut out: NewPacks,
    report: &mut PruneReport,
) -> Result<Vec<(PackId, u64)>> {
    let mut repacked = Vec::new();
    if !plan.repack.is_empty() {
        let skipped = repack_packs(repo, scratch, &plan.repack, &plan.live, &mut out, report)?;
        repacked = plan
            .repack
            .iter()
            .filter(|r| !skipped.contains(&r.pack))
            .map(|r| (r.pack, r.size))
            .collect();
    }
    report.repacked_packs = repacked.len();
    report.repacked_bytes = repacked.iter().map(|(_, s)| s).sum();
    Ok(repacked)
}

/// Where repacking puts its new packs: each is written at once, and an
/// index file naming them every [`PACKS_PER_FILE`] packs (and at the
/// end), so memory does not grow with the amount repacked.
struct NewPacks<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    level: i32,
    /// The index files written so far.
    files: &'a mut Vec<IndexId>,
    /// Packs written and not yet named in an index file.
    waiting: Vec<IndexedPack>,
}

impl NewPacks<'_> {
    /// Writes `pack`, and an index file once [`PACKS_PER_FILE`] wait.
    fn write(&mut self, pack: FinishedPack, report: &mut PruneReport) -> Result<()> {
        self.repo.write_pack(&pack.id, &pack.bytes)?;
        report.new_pack_bytes += pack.bytes.len() as u64;
        self.waiting.push(IndexedPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            entries: pack.entries,
        });
        if self.waiting.len() == PACKS_PER_FILE {
            self.flush()?;
        }
        Ok(())
    }

    /// Names the packs waiting, if any, in a new index file.
    fn flush(&mut self) -> Result<()> {
        if !self.waiting.is_empty() {
            let written = write_new_files(self.repo, self.index, &self.waiting, self.level)?;
            self.files.extend(written);
            self.waiting.clear();
        }
        Ok(())
    }
}

/// Step 7's choice: the current files to rewrite and the ids of the files
/// replacing them (chosen now: the record names them).
struct Rewrite<'a> {
    /// Current files to rewrite.
    files: Vec<&'a IndexId>,
    /// Packs condemned by this run: left out of the new files.
    gone: HashSet<PackId>,
    /// Ids of the new files.
    ids: Vec<IndexId>,
}

impl<'a> Rewrite<'a> {
    /// The old current files that name a condemned pack, and old small
    /// files once there are enough to merge (each backup writes its own; a
    /// year of nights would otherwise be hundreds of files).
    fn choose(files: &'a IndexFiles, condemned: &[(PackId, u64)]) -> Self {
        let gone: HashSet<PackId> = condemned.iter().map(|(p, _)| *p).collect();
        let small: Vec<&IndexId> = files
            .current
            .iter()
            .filter(|(id, packs)| files.old.contains(id) && packs.len() < SMALL_INDEX_FILE)
            .map(|(id, _)| id)
            .collect();
        let merge: HashSet<&IndexId> = if small.len() >= MERGE_AT {
            small.into_iter().collect()
        } else {
            HashSet::new()
        };
        let rewrite: Vec<&(IndexId, Vec<PackId>)> = files
            .current
            .iter()
            .filter(|(id, packs)| merge.contains(id) || packs.iter().any(|p| gone.contains(p)))
            .collect();
        let remaining: usize = rewrite
            .iter()
            .map(|(_, packs)| packs.iter().filter(|p| !gone.contains(p)).count())
            .sum();
        Self {
            files: rewrite.iter().map(|(id, _)| id).collect(),
            gone,
            ids: (0..remaining.div_ceil(PACKS_PER_FILE))
                .map(|_| IndexId::random())
                .collect(),
        }
    }

    /// Step 7: writes the new files, the first carrying `supersedes` =
    /// the rewritten files (it alone must exist for readers to drop them,
    /// and it does before any is deleted); then deletes the old ones.
    ///
    /// The old files are read one at a time and a new file is written as
    /// soon as it has [`PACKS_PER_FILE`] packs, so memory holds at most
    /// one old and one new file, whatever the size of the repository.
    fn write(&self, repo: &Repository, level: i32, report: &mut PruneReport) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let superseded: Vec<IndexId> = self.files.iter().map(|id| **id).collect();
        let mut out = NewFiles {
            ids: self.ids.iter(),
            supersedes: Some(superseded.clone()),
            level,
        };
        let mut kept: Vec<IndexedPack> = Vec::new();
        for file in &self.files {
            let f = read_index_file(repo, file)?;
            for pack in f.packs.into_iter().filter(|p| !self.gone.contains(&p.id)) {
                kept.push(pack);
                if kept.len() == PACKS_PER_FILE {
                    out.write(repo, std::mem::take(&mut kept), report)?;
                }
            }
        }
        if !kept.is_empty() {
            out.write(repo, kept, report)?;
        }
        // Ids chosen and not needed (there are none unless the files
        // changed under us) are written empty: the record names them.
        while !out.ids.as_slice().is_empty() {
            out.write(repo, Vec::new(), report)?;
        }
        if let Some(supersedes) = out.supersedes {
            // Every pack of those files is condemned: an empty file
            // carries the supersedes list.
            write_file(repo, &IndexId::random(), supersedes, Vec::new(), level)?;
            report.index_files_written += 1;
        }
        for id in &superseded {
            repo.delete::<IndexFile>(id)?;
            report.index_files_deleted += 1;
        }
        Ok(())
    }
}

/// The new files of a [`Rewrite`], written in the order of their ids; the
/// first carries the supersedes list.
struct NewFiles<'a> {
    ids: std::slice::Iter<'a, IndexId>,
    supersedes: Option<Vec<IndexId>>,
    level: i32,
}

impl NewFiles<'_> {
    fn write(
        &mut self,
        repo: &Repository,
        packs: Vec<IndexedPack>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let Some(id) = self.ids.next() else {
            // More packs than the plan counted: the files changed since
            // it read them. Nothing is deleted; a later prune redoes this.
            return Err(Error::corrupt(
                "an index file prune rewrites changed since it planned; run prune again",
            ));
        };
        let supersedes = self.supersedes.take().unwrap_or_default();
        write_file(repo, id, supersedes, packs, self.level)?;
        report.index_files_written += 1;
        Ok(())
    }
}

/// Step 6: the record, naming every current file that stays and every
/// file this run writes, the orphans it saw, and what it condemned.
fn write_record(
    repo: &Repository,
    plan: &PrunePlan,
    condemned: &[(PackId, u64)],
    new_files: &[IndexId],
    rewrite: &Rewrite,
    report: &mut PruneReport,
) -> Result<()> {
    let rewritten: HashSet<&IndexId> = rewrite.files.iter().copied().collect();
    let mut seen_index: Vec<IndexId> = plan
        .index_files
        .current
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !rewritten.contains(id))
        .chain(new_files.iter().copied())
        .chain(rewrite.ids.iter().copied())
        .collect();
    seen_index.sort();
    let mut seen_orphans = plan.seen_orphans.clone();
    seen_orphans.sort();
    let record = PruneRecord {
        created: plan.now,
        grace: plan.grace,
        seen_index,
        seen_orphans,
        condemned: condemned.to_vec(),
        forgotten: plan.forgotten.clone(),
    };
    records::save(repo, &RecordId::random(), &record)?;
    report.record_written = true;
    if !condemned.is_empty() {
        report.deletable_after = Some(plan.now + plan.grace);
    }
    Ok(())
}

/// The deletions that need no write, before any write: the packs the
/// sweep chose (step 8's packs: no current index file names them and no
/// snapshot needs them, so nothing must be written first), superseded
/// leftover index files, and temporary files of writers killed mid-write:
/// with no backup running (grace 0) all of them, otherwise those older
/// than a day and the grace.
fn delete_ripe(repo: &Repository, plan: &PrunePlan, report: &mut PruneReport) -> Result<()> {
    for (p, size) in &plan.delete {
        repo.delete_pack(p)?;
        report.deleted_packs += 1;
        report.freed_bytes += size;
    }
    for id in &plan.index_files.leftovers {
        repo.delete::<IndexFile>(id)?;
        report.index_files_deleted += 1;
    }
    let age = if plan.at_once() {
        Duration::ZERO
    } else {
        Duration::from_secs(plan.grace.max(TEMPORARY_AGE))
    };
    report.temporaries_removed = repo.remove_stale_temporaries(age)?;
    Ok(())
}

/// Step 8 after the writes: with grace 0, this run's condemned packs (no
/// index file names them any more); then the ripe records, whose packs
/// are gone.
fn delete_after_writes(
    repo: &Repository,
    plan: &PrunePlan,
    condemned: &[(PackId, u64)],
    report: &mut PruneReport,
) -> Result<()> {
    if plan.at_once() {
        let listed = |(p, _): &&(PackId, u64)| plan.listed.contains_key(p);
        for (p, size) in condemned.iter().filter(listed) {
            repo.delete_pack(p)?;
            report.deleted_packs += 1;
            report.freed_bytes += size;
        }
    }
    for id in &plan.ripe_records {
        repo.delete::<PruneRecord>(id)?;
        report.records_swept += 1;
    }
    Ok(())
}

fn write_file(
    repo: &Repository,
    id: &IndexId,
    supersedes: Vec<IndexId>,
    packs: Vec<IndexedPack>,
    level: i32,
) -> Result<()> {
    write_index_file_as(repo, id, &IndexFile { supersedes, packs }, level)
}

/// Copies the live blobs of `repack` into new packs, unchanged, through
/// `out`, and returns the packs skipped: one that cannot be read or fails
/// authentication gets a warning and stays. The chunks copied so far are
/// kept in a set in `scratch`, so that memory holds the open packs and
/// one pack being read, whatever the amount repacked.
fn repack_packs(
    repo: &Repository,
    scratch: &Path,
    repack: &[Repack],
    live: &ChunkSetReader,
    out: &mut NewPacks,
    report: &mut PruneReport,
) -> Result<HashSet<PackId>> {
    let mut skipped = HashSet::new();
    let sealer = repo.sealer();
    let mut packers = [
        Packer::new(PackKind::Data, PackerOptions::default()),
        Packer::new(PackKind::Tree, PackerOptions::default()),
    ];
    let mut copied = ChunkSet::create_in(scratch, COPIED_SET, out.index.cache_bytes())?;
    for r in repack {
        let p = &r.pack;
        let bytes = match repo
            .read_pack(p, None)
            .and_then(|b| verify_pack(sealer, p, &b).map(|h| (b, h)))
        {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                report.warnings.push(format!("pack {p} not repacked: {e}"));
                skipped.insert(*p);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (bytes, header) = bytes;
        let mut wanted = Vec::new();
        for e in &header.entries {
            if live.contains(&e.id)? {
                wanted.push(e.id);
            }
        }
        // Copied even if another pack that stays has it too: that copy
        // may be damaged, and only a read would tell.
        let mut fresh: HashSet<ChunkId> = copied.insert_new(&wanted)?.into_iter().collect();
        let packer = &mut packers[usize::from(r.kind == PackKind::Tree)];
        for group in groups(&header.entries) {
            // Not copied: dead, copied already, or twice in this pack.
            let keep: Vec<&PackEntry> = group.iter().filter(|e| fresh.remove(&e.id)).collect();
            if keep.is_empty() {
                continue;
            }
            let start = group[0].offset as usize;
            let blob = &bytes[start..start + group[0].stored_len as usize];
            let chunks: Vec<(ChunkId, u32)> = keep.iter().map(|e| (e.id, e.raw_len)).collect();
            let full = if keep.len() == group.len() {
                report.rewritten_bytes += u64::from(group[0].stored_len);
                packer.add_group(sealer, &chunks, blob)
            } else {
                // A partly live group: its live chunks, sealed as a new
                // group (verify_pack opened it above, so it opens).
                let plain = sealer.open_group(r.kind, blob)?;
                let mut live = Vec::new();
                for e in &keep {
                    live.extend_from_slice(sealer.chunk_in(
                        &e.id,
                        &plain,
                        e.raw_offset,
                        e.raw_len,
                    )?);
                }
                let sealed = sealer.seal_group(r.kind, &live, REPACK_LEVEL);
                report.rewritten_bytes += sealed.len() as u64;
                packer.add_group(sealer, &chunks, &sealed)
            };
            if let Some(full) = full {
                out.write(full, report)?;
            }
        }
    }
    for packer in &mut packers {
        for full in packer.finish_all(sealer) {
            out.write(full, report)?;
        }
    }
    out.flush()?;
    Ok(skipped)
}

const COPIED_SET: &str = "prune's set of repacked chunks";
/// zstd level of the groups repack seals again (a backup's default).
const REPACK_LEVEL: i32 = 3;

#[cfg(test)]
mod tests {
    use super::{PruneReport, failed_after_deleting, is_storage_full};
    use crate::error::{Error, ErrorKind};

    #[test]
    fn full_storage_is_recognised_by_kind_or_by_the_servers_words() {
        let io = |kind| Error::io("writing", std::io::Error::from(kind));
        assert!(is_storage_full(&io(std::io::ErrorKind::StorageFull)));
        assert!(is_storage_full(&io(std::io::ErrorKind::QuotaExceeded)));
        assert!(!is_storage_full(&io(std::io::ErrorKind::PermissionDenied)));
        for said in ["S3 error: QuotaExceeded", "507 Insufficient Storage"] {
            assert!(is_storage_full(&Error::new(ErrorKind::Io, said)), "{said}");
        }
        assert!(!is_storage_full(&Error::new(
            ErrorKind::Io,
            "sftp: Failure"
        )));
    }

    #[test]
    fn a_write_failing_after_deletions_says_what_was_freed() {
        let report = PruneReport {
            deleted_packs: 3,
            freed_bytes: 12_345,
            ..PruneReport::default()
        };
        let said =
            failed_after_deleting(Error::new(ErrorKind::Io, "sftp: Failure"), &report).to_string();
        assert!(
            said.contains("deleted 3 ripe packs (12345 bytes)"),
            "{said}"
        );
        assert!(
            said.contains("kura prune") && said.contains("Failure"),
            "{said}"
        );
    }
}
