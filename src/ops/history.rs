//! Operations layer: rollback and swap detection by trust on first use
//! (README, "When the server is cracked"; format-spec/08, "Rollback").
//!
//! Storage can delete objects and put old ones back. Every object still
//! authenticates, so no single read shows it; what shows it is memory.
//! Each machine keeps, per repository, what it has seen:
//! `<cache root>/<repository id>/history`, a small text file holding the
//! hash of the config object, the newest prune record, every snapshot id
//! and every key slot this machine removed. Each `backup`, `snapshots` and
//! `check` compares the repository with it:
//!
//! - the config object's bytes changed: the repository was swapped or
//!   rebuilt under the same id;
//! - a snapshot seen before is gone, and no current prune record names it
//!   as forgotten (`forget` writes that record before it deletes; prune
//!   carries the names forward when it sweeps records);
//! - the newest record seen is gone, and no record at least as new is
//!   there (prune writes its own record before it sweeps older ones);
//! - a key slot this machine removed is back.
//!
//! Each is a [`Finding`]; the commands report them and exit with their own
//! code (20). The file then keeps what went missing, so the alarm repeats
//! on every run until someone who knows why deletes the file (which
//! accepts the repository as it is now). The first run on a machine has
//! nothing to compare and only records (trust on first use). A file that
//! cannot be read or parsed is treated the same way, with a warning: the
//! file is the user's own, so a local attacker who can edit it can also
//! run kura as that user.
//!
//! The file records; it decides nothing. A state that cannot be written is
//! a warning, never a failed backup.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::format::prune::PruneRecord;
use crate::format::snapshot::Snapshot;
use crate::id::{KeySlotId, RecordId, RepoId, SnapshotId};
use crate::repository::{Repository, records};

const FILE_NAME: &str = "history";
const MAGIC: &str = "kura history 1";

/// What this machine remembers of one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// BLAKE3 of the config object's bytes.
    pub config: Option<[u8; 32]>,
    /// The newest prune record seen: its id and `created`.
    pub newest_record: Option<(RecordId, u64)>,
    pub snapshots: BTreeSet<SnapshotId>,
    /// Key slots this machine removed.
    pub removed_slots: BTreeSet<KeySlotId>,
}

/// The repository as it is now, as far as the comparison needs.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub config: [u8; 32],
    pub snapshots: BTreeSet<SnapshotId>,
    /// Every readable record: id and `created`.
    pub records: Vec<(RecordId, u64)>,
    /// Snapshot ids the current records name as forgotten.
    pub forgotten: BTreeSet<SnapshotId>,
    pub slots: BTreeSet<KeySlotId>,
}

/// One way the repository went back since this machine last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    ConfigChanged,
    SnapshotGone(SnapshotId),
    RecordGone { id: RecordId, created: u64 },
    SlotReturned(KeySlotId),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigChanged => write!(
                f,
                "the config object changed since this machine last opened the repository \
                 (the repository was replaced or rebuilt under the same id)"
            ),
            Self::SnapshotGone(id) => write!(
                f,
                "snapshot {id} was here before and is gone, and no prune record says it \
                 was forgotten (deleted from storage, or the repository was rolled back)"
            ),
            Self::RecordGone { id, created } => write!(
                f,
                "prune record {id} (created at {created}) was here before and is gone, \
                 with no newer record (the repository was rolled back)"
            ),
            Self::SlotReturned(id) => write!(
                f,
                "key slot {id}, removed from this machine, is back (restored from an old \
                 copy; only `kura rekey` revokes a password for good)"
            ),
        }
    }
}

/// The outcome of one comparison.
#[derive(Debug, Clone, Default)]
pub struct HistoryReport {
    /// Nothing was remembered yet (first use on this machine).
    pub first_use: bool,
    pub findings: Vec<Finding>,
}

impl HistoryReport {
    /// The findings as one error of kind [`ErrorKind::RolledBack`], or
    /// `Ok` if there are none.
    ///
    /// # Errors
    /// [`ErrorKind::RolledBack`] naming every finding and the file.
    pub fn into_result(self, file: &Path) -> Result<()> {
        if self.findings.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        Err(Error::new(
            ErrorKind::RolledBack,
            format!(
                "the repository went back since this machine last saw it:\n  {}\n\
                 If you know why (you restored the repository from a copy on purpose), \
                 delete {} to accept it as it is now.",
                list.join("\n  "),
                file.display()
            ),
        ))
    }
}

/// Where the history of `repo` lives under `cache_root`.
pub fn history_file(cache_root: &Path, repo: &RepoId) -> PathBuf {
    cache_root.join(repo.to_hex()).join(FILE_NAME)
}

/// Compares `repo` with what this machine remembers, then remembers what
/// it sees now (keeping anything that went missing, so the alarm repeats).
/// Without a cache root nothing is remembered and nothing found.
///
/// # Errors
/// Listing or reading the repository fails. Findings are not errors here:
/// they are in the report (see [`HistoryReport::into_result`]).
pub fn compare_and_remember(repo: &Repository, cache_root: Option<&Path>) -> Result<HistoryReport> {
    let Some(root) = cache_root else {
        return Ok(HistoryReport::default());
    };
    let file = history_file(root, repo.id());
    let observed = observe(repo)?;
    let seen = load(&file, repo.id());
    let report = match &seen {
        Some(seen) => HistoryReport {
            first_use: false,
            findings: compare(seen, &observed),
        },
        None => HistoryReport {
            first_use: true,
            findings: Vec::new(),
        },
    };
    let next = remember(seen.unwrap_or_default(), &observed, &report.findings);
    store(&file, repo.id(), &next);
    Ok(report)
}

/// Adds a snapshot this machine just wrote, so that its disappearance is
/// noticed even before the next listing.
pub fn remember_snapshot(repo: &Repository, cache_root: Option<&Path>, id: SnapshotId) {
    update(repo, cache_root, |seen| {
        seen.snapshots.insert(id);
    });
}

/// Remembers a key slot this machine removed: if it comes back, it was
/// restored from an old copy.
pub fn remember_removed_slot(repo: &Repository, cache_root: Option<&Path>, id: KeySlotId) {
    update(repo, cache_root, |seen| {
        seen.removed_slots.insert(id);
    });
}

fn update(repo: &Repository, cache_root: Option<&Path>, change: impl FnOnce(&mut Seen)) {
    let Some(root) = cache_root else { return };
    let file = history_file(root, repo.id());
    let mut seen = load(&file, repo.id()).unwrap_or_default();
    change(&mut seen);
    store(&file, repo.id(), &seen);
}

/// Reads what the comparison needs: the config's bytes, the snapshot and
/// record listings, the records, the key slots.
fn observe(repo: &Repository) -> Result<Observed> {
    let config = repo.stored_config()?;
    // A damaged or unhonoured record still counts as present, with
    // nothing to say.
    let loaded = records::load_lenient(repo)?;
    let created = |r: &Option<PruneRecord>| r.as_ref().map_or(0, |r| r.created);
    Ok(Observed {
        config: *blake3::hash(&config).as_bytes(),
        snapshots: repo.list::<Snapshot>()?.into_iter().collect(),
        records: loaded.iter().map(|(id, r)| (*id, created(r))).collect(),
        forgotten: forgotten_by(&loaded),
        slots: repo.list_keys()?.into_iter().map(|k| k.id).collect(),
    })
}

/// Snapshot ids the records name as forgotten (format-spec/12).
fn forgotten_by(loaded: &[(RecordId, Option<PruneRecord>)]) -> BTreeSet<SnapshotId> {
    let honoured = loaded.iter().filter_map(|(_, r)| r.as_ref());
    honoured.flat_map(|r| r.forgotten.iter().copied()).collect()
}

/// Every way `observed` went back from `seen`.
pub fn compare(seen: &Seen, observed: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    if seen.config.is_some_and(|c| c != observed.config) {
        out.push(Finding::ConfigChanged);
    }
    if let Some((id, created)) = seen.newest_record {
        let kept = observed
            .records
            .iter()
            .any(|(r, c)| *r == id || *c >= created);
        if !kept {
            out.push(Finding::RecordGone { id, created });
        }
    }
    for id in &seen.snapshots {
        if !observed.snapshots.contains(id) && !observed.forgotten.contains(id) {
            out.push(Finding::SnapshotGone(*id));
        }
    }
    for id in seen.removed_slots.intersection(&observed.slots) {
        out.push(Finding::SlotReturned(*id));
    }
    out
}

/// What to remember after a comparison: what is there now, plus what went
/// missing (so the same findings come back next time).
fn remember(old: Seen, observed: &Observed, findings: &[Finding]) -> Seen {
    let newest = observed.records.iter().max_by_key(|(id, c)| (*c, *id));
    let mut next = Seen {
        config: old.config.or(Some(observed.config)),
        newest_record: newest.copied().or(old.newest_record),
        snapshots: observed.snapshots.clone(),
        removed_slots: old.removed_slots,
    };
    for f in findings {
        match f {
            Finding::SnapshotGone(id) => {
                next.snapshots.insert(*id);
            }
            Finding::RecordGone { id, created } => next.newest_record = Some((*id, *created)),
            Finding::ConfigChanged | Finding::SlotReturned(_) => {}
        }
    }
    next
}

fn load(file: &Path, repo: &RepoId) -> Option<Seen> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("history {}: {e}; starting it again", file.display());
            return None;
        }
    };
    let parsed = parse(&text, repo);
    if parsed.is_none() {
        tracing::warn!(
            "history {} is damaged or of another repository; starting it again",
            file.display()
        );
    }
    parsed
}

/// Parses the file's text; `None` unless every line is understood and it
/// names `repo`.
pub fn parse(text: &str, repo: &RepoId) -> Option<Seen> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC || lines.next()? != format!("repository {}", repo.to_hex()) {
        return None;
    }
    let mut seen = Seen::default();
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        match key {
            "config" => seen.config = Some(RepoId::from_hex(value).ok()?.0),
            "record" => {
                let (id, created) = value.split_once(' ')?;
                seen.newest_record = Some((RecordId::from_hex(id).ok()?, created.parse().ok()?));
            }
            "snapshot" => {
                seen.snapshots.insert(SnapshotId::from_hex(value).ok()?);
            }
            "removed-slot" => {
                seen.removed_slots.insert(KeySlotId::from_hex(value).ok()?);
            }
            _ => return None,
        }
    }
    Some(seen)
}

/// The file's text for `seen`.
pub fn render(seen: &Seen, repo: &RepoId) -> String {
    let mut lines = vec![MAGIC.to_owned(), format!("repository {}", repo.to_hex())];
    if let Some(c) = seen.config {
        lines.push(format!("config {}", hex::encode(c)));
    }
    if let Some((id, created)) = seen.newest_record {
        lines.push(format!("record {} {created}", id.to_hex()));
    }
    lines.extend(
        seen.snapshots
            .iter()
            .map(|id| format!("snapshot {}", id.to_hex())),
    );
    let removed = seen.removed_slots.iter();
    lines.extend(removed.map(|id| format!("removed-slot {}", id.to_hex())));
    lines.join("\n") + "\n"
}

/// Writes the file whole (a temporary file renamed over it, 0600 in a
/// 0700 directory); a failure is a warning.
fn store(file: &Path, repo: &RepoId, seen: &Seen) {
    if let Err(e) = write_atomically(file, render(seen, repo).as_bytes()) {
        tracing::warn!("history {} not written: {e}", file.display());
    }
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    crate::chunkstore::index::create_private_dir(dir)?;
    let temp = dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    fs::rename(&temp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T>(n: u8, make: fn([u8; 32]) -> T) -> T {
        make([n; 32])
    }

    fn observed() -> Observed {
        Observed {
            config: [7; 32],
            snapshots: [id(1, SnapshotId), id(2, SnapshotId)].into(),
            records: vec![(id(9, RecordId), 100)],
            forgotten: BTreeSet::new(),
            slots: [id(5, KeySlotId)].into(),
        }
    }

    fn seen_now() -> Seen {
        remember(Seen::default(), &observed(), &[])
    }

    #[test]
    fn nothing_changed_is_nothing_found() {
        assert!(compare(&seen_now(), &observed()).is_empty());
    }

    #[test]
    fn a_snapshot_gone_without_a_record_is_found_and_kept_in_mind() {
        let mut now = observed();
        now.snapshots.remove(&id(2, SnapshotId));
        let findings = compare(&seen_now(), &now);
        assert_eq!(findings, vec![Finding::SnapshotGone(id(2, SnapshotId))]);
        let next = remember(seen_now(), &now, &findings);
        assert_eq!(compare(&next, &now), findings, "the alarm repeats");
    }

    #[test]
    fn a_snapshot_a_record_forgot_is_not_a_finding() {
        let mut now = observed();
        now.snapshots.remove(&id(2, SnapshotId));
        now.forgotten.insert(id(2, SnapshotId));
        assert!(compare(&seen_now(), &now).is_empty());
        let next = remember(seen_now(), &now, &[]);
        assert!(!next.snapshots.contains(&id(2, SnapshotId)));
    }

    #[test]
    fn a_record_may_go_only_for_a_newer_one() {
        let mut swept = observed();
        swept.records = vec![(id(10, RecordId), 200)];
        assert!(compare(&seen_now(), &swept).is_empty());
        let mut gone = observed();
        gone.records.clear();
        assert_eq!(
            compare(&seen_now(), &gone),
            vec![Finding::RecordGone {
                id: id(9, RecordId),
                created: 100
            }]
        );
    }

    #[test]
    fn a_changed_config_and_a_returned_slot_are_found() {
        let mut seen = seen_now();
        seen.removed_slots.insert(id(5, KeySlotId));
        let mut now = observed();
        now.config = [8; 32];
        assert_eq!(
            compare(&seen, &now),
            vec![
                Finding::ConfigChanged,
                Finding::SlotReturned(id(5, KeySlotId))
            ]
        );
    }

    #[test]
    fn the_file_round_trips_and_refuses_what_it_does_not_know() {
        let repo = id(3, RepoId);
        let mut seen = seen_now();
        seen.removed_slots.insert(id(6, KeySlotId));
        let text = render(&seen, &repo);
        assert_eq!(parse(&text, &repo), Some(seen));
        assert_eq!(parse(&text, &id(4, RepoId)), None, "another repository");
        assert_eq!(parse(&format!("{text}odd line\n"), &repo), None);
        assert_eq!(parse("", &repo), None);
    }
}
