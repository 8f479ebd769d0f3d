//! `repair index`: rebuilds the repository's index from the packs
//! themselves. Every pack's header is read and authenticated (with
//! `read_data`, the whole pack is verified, so packs with damaged blobs are
//! left out too); new index files list the good packs and supersede every
//! index file that existed when the repair started (format-spec/06,
//! "Supersedes list"), then the old files are deleted.
//!
//! Afterwards no index entry points into a missing or damaged pack, so
//! the next backup stores such chunks again and its snapshot is whole;
//! snapshots that needed them stay damaged (`check` names them).
//!
//! Crash safety: the new files are written before any old one is deleted,
//! and a reader disregards a file that an authenticated file supersedes; a
//! crash leaves old and new files side by side, which is consistent. A
//! backup running meanwhile is safe: its packs are either listed here or
//! named by its own index file, written after the listing and therefore
//! not superseded.

use crate::error::Result;
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::layout;
use crate::id::{IndexId, PackId};
use crate::index::{ChunkIndex, write_index_file};
use crate::pack::{read_header, verify_pack};
use crate::repo::Repository;

/// Packs per new index file (far below the decoder's size limit).
const PACKS_PER_FILE: usize = 256;

/// How to repair.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairIndexOptions {
    /// Verify every pack whole, not only its header.
    pub read_data: bool,
    /// Report, change nothing.
    pub dry_run: bool,
}

/// What the repair found and did.
#[derive(Debug, Clone, Default)]
pub struct RepairIndexReport {
    pub packs_indexed: usize,
    /// Packs left out, with why.
    pub packs_dropped: Vec<(PackId, String)>,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
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
    let old: Vec<IndexId> = repo
        .backend()
        .list(layout::INDEX_DIR)?
        .iter()
        .map(|i| layout::parse_index_path(&i.path))
        .collect::<Result<_>>()?;
    let mut report = RepairIndexReport::default();
    let mut good = Vec::new();
    for info in repo.backend().list(layout::DATA_DIR)? {
        let id = layout::parse_pack_path(&info.path)?;
        let header = if options.read_data {
            repo.backend()
                .read(&info.path, None)
                .and_then(|bytes| verify_pack(repo.sealer(), &id, &bytes))
        } else {
            read_header(repo, &id, info.size)
        };
        match header {
            Ok(h) => good.push(IndexedPack {
                id,
                kind: h.kind,
                size: info.size,
                entries: h.entries,
            }),
            Err(e) if matches!(e.kind(), crate::ErrorKind::Corrupt) => {
                report.packs_dropped.push((id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    report.packs_indexed = good.len();
    if options.dry_run {
        return Ok(report);
    }
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
        repo.backend().delete(&layout::index_path(id))?;
        report.index_files_deleted += 1;
    }
    index.sync(repo)?;
    index.persist()?;
    Ok(report)
}
