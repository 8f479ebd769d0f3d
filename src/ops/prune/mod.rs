//! Operations layer: `prune` deletes packs no snapshot needs and repacks
//! mostly unused ones, without locks, by the two-phase protocol of
//! format-spec/12-prune.md: a run condemns packs in a prune record, and a
//! later run, once the record is ripe (its grace period has passed),
//! deletes them unless a backup took them back meanwhile.
//!
//! One run is a plan and its execution. [`plan`] (steps 1-5) lists
//! everything (a failed listing or an unreadable record, index file or
//! snapshot aborts before anything is written), marks the live chunks of
//! every snapshot into an on-disk table ([`mark`]), sweeps ripe records,
//! condemns dead packs and picks packs to repack, changing nothing in the
//! repository: `--dry-run` is the plan. [`execute`] (steps 5-8) writes the
//! repacked packs, the new record and the rewritten index files, and
//! deletes what the sweep chose. With `grace == 0` one run does both
//! phases.

mod execute;
mod mark;
mod plan;
mod survey;

pub use execute::execute;
pub use plan::{PrunePlan, Repack, plan};

use std::path::Path;

use serde::Serialize;

use crate::chunkstore::index::ChunkIndex;
use crate::clock::Clock;
use crate::error::Result;
use crate::format::index::PACKS_PER_FILE;
use crate::repository::Repository;

/// Default grace period: one hour (format-spec/12, assumption A1).
pub const DEFAULT_GRACE: u64 = 3600;
/// Temporary files younger than this (seconds) may belong to a write in
/// progress.
const TEMPORARY_AGE: u64 = 86_400;
/// Index files naming fewer packs than this are small ...
const SMALL_INDEX_FILE: usize = PACKS_PER_FILE / 4;
/// ... and are merged once there are this many old ones.
const MERGE_AT: usize = 8;

/// How to prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Seconds between condemning a pack and deleting it. 0: both in this
    /// run, which is safe only when no backup can be running.
    pub grace: u64,
    /// Repack until unused bytes are at most this share of the total.
    pub max_unused: f64,
    /// Bytes of packs read for repacking, at most.
    pub max_repack_bytes: u64,
    /// Report, write and delete nothing.
    pub dry_run: bool,
    /// Now: records' creation time and ripeness, the deletable time.
    pub clock: Clock,
    /// zstd level for rewritten index files.
    pub level: i32,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            max_unused: 0.05,
            max_repack_bytes: u64::MAX,
            dry_run: false,
            clock: Clock::System,
            level: 3,
        }
    }
}

/// What a run found and did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub live_chunks: u64,
    pub packs: usize,
    pub bytes: u64,
    /// Packs condemned by this run, to be deleted once ripe.
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
    /// Packs whose live blobs were copied into new packs (also condemned).
    pub repacked_packs: usize,
    pub repacked_bytes: u64,
    /// Bytes of blobs written into new packs by repacking.
    pub rewritten_bytes: u64,
    /// Size of the new packs repacking wrote.
    pub new_pack_bytes: u64,
    /// Packs deleted by this run (ripe records swept).
    pub deleted_packs: usize,
    pub freed_bytes: u64,
    /// Condemned packs kept because a backup or a snapshot took them back.
    pub resurrected_packs: usize,
    /// Orphan packs holding live chunks, named in a new index file.
    pub adopted_packs: usize,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub records_swept: usize,
    /// Temporary files of killed writers removed (local backend).
    pub temporaries_removed: u64,
    /// Whether this run wrote a record (the next run's reference).
    pub record_written: bool,
    /// Unused bytes in packs that stay (after this run's condemning).
    pub unused_bytes_after: u64,
    /// When the packs condemned now may be deleted (Unix seconds).
    pub deletable_after: Option<u64>,
    /// Packs that could not be repacked, with why.
    pub warnings: Vec<String>,
}

/// Prunes `repo`: builds the plan (steps 1-5 of format-spec/12) and,
/// unless `dry_run`, carries it out (steps 5-8). `index` is the synced
/// cache; `scratch` a private directory for the live set and the set of
/// chunks repacked (the cache directory). With `dry_run` the report is the plan's.
///
/// # Errors
/// A failed listing, an unreadable record, index file, snapshot or tree
/// (nothing is written or deleted then); backend errors while writing
/// (what was written is consistent, format-spec/12 "Crash states").
pub fn prune(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let plan = plan(repo, index, scratch, options)?;
    if options.dry_run {
        return Ok(plan.report());
    }
    execute(repo, index, scratch, &plan, options)
}
