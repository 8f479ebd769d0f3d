//! `forget`: applies a retention policy (`retention`) to the snapshots a
//! filter selects and deletes the snapshot objects the policy does not
//! keep. Only snapshot objects are deleted; the data they referenced stays
//! in the repository until prune (issue 4) removes what no snapshot uses.
//! Deleting a snapshot object is safe while backups run: backups never
//! read other snapshots except to pick a parent, and a parent that
//! disappears mid-backup only costs re-reading files.

use crate::error::Result;
use crate::format::prune::PruneRecord;
use crate::format::snapshot::Snapshot;
use crate::id::{RecordId, SnapshotId};
use crate::repository::Repository;
use crate::repository::{records, snapshots};
use crate::snapshot::Filter;
use crate::snapshot::retention::{Decision, GroupBy, RetentionPolicy, decide};

/// What to forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: RetentionPolicy,
    pub group_by: GroupBy,
    /// Only snapshots this filter matches are considered; others are kept.
    pub filter: Filter,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    /// Dates the forget record and anchors retention windows.
    pub clock: crate::clock::Clock,
}

/// What forget decided and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ForgetReport {
    /// One decision per considered snapshot, grouped, newest first.
    pub decisions: Vec<Decision>,
    /// Snapshots deleted (empty on a dry run).
    pub removed: Vec<SnapshotId>,
}

/// Applies `options.policy` and deletes what it does not keep.
///
/// # Errors
/// A policy without rules (`InvalidInput`), listing or reading snapshots,
/// and delete errors (snapshots deleted before the error stay deleted; the
/// rest stay).
pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetReport> {
    let snapshots: Vec<_> = snapshots::list(repo)?
        .into_iter()
        .filter(|(_, s)| options.filter.matches(s))
        .collect();
    let decisions = decide(
        &options.policy,
        options.group_by,
        &snapshots,
        options.clock.now_ns(),
    )?;
    let mut removed = Vec::new();
    let doomed: Vec<SnapshotId> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    if !options.dry_run && !doomed.is_empty() {
        // format-spec/12, "Forgotten snapshots": a record names them
        // before they go, so no client takes their absence for a rollback.
        let record = PruneRecord::forgetting(options.clock.now_unix(), doomed.clone());
        records::save(repo, &RecordId::random(), &record)?;
        for id in doomed {
            repo.delete::<Snapshot>(&id)?;
            removed.push(id);
        }
    }
    Ok(ForgetReport { decisions, removed })
}
