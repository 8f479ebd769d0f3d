//! Refilling the cache from pack headers: adopting packs no index file
//! names (an interrupted backup) and rebuilding after index files are lost.

use crate::error::Error;
use crate::error::Result;
use crate::format::index::IndexFile;
use crate::format::index::IndexedPack;
use crate::format::index::PACKS_PER_FILE;
use crate::id::PackId;
use crate::repository::Repository;
use std::collections::HashSet;

use super::{ChunkIndex, RebuildReport, write_index_file};

impl ChunkIndex {
    /// Adopts orphan packs (format-spec/07, "Crash states"): packs in the
    /// repository that no index file names, left by a backup that was
    /// killed before writing its index. Their headers are read and
    /// authenticated, and one new index file lists them, so the chunks they
    /// hold are deduplicated against instead of uploaded again. Packs whose
    /// header does not authenticate are left alone and reported.
    ///
    /// Packs in `condemned` (by a prune record) are not orphans: prune
    /// deletes them once ripe (format-spec/12).
    ///
    /// Call it after [`ChunkIndex::sync`]. A pack of a backup still running
    /// elsewhere is adopted too, which is harmless: two index files then
    /// name the same blobs at the same place.
    ///
    /// # Errors
    /// A failed listing (never read as "no packs"), a failed index write,
    /// or cache I/O errors.
    pub fn adopt_orphan_packs(
        &self,
        repo: &Repository,
        level: i32,
        condemned: &HashSet<PackId>,
    ) -> Result<RebuildReport> {
        let marked = self.damaged_packs()?;
        let (mut report, listed) = read_pack_headers(repo, |id| {
            Ok(condemned.contains(id) || marked.contains(id) || self.knows_pack(id)?)
        })?;
        // A pack a check found damaged is not adopted again (after `repair
        // index` left it out): its blobs are stored anew when needed.
        for id in listed.iter().filter(|id| marked.contains(id)) {
            if !self.knows_pack(id)? {
                let why = Error::corrupt("a check found it damaged; not adopted");
                report.damaged.push((*id, why));
            }
        }
        report.missing = self.packs_missing_from(&listed)?;
        let RebuildReport { packs, .. } = &report;
        for chunk in packs.chunks(PACKS_PER_FILE) {
            let file = IndexFile {
                supersedes: Vec::new(),
                packs: chunk.to_vec(),
            };
            let id = write_index_file(repo, &file, level)?;
            self.insert(Some(&id), chunk)?;
        }
        if !packs.is_empty() {
            self.persist()?;
        }
        self.refill(repo)?;
        Ok(report)
    }

    /// Empties the cache and refills it from every pack's header, for when
    /// index files are missing or damaged. Packs whose header cannot be read
    /// are reported with their error; the rest are indexed.
    ///
    /// # Errors
    /// A failed listing or cache I/O errors.
    pub fn rebuild_from_pack_headers(&self, repo: &Repository) -> Result<RebuildReport> {
        let (report, _) = read_pack_headers(repo, |_| Ok(false))?;
        self.clear()?;
        self.insert(None, &report.packs)?;
        self.persist()?;
        if self.take_stale() {
            // The cache file failed: the headers go into memory instead.
            self.clear()?;
            self.insert(None, &report.packs)?;
        }
        Ok(report)
    }
}

/// Reads and authenticates the header of every listed pack that `skip`
/// does not rule out; damaged headers are reported, not fatal. Returns the
/// listing too.
fn read_pack_headers(
    repo: &Repository,
    skip: impl Fn(&PackId) -> Result<bool>,
) -> Result<(RebuildReport, HashSet<PackId>)> {
    let mut report = RebuildReport {
        packs: Vec::new(),
        damaged: Vec::new(),
        missing: Vec::new(),
    };
    let mut listed = HashSet::new();
    for (id, size) in repo.list_packs()? {
        listed.insert(id);
        if skip(&id)? {
            continue;
        }
        match repo.read_pack_header(&id, size) {
            Ok(header) => report.packs.push(IndexedPack {
                id,
                kind: header.kind,
                size,
                entries: header.entries,
            }),
            Err(e) => report.damaged.push((id, e)),
        }
    }
    Ok((report, listed))
}
