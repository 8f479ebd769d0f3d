//! Prune's condemn race (format-spec/12) and lost index files: every reader
//! resolves a blob the index lacks in the headers of the unindexed packs
//! (`chunkstore::Locator`), so a snapshot that needs a pack a concurrent
//! prune condemned, or a pack whose index file is gone, restores whole,
//! `check` calls it no damage, and `repair snapshots` cuts nothing.
//!
//! The interleavings are driven through the library, deterministically:
//! prune's `plan` (list snapshots, mark the live set) and `execute` (write
//! the record, rewrite the index) are called apart, and a hook on the
//! prune's backend runs a whole backup right after the record is written.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kura::backend::{Backend, HookedBackend};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::clock::Clock;
use kura::format::layout;
use kura::id::SnapshotId;
use kura::ops::backup::{BackupOptions, backup};
use kura::ops::check::{CheckOptions, CheckReport, Subset, check};
use kura::ops::prune::{PruneReport, execute, plan, prune};
use kura::ops::repair::{RepairSnapshotsOptions, repair_snapshots};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::Repository;
use kura::repository::snapshots;

use crate::common::{PASSWORD, describe};
use crate::prune::{World, graced, small_packs, two_snapshots};

const GRACE: u64 = 3600;
/// A first prune only writes down what it saw; the racing one runs a
/// grace later and condemns; the sweep a grace after that.
const T0: u64 = 2_000_000_000;
const T1: u64 = T0 + GRACE;

fn open(backend: Arc<dyn Backend>) -> Repository {
    Repository::open(backend, PASSWORD).unwrap()
}

fn synced(repo: &Repository) -> ChunkIndex {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(repo).unwrap();
    index
}

/// Backs up `src` into the repository behind `backend`.
fn backup_of(backend: Arc<dyn Backend>, src: &Path) -> SnapshotId {
    let repo = open(backend);
    let index = synced(&repo);
    let options = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "test".into(),
        store: small_packs(),
        ..BackupOptions::default()
    };
    backup(&repo, &index, &options).unwrap().snapshot
}

impl World {
    fn dyn_backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    fn prune_at(&self, now: u64) -> PruneReport {
        let repo = open(self.dyn_backend());
        prune(&repo, &synced(&repo), &self.scratch(), &graced(now)).unwrap()
    }

    fn check(&self) -> CheckReport {
        // At the prunes' time, past the last: their records are not in
        // the future of the check (which would note them).
        let mut repo = open(self.dyn_backend());
        repo.set_clock(Clock::at_unix(T1 + 10 * GRACE));
        let options = CheckOptions {
            read_data: Some(Subset::All),
            ..CheckOptions::default()
        };
        check(&repo, &synced(&repo), &options).unwrap()
    }

    /// Every snapshot present restores to what it was made from (with a
    /// fresh cache, as on another machine).
    fn assert_restores(&self) {
        let repo = open(self.dyn_backend());
        let index = synced(&repo);
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        let listed = snapshots::list(&repo).unwrap();
        assert_eq!(listed.len(), self.expected.len(), "snapshots lost or added");
        for (id, snap) in listed {
            let target = self.scratch().join(format!("restore-{id}"));
            let _ = fs::remove_dir_all(&target);
            let options = RestoreOptions {
                target: target.clone(),
                ..RestoreOptions::default()
            };
            restore(&store, &snap.tree_id().unwrap(), &options)
                .unwrap_or_else(|e| panic!("snapshot {id}: {e}"));
            let got = describe(&target.join(self.src.strip_prefix("/").unwrap()));
            assert_eq!(
                got, self.expected[&id],
                "snapshot {id} restores differently"
            );
            fs::remove_dir_all(&target).unwrap();
        }
    }

    /// `repair snapshots` finds nothing to cut and changes no snapshot.
    fn assert_repair_changes_nothing(&self) {
        let repo = open(self.dyn_backend());
        let before = snapshots::list_ids(&repo).unwrap();
        let report =
            repair_snapshots(&repo, &synced(&repo), &RepairSnapshotsOptions::default()).unwrap();
        assert!(report.repaired.is_empty(), "{:?}", report.repaired);
        assert_eq!(report.blobs_salvaged, 0);
        assert_eq!(snapshots::list_ids(&repo).unwrap(), before);
    }

    /// Whole by every measure: check clean, every snapshot restores,
    /// repair changes nothing.
    fn assert_whole(&self) -> CheckReport {
        let report = self.check();
        assert!(report.is_clean(), "{:?}", report.damage);
        self.assert_restores();
        self.assert_repair_changes_nothing();
        report
    }
}

/// The orderings of a prune {P1 list snapshots, P2 mark the live set,
/// P3 write the record, P4 rewrite the index} and a backup {B1 dedup
/// lookup, B2 commit check, B3 write the snapshot} that the protocol
/// allows (each side in its own order), up to equivalence. What decides
/// the outcome is only: whether P1 sees the snapshot (B3 < P1), whether
/// the commit check sees the record (P3 < B2), and whether the dedup
/// lookup still finds the condemned pack indexed (B1 < P4). P2 reads only
/// what P1 listed, and P3/P4 read no snapshot, so moving a backup step
/// across P2, or B3 across P3/P4, changes nothing. That leaves:
///
/// | case | order | equivalent orders |
/// |---|---|---|
/// | `BackupFirst` | B1 B2 B3 P1 P2 P3 P4 | none other |
/// | `RedTeam` | P1 P2 B1 B2 B3 P3 P4 | P1 B1 B2 B3 P2 P3 P4; P1 P2 B1 B2 P3 B3 P4; P1 P2 B1 B2 P3 P4 B3; any B1 B2 before P3 after P1 |
/// | `AfterRecord` | P1 P2 P3 B1 B2 B3 P4 | B1 before P3, B2 after P3 (B1 < P4, P3 < B2) |
/// | `PruneFirst` | P1 P2 P3 P4 B1 B2 B3 | none other (B1 after P4) |
#[derive(Debug, Clone, Copy)]
enum Order {
    BackupFirst,
    RedTeam,
    AfterRecord,
    PruneFirst,
}

/// Snapshots {a, b} then {b, c}; the first is forgotten, and `a` is back
/// in the source, so the backup that races the prune dedups `a` against
/// packs that prune condemns (or repacks).
fn race(order: Order) {
    let mut w = racing_world();
    let racing = match order {
        Order::BackupFirst => {
            let id = w.backup();
            w.prune_at(T1);
            id
        }
        Order::RedTeam => red_team(&mut w),
        Order::AfterRecord => backup_after_record(&w),
        Order::PruneFirst => {
            assert!(w.prune_at(T1).condemned_packs > 0);
            w.backup()
        }
    };
    w.expected.insert(racing, describe(&w.src));
    let report = w.assert_whole();
    if matches!(order, Order::RedTeam) {
        let note = report.notes.join("\n");
        assert!(note.contains("is condemned by prune record"), "{note}");
        assert!(
            note.contains("the next prune after the grace keeps it"),
            "{note}"
        );
    }
    // The sweep, past the grace: it keeps what the new snapshot needs.
    let sweep = w.prune_at(T1 + GRACE + 1);
    if matches!(order, Order::RedTeam) {
        assert!(sweep.resurrected_packs > 0, "{sweep:?}");
    }
    let report = w.assert_whole();
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    w.prune_at(T1 + 2 * GRACE + 2);
    w.assert_whole();
}

/// The world before the race: the first prune has run, `a` is back in
/// the source and only packs the racing prune condemns hold it.
fn racing_world() -> World {
    let (mut w, first, _) = two_snapshots();
    w.forget(&first);
    assert_eq!(w.prune_at(T0).condemned_packs, 0);
    w.write("a", 300_000, 1);
    w
}

/// The red team's order: the prune marks, a whole backup dedups against
/// packs it is about to condemn and commits, then the prune condemns them.
fn red_team(w: &mut World) -> SnapshotId {
    let repo = open(w.dyn_backend());
    let index = synced(&repo);
    let planned = plan(&repo, &index, &w.scratch(), &graced(T1)).unwrap();
    let id = w.backup();
    let report = execute(&repo, &index, &w.scratch(), &planned, &graced(T1)).unwrap();
    assert!(report.condemned_packs > 0, "{report:?}");
    id
}

/// Runs a prune whose backend starts a whole backup right after the prune
/// record is written (between P3 and P4); returns the backup's snapshot.
fn backup_after_record(w: &World) -> SnapshotId {
    let done: Arc<Mutex<Option<SnapshotId>>> = Arc::default();
    let (inner, src, out) = (w.dyn_backend(), w.src.clone(), Arc::clone(&done));
    let hooked = HookedBackend::new(w.dyn_backend()).on_write(move |path, _, result| {
        let mut out = out.lock().unwrap();
        if path.starts_with(layout::PRUNE_DIR) && result.is_ok() && out.is_none() {
            *out = Some(backup_of(Arc::clone(&inner), &src));
        }
    });
    let repo = open(Arc::new(hooked));
    let report = prune(&repo, &synced(&repo), &w.scratch(), &graced(T1)).unwrap();
    assert!(report.condemned_packs > 0, "{report:?}");
    let id = done.lock().unwrap().take();
    id.expect("the backup ran after the record")
}

#[test]
fn a_backup_before_the_prune_lists_snapshots_is_whole() {
    race(Order::BackupFirst);
}

#[test]
fn a_backup_committed_between_marking_and_the_record_is_whole() {
    race(Order::RedTeam);
}

#[test]
fn a_backup_between_the_record_and_the_index_rewrite_is_whole() {
    race(Order::AfterRecord);
}

#[test]
fn a_backup_after_the_prune_is_whole() {
    race(Order::PruneFirst);
}

/// Readers find blobs in condemned packs; a writer does not dedup against
/// them (format-spec/12, backup rule 1): the next backup stores `a` again.
#[test]
fn a_backup_never_dedups_against_a_pack_only_readers_find() {
    let mut w = racing_world();
    let racing = red_team(&mut w);
    w.expected.insert(racing, describe(&w.src));
    let repo = open(w.dyn_backend());
    let options = BackupOptions {
        paths: vec![w.src.clone()],
        hostname: "test".into(),
        store: small_packs(),
        ..BackupOptions::default()
    };
    let next = backup(&repo, &synced(&repo), &options).unwrap();
    assert!(next.summary.chunks_new > 0, "{:?}", next.summary);
    w.expected.insert(next.snapshot, describe(&w.src));
    w.assert_whole();
    w.prune_at(T1 + GRACE + 1);
    w.assert_whole();
}

/// Two snapshots over several index files; `damage` then breaks one index
/// file. Every snapshot still restores byte-identical from the pack
/// headers, `repair snapshots` cuts nothing, and `check` says what to run.
fn lost_index_file(damage: impl Fn(&World, &str)) -> (World, CheckReport) {
    let mut w = World::new();
    w.write("a", 300_000, 1);
    w.backup();
    w.write("b", 300_000, 2);
    w.backup();
    let files = w.backend.list(layout::INDEX_DIR).unwrap();
    assert!(files.len() > 1, "{} index files", files.len());
    damage(&w, &files[0].path);
    w.assert_restores();
    w.assert_repair_changes_nothing();
    let report = w.check();
    (w, report)
}

#[test]
fn a_deleted_index_file_leaves_every_snapshot_restorable() {
    let (_, report) = lost_index_file(|w, path| w.backend.delete(path).unwrap());
    assert!(report.is_clean(), "{:?}", report.damage);
    let note = report.notes.join("\n");
    assert!(note.contains("is in no index file"), "{note}");
    assert!(note.contains("kura repair index"), "{note}");
}

#[test]
fn a_damaged_index_file_leaves_every_snapshot_restorable() {
    let (_, report) = lost_index_file(|w, path| {
        w.backend.tamper(path, |b| {
            let mid = b.len() / 2;
            b[mid] ^= 1;
        });
    });
    let named = report
        .damage
        .iter()
        .find(|d| d.object.starts_with("index "))
        .unwrap_or_else(|| panic!("{:?}", report.damage));
    assert_eq!(named.repair(), Some("kura repair index"));
    let note = report.notes.join("\n");
    assert!(note.contains("kura repair index"), "{note}");
}

/// The red team's state through the CLI: `check --read-data` exits 0 and
/// prints the note, restore is byte-identical, `repair snapshots` cuts
/// nothing.
#[test]
fn the_cli_calls_the_race_a_note_not_damage() {
    use std::ffi::OsStr;

    use kura::backend::{LocalBackend, write_bytes};

    let mut w = racing_world();
    let racing = red_team(&mut w);
    let repo_dir = w.dir.path().join("repo");
    let local = LocalBackend::new(&repo_dir);
    let mut objects = crate::common::all_objects(w.backend.as_ref());
    for info in w.backend.list(layout::PRUNE_DIR).unwrap() {
        let bytes = w.backend.read(&info.path, None).unwrap();
        objects.push((info.path, bytes));
    }
    for (name, bytes) in objects {
        write_bytes(&local, &name, &bytes).unwrap();
    }
    let cache = w.dir.path().join("cache");
    let env = [
        (
            "KURA_PASSWORD",
            OsStr::new(std::str::from_utf8(PASSWORD).unwrap()),
        ),
        ("KURA_CACHE_DIR", cache.as_os_str()),
    ];
    let run = |args: &[&str]| {
        let out = crate::common::kura_env(&repo_dir, &env, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            crate::common::stderr(&out)
        );
        text
    };
    let checked = run(&["check", "--read-data"]);
    assert!(checked.contains("note: pack "), "{checked}");
    assert!(
        checked.contains(&format!("snapshot {}", &racing.to_hex()[..16])),
        "{checked}"
    );
    assert!(checked.contains("no damage found"), "{checked}");
    let repaired = run(&["repair", "snapshots"]);
    let target = w.dir.path().join("restored");
    let id = racing.to_hex();
    run(&["restore", &id, "--target", target.to_str().unwrap()]);
    let got = describe(&target.join(w.src.strip_prefix("/").unwrap()));
    assert_eq!(got, describe(&w.src), "{repaired}");
    let listed = LocalBackend::new(&repo_dir)
        .list(layout::SNAPSHOTS_DIR)
        .unwrap();
    assert_eq!(listed.len(), 2, "{repaired}");
}
