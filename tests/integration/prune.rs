//! Prune (format-spec/12): two phases over a grace period, repacking,
//! crash points, listing errors, and backups that run across a prune.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura::backend::faulty::FaultPlan;
use kura::backend::{Backend, FaultyBackend, HookedBackend, MemoryBackend, write_bytes};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::pack::PackerOptions;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::clock::Clock;
use kura::format::layout;
use kura::id::SnapshotId;
use kura::ops::backup::{BackupOptions, backup};
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::prune::{PruneOptions, PruneReport, prune};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::Repository;
use kura::repository::snapshots;

use crate::common::{PASSWORD, all_objects, describe, fast_options, pseudo_random};

/// Small packs, so that a few hundred KiB make many packs that mix files.
pub(crate) fn small_packs() -> ChunkStoreOptions {
    ChunkStoreOptions {
        packer: PackerOptions {
            target_size: 96 << 10,
            open_packs: 2,
        },
        index_every: 4,
        ..ChunkStoreOptions::default()
    }
}

/// A repository in memory, a source folder, and what each snapshot must
/// restore to (also the race tests' world, tests/integration/race.rs).
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) src: PathBuf,
    pub(crate) backend: Arc<MemoryBackend>,
    /// What each snapshot must restore to.
    pub(crate) expected: HashMap<SnapshotId, HashMap<PathBuf, String>>,
}

impl World {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let backend = Arc::new(MemoryBackend::new());
        Repository::init(
            backend.clone() as Arc<dyn Backend>,
            PASSWORD,
            &fast_options(),
        )
        .unwrap();
        Self {
            dir,
            src,
            backend,
            expected: HashMap::new(),
        }
    }

    pub(crate) fn open(backend: Arc<dyn Backend>) -> Repository {
        Repository::open(backend, PASSWORD).unwrap()
    }

    pub(crate) fn repo(&self) -> Repository {
        World::open(self.backend.clone() as Arc<dyn Backend>)
    }

    pub(crate) fn write(&self, name: &str, len: usize, seed: u64) {
        fs::write(self.src.join(name), pseudo_random(len, seed)).unwrap();
    }

    pub(crate) fn backup(&mut self) -> SnapshotId {
        let repo = self.repo();
        let index = ChunkIndex::open(None).unwrap();
        index.sync(&repo).unwrap();
        let report = backup(
            &repo,
            &index,
            &BackupOptions {
                paths: vec![self.src.clone()],
                hostname: "test".into(),
                store: small_packs(),
                ..BackupOptions::default()
            },
        )
        .unwrap();
        self.expected.insert(report.snapshot, describe(&self.src));
        report.snapshot
    }

    pub(crate) fn forget(&mut self, id: &SnapshotId) {
        self.backend.delete(&layout::snapshot_path(id)).unwrap();
        self.expected.remove(id);
    }

    pub(crate) fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    fn prune(&self, options: &PruneOptions) -> PruneReport {
        prune_on(&self.repo(), &self.scratch(), options).unwrap()
    }

    /// A copy of the repository's objects in a new memory backend.
    fn copy(&self) -> Arc<MemoryBackend> {
        let copy = Arc::new(MemoryBackend::new());
        for (name, bytes) in all_objects(self.backend.as_ref()) {
            write_bytes(copy.as_ref(), &name, &bytes).unwrap();
        }
        copy
    }

    fn data_bytes(backend: &dyn Backend) -> u64 {
        backend
            .list(layout::DATA_DIR)
            .unwrap()
            .iter()
            .map(|i| i.size)
            .sum()
    }
}

fn prune_on(
    repo: &Repository,
    scratch: &Path,
    options: &PruneOptions,
) -> kura::Result<PruneReport> {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(repo)?;
    prune(repo, &index, scratch, options)
}

/// `check --read-data` with a fresh cache must be clean, and every snapshot
/// present must be one of `expected` and restore to it.
fn assert_whole(
    backend: Arc<dyn Backend>,
    expected: &HashMap<SnapshotId, HashMap<PathBuf, String>>,
    src: &Path,
    scratch: &Path,
) {
    let repo = Repository::open(backend, PASSWORD).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let report = check(
        &repo,
        &index,
        &CheckOptions {
            read_data: Some(Subset::All),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    for (id, snap) in snapshots::list(&repo).unwrap() {
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("snapshot {id} was never committed"));
        let target = scratch.join(format!("restore-{id}"));
        let _ = fs::remove_dir_all(&target);
        restore(
            &store,
            &snap.tree_id().unwrap(),
            &RestoreOptions {
                target: target.clone(),
                ..RestoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("snapshot {id}: {e}"));
        let got = describe(&target.join(src.strip_prefix("/").unwrap()));
        assert_eq!(&got, want, "snapshot {id} restores differently");
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Two snapshots sharing `b`; the first also has `a`, the second `c`.
pub(crate) fn two_snapshots() -> (World, SnapshotId, SnapshotId) {
    let mut w = World::new();
    w.write("a", 300_000, 1);
    w.write("b", 300_000, 2);
    let first = w.backup();
    fs::remove_file(w.src.join("a")).unwrap();
    w.write("c", 300_000, 3);
    let second = w.backup();
    (w, first, second)
}

/// Like [`two_snapshots`], but `a` and `b` are many small files whose names
/// interleave (`f00a`, `f00b`, ...), so each pack of the first snapshot
/// holds chunks of both: once `a` is gone, every such pack is partly dead
/// and needs repacking, whatever the random placement over open packs did.
fn interleaved_snapshots() -> (World, SnapshotId, SnapshotId) {
    let mut w = World::new();
    for i in 0..32 {
        w.write(&format!("f{i:02}a"), 6_000, 100 + i);
        w.write(&format!("f{i:02}b"), 6_000, 200 + i);
    }
    let first = w.backup();
    for i in 0..32 {
        fs::remove_file(w.src.join(format!("f{i:02}a"))).unwrap();
        w.write(&format!("f{i:02}c"), 6_000, 300 + i);
    }
    let second = w.backup();
    (w, first, second)
}

pub(crate) fn graced(now: u64) -> PruneOptions {
    PruneOptions {
        grace: 3600,
        clock: Clock::at_unix(now),
        ..PruneOptions::default()
    }
}

const T0: u64 = 2_000_000_000;

#[test]
fn packs_are_condemned_then_deleted_by_runs_a_grace_apart() {
    let (mut w, first, _) = two_snapshots();
    w.forget(&first);
    let before = World::data_bytes(w.backend.as_ref());

    // No record yet: the first run only writes down what it saw.
    let r1 = w.prune(&graced(T0));
    assert!(r1.record_written);
    assert_eq!((r1.condemned_packs, r1.deleted_packs), (0, 0));
    // Within the grace period nothing is old enough either.
    let r2 = w.prune(&graced(T0 + 1800));
    assert_eq!((r2.condemned_packs, r2.deleted_packs), (0, 0));

    // Ripe: the packs only `a` used are condemned, not yet deleted.
    let r3 = w.prune(&graced(T0 + 3600));
    assert!(r3.condemned_packs > 0, "{r3:?}");
    assert_eq!(r3.deleted_packs, 0);
    assert_eq!(
        World::data_bytes(w.backend.as_ref()),
        before + r3.new_pack_bytes
    );
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());

    // A run before the condemning record ripens deletes nothing.
    let r4 = w.prune(&graced(T0 + 3600 + 1800));
    assert_eq!(r4.deleted_packs, 0);

    let r5 = w.prune(&graced(T0 + 7200));
    assert_eq!(r5.deleted_packs, r3.condemned_packs, "{r5:?}");
    assert!(r5.freed_bytes > 0);
    let after = World::data_bytes(w.backend.as_ref());
    let rewritten: u64 = [&r1, &r2, &r3, &r4, &r5]
        .iter()
        .map(|r| r.new_pack_bytes)
        .sum();
    assert_eq!(after, before + rewritten - r5.freed_bytes);
    assert!(after < before * 3 / 4, "{after} of {before}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
    // Records are swept with their packs; the newest stays as reference.
    assert!(!w.backend.list(layout::PRUNE_DIR).unwrap().is_empty());
}

#[test]
fn prune_now_deletes_and_repacks_in_one_run() {
    let (mut w, first, _) = interleaved_snapshots();
    w.forget(&first);
    let before = World::data_bytes(w.backend.as_ref());
    let dry = w.prune(&PruneOptions {
        grace: 0,
        dry_run: true,
        max_unused: 0.0,
        ..PruneOptions::default()
    });
    assert_eq!(World::data_bytes(w.backend.as_ref()), before);
    let r = w.prune(&PruneOptions {
        grace: 0,
        max_unused: 0.0,
        ..PruneOptions::default()
    });
    assert_eq!(r.deleted_packs, dry.deleted_packs);
    assert!(r.repacked_packs > 0, "packs mixing a and b: {r:?}");
    assert!(r.rewritten_bytes > 0);
    assert_eq!(r.unused_bytes_after, 0);
    assert!(!r.record_written);
    let after = World::data_bytes(w.backend.as_ref());
    assert!(after < before * 3 / 4, "{after} of {before}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
    // Nothing is left to do.
    let again = w.prune(&PruneOptions {
        grace: 0,
        max_unused: 0.0,
        ..PruneOptions::default()
    });
    assert_eq!(
        (again.deleted_packs, again.repacked_packs),
        (0, 0),
        "{again:?}"
    );
}

/// A file changed in its middle leaves the group that held its old middle
/// partly live (format-spec/12, step 5): its dead share counts as unused,
/// and repack seals the live chunks again as a new group.
#[test]
fn a_partly_live_group_is_repacked_with_its_live_chunks_only() {
    let mut w = World::new();
    let mut big = pseudo_random(900_000, 21);
    fs::write(w.src.join("big"), &big).unwrap();
    let first = w.backup();
    big[400_000..460_000].copy_from_slice(&pseudo_random(60_000, 22));
    fs::write(w.src.join("big"), &big).unwrap();
    w.backup();
    w.forget(&first);
    let dry = w.prune(&PruneOptions {
        grace: 0,
        dry_run: true,
        max_unused: 0.0,
        ..PruneOptions::default()
    });
    assert!(
        dry.repacked_packs > 0,
        "the partly live group's pack: {dry:?}"
    );
    let before = World::data_bytes(w.backend.as_ref());
    let r = w.prune(&PruneOptions {
        grace: 0,
        max_unused: 0.0,
        ..PruneOptions::default()
    });
    assert!(r.repacked_packs > 0, "{r:?}");
    // Only the live chunks were sealed again: less than the whole group.
    assert!(r.rewritten_bytes < 900_000, "{r:?}");
    assert_eq!(r.unused_bytes_after, 0, "{r:?}");
    let after = World::data_bytes(w.backend.as_ref());
    assert!(after < before, "{after} of {before}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
}

#[test]
fn small_index_files_are_merged() {
    let mut w = World::new();
    for night in 0..10 {
        w.write(&format!("n{night}"), 50_000, 100 + night);
        w.backup();
    }
    let files = |w: &World| w.backend.list(layout::INDEX_DIR).unwrap().len();
    let before = files(&w);
    assert!(before >= 10, "{before}");
    let r = w.prune(&PruneOptions {
        grace: 0,
        ..PruneOptions::default()
    });
    assert_eq!(r.deleted_packs, 0, "{r:?}");
    assert_eq!(files(&w), 1, "{before} files merged into one: {r:?}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
    // Nothing to merge any more.
    let again = w.prune(&PruneOptions {
        grace: 0,
        ..PruneOptions::default()
    });
    assert_eq!(
        (again.index_files_written, again.index_files_deleted),
        (0, 0)
    );
}

#[test]
fn the_default_threshold_leaves_a_little_unused_space_alone() {
    let (mut w, _, _) = two_snapshots();
    // Both snapshots live: nothing unused, nothing to do.
    let r = w.prune(&PruneOptions {
        grace: 0,
        ..PruneOptions::default()
    });
    assert_eq!(
        (r.deleted_packs, r.repacked_packs, r.condemned_packs),
        (0, 0, 0)
    );
    let _ = &mut w;
}

#[test]
fn a_failed_listing_makes_prune_delete_nothing() {
    let (mut w, first, _) = two_snapshots();
    w.forget(&first);
    let before = all_objects(w.backend.as_ref());
    let faulty = Arc::new(FaultyBackend::new(w.backend.clone() as Arc<dyn Backend>));
    let repo = World::open(faulty.clone() as Arc<dyn Backend>);
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    faulty.set_plan(FaultPlan {
        fail_lists: true,
        ..FaultPlan::default()
    });
    let options = PruneOptions {
        grace: 0,
        max_unused: 0.0,
        ..PruneOptions::default()
    };
    assert!(prune(&repo, &index, &w.scratch(), &options).is_err());
    assert_eq!(all_objects(w.backend.as_ref()), before);
}

/// Runs `options` against a copy of `w` crashing at operation k, for every
/// k until a run completes; after each, the copy checks clean, its
/// snapshots restore, and a fault-free `prune --now` finishes the job.
fn crash_everywhere(w: &World, options: &PruneOptions) -> u64 {
    let mut k = 1;
    loop {
        let copy = w.copy();
        let faulty = Arc::new(FaultyBackend::new(copy.clone() as Arc<dyn Backend>));
        let repo = World::open(faulty.clone() as Arc<dyn Backend>);
        faulty.set_plan(FaultPlan {
            crash_at: Some(k),
            ..FaultPlan::default()
        });
        let outcome = prune_on(&repo, &w.scratch(), options);
        let crashed = faulty.crashed();
        assert_eq!(outcome.is_err(), crashed, "k={k}: {outcome:?}");
        assert_whole(copy.clone(), &w.expected, &w.src, &w.scratch());
        let finish = prune_on(
            &World::open(copy.clone() as Arc<dyn Backend>),
            &w.scratch(),
            &PruneOptions {
                grace: 0,
                max_unused: 0.0,
                ..PruneOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("k={k}: prune after the crash: {e}"));
        let _ = finish;
        assert_whole(copy.clone(), &w.expected, &w.src, &w.scratch());
        if !crashed {
            return k;
        }
        k += 1;
    }
}

#[test]
fn a_crash_at_any_operation_of_prune_now_leaves_a_whole_repository() {
    let (mut w, first, _) = two_snapshots();
    w.forget(&first);
    let n = crash_everywhere(
        &w,
        &PruneOptions {
            grace: 0,
            max_unused: 0.0,
            ..PruneOptions::default()
        },
    );
    assert!(n > 20, "only {n} operations");
}

#[test]
fn a_crash_at_any_operation_of_graced_runs_leaves_a_whole_repository() {
    let (mut w, first, _) = two_snapshots();
    w.forget(&first);
    w.prune(&graced(T0));
    // The condemning run (reference ripe), crashed everywhere.
    crash_everywhere(&w, &graced(T0 + 3600));
    w.prune(&graced(T0 + 3600));
    // The sweeping run, crashed everywhere.
    let n = crash_everywhere(&w, &graced(T0 + 7200));
    assert!(n > 10, "only {n} operations");
}

/// A store that found blobs in packs a prune then condemned: the commit
/// check takes them back (index file) or copies them, and the sweep then
/// keeps or no longer needs them.
fn relying_store_after_condemning(resurrect: bool) {
    let (mut w, first, _) = two_snapshots();
    let a = pseudo_random(300_000, 1);
    w.forget(&first);
    let repo = w.repo();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    // Like a backup that started before the prune: `a` is found, not stored.
    let refs = store.put_stream(&a[..]).unwrap();
    assert_eq!(store.stats().chunks_new, 0);
    w.prune(&graced(T0));
    let condemning = w.prune(&graced(T0 + 3600));
    assert!(condemning.condemned_packs > 0);
    store.flush().unwrap();
    let secured = store.secure_relied(|_| resurrect).unwrap();
    if resurrect {
        assert!(secured.packs_resurrected > 0, "{secured:?}");
    } else {
        assert!(secured.packs_copied > 0, "{secured:?}");
    }
    assert_eq!(
        store.secure_relied(|_| resurrect).unwrap(),
        kura::chunkstore::SecureReport::default()
    );
    let sweep = w.prune(&graced(T0 + 7200));
    if resurrect {
        assert!(
            sweep.deleted_packs < condemning.condemned_packs,
            "{sweep:?}"
        );
    }
    let fresh = ChunkIndex::open(None).unwrap();
    fresh.sync(&repo).unwrap();
    let reader = ChunkStore::new(&repo, &fresh, ChunkStoreOptions::default());
    let mut back = Vec::new();
    for r in &refs {
        back.extend(reader.get(&r.id).unwrap());
    }
    assert_eq!(back, a);
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
}

#[test]
fn a_store_that_relied_on_condemned_packs_takes_them_back() {
    relying_store_after_condemning(true);
}

#[test]
fn a_store_that_relied_on_condemned_packs_copies_them() {
    relying_store_after_condemning(false);
}

// ---- the CLI, with a real backup process stopped across prunes

mod cli {
    use std::cell::Cell;
    use std::ffi::OsStr;
    use std::fs;
    use std::io::Write;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use crate::common::{BIN, CliRepo, describe, kura_env, pseudo_random, stderr};

    fn ok(out: &std::process::Output) -> String {
        assert!(out.status.success(), "{}", stderr(out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn signal(child: &Child, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The time prunes take as now (`KURA_NOW`), moved on by the test: a
    /// grace period passes without waiting for it. It starts at the system
    /// clock, which backups and checks keep: records stay within the day
    /// of the repository's making and of a check's now that prune and
    /// check accept (format-spec/12).
    struct PruneTime(Cell<u64>);

    impl PruneTime {
        fn new() -> Self {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            Self(Cell::new(now.as_secs()))
        }

        /// Lets a grace period of one second pass (the prune records'
        /// clock has whole seconds).
        fn pass_grace(&self) {
            self.0.set(self.0.get() + 2);
        }

        /// Runs kura on `r` at this time.
        fn run(&self, r: &CliRepo, args: &[&str]) -> std::process::Output {
            let now = format!("@{}", self.0.get());
            let mut env = r.env().to_vec();
            env.push(("KURA_NOW", OsStr::new(&now)));
            kura_env(&r.path, &env, args)
        }
    }

    /// `prune --grace 1s --json` at `t`, its report.
    fn prune(r: &CliRepo, t: &PruneTime) -> serde_json::Value {
        let out = ok(&t.run(r, &["--json", "prune", "--grace", "1s"]));
        serde_json::from_str(&out).unwrap()
    }

    fn restored_matches(r: &CliRepo, dir: &Path, src: &Path, dump: &[u8]) {
        let target = dir.join("restored");
        let _ = fs::remove_dir_all(&target);
        ok(&r.run(&["restore", "latest", "--target", target.to_str().unwrap()]));
        let rel = src.strip_prefix("/").unwrap();
        assert_eq!(describe(&target.join(rel)), describe(src));
        assert_eq!(fs::read(target.join("dump")).unwrap(), dump);
    }

    /// A first snapshot of `src`, then a backup of `src` and of a command
    /// reading a FIFO, started and stopped with SIGSTOP once it reads the
    /// FIFO (it has deduplicated `src` against the first snapshot by
    /// then); the first snapshot is forgotten and two prunes a grace apart
    /// condemn its packs. Returns the stopped backup and the FIFO's writer.
    fn stopped_backup_and_condemned_parent(
        dir: &Path,
        r: &CliRepo,
        src: &Path,
        t: &PruneTime,
    ) -> (Child, fs::File) {
        fs::create_dir_all(src).unwrap();
        fs::write(src.join("x"), pseudo_random(2 << 20, 11)).unwrap();
        fs::write(src.join("y"), pseudo_random(1 << 20, 12)).unwrap();
        ok(&r.run(&["backup", "-q", "--tag", "old", src.to_str().unwrap()]));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let child = Command::new(BIN)
            .arg("-r")
            .arg(&r.path)
            .envs(r.env())
            .args(["backup", "-q", "--tag", "new", src.to_str().unwrap()])
            .arg("--stdin-from-command")
            .arg(format!("dump=cat {}", fifo.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Opening blocks until `cat` opens the other end: the backup has
        // stored `src` and waits for the dump.
        let writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        signal(&child, "-STOP");
        ok(&r.run(&["forget", "--keep-tag", "new"]));
        prune(r, t); // the first record: what exists now
        t.pass_grace();
        let report = prune(r, t);
        assert!(
            report["condemned_packs"].as_u64().unwrap() > 0,
            "the forgotten snapshot's packs are condemned: {report}"
        );
        (child, writer)
    }

    #[test]
    fn a_backup_stopped_until_after_the_condemning_prune_copies_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        let t = PruneTime::new();
        let (child, mut writer) = stopped_backup_and_condemned_parent(dir.path(), &r, &src, &t);
        signal(&child, "-CONT");
        let dump = pseudo_random(100_000, 13);
        writer.write_all(&dump).unwrap();
        drop(writer);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("copied"), "{}", stderr(&out));
        // The sweep deletes the condemned packs; the new snapshot does not
        // need them any more.
        t.pass_grace();
        let report = prune(&r, &t);
        assert!(report["deleted_packs"].as_u64().unwrap() > 0, "{report}");
        ok(&r.run(&["check", "--read-data"]));
        restored_matches(&r, dir.path(), &src, &dump);
    }

    #[test]
    fn a_backup_stopped_across_the_sweep_commits_nothing_and_the_next_one_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        let t = PruneTime::new();
        let (child, mut writer) = stopped_backup_and_condemned_parent(dir.path(), &r, &src, &t);
        t.pass_grace();
        let report = prune(&r, &t);
        assert!(report["deleted_packs"].as_u64().unwrap() > 0, "{report}");
        signal(&child, "-CONT");
        let dump = pseudo_random(100_000, 13);
        writer.write_all(&dump).unwrap();
        drop(writer);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("was pruned while the backup ran"),
            "{}",
            stderr(&out)
        );
        let listed = ok(&r.run(&["snapshots"]));
        assert!(
            !listed.contains("new"),
            "no snapshot was committed: {listed}"
        );
        ok(&r.run(&["check", "--read-data"]));
        // Run again: the data is stored anew and the snapshot is whole.
        fs::write(dir.path().join("dump-file"), &dump).unwrap();
        ok(&r.run(&[
            "backup",
            "-q",
            src.to_str().unwrap(),
            "--stdin-from-command",
            &format!("dump=cat {}", dir.path().join("dump-file").display()),
        ]));
        ok(&r.run(&["check", "--read-data"]));
        restored_matches(&r, dir.path(), &src, &dump);
    }

    #[test]
    fn backups_and_prunes_running_together_leave_every_snapshot_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let t = PruneTime::new();
        let mut prunes = 0;
        for round in 0..6u64 {
            fs::write(
                src.join(format!("f{round}")),
                pseudo_random(3 << 20, 40 + round),
            )
            .unwrap();
            if round >= 2 {
                fs::remove_file(src.join(format!("f{}", round - 2))).unwrap();
            }
            ok(&r.run(&["forget", "--keep-last", "2"]));
            let mut child = Command::new(BIN)
                .arg("-r")
                .arg(&r.path)
                .envs(r.env())
                .args(["backup", "-q", src.to_str().unwrap()])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Prune for as long as the backup runs, and at least once.
            loop {
                let out = t.run(&r, &["prune", "--grace", "1s"]);
                assert!(out.status.success(), "{}", stderr(&out));
                prunes += 1;
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
            ok(&r.run(&["check", "--read-data"]));
            // The next round's prunes may sweep this round's records.
            t.pass_grace();
        }
        assert!(prunes >= 6);
        ok(&r.run(&["check", "--read-data"]));
        let target = dir.path().join("restored");
        ok(&r.run(&["restore", "latest", "--target", target.to_str().unwrap()]));
        assert_eq!(
            describe(&target.join(src.strip_prefix("/").unwrap())),
            describe(&src)
        );
    }

    #[test]
    fn prune_removes_temporary_files_of_killed_writers_only_when_safe() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("x"), pseudo_random(1 << 20, 31)).unwrap();
        ok(&r.run(&["backup", "-q", src.to_str().unwrap()]));
        let temps = [
            r.path.join("index/.0123.tmp-00aa"),
            r.path.join("data/.ab.tmp-11bb"),
        ];
        for t in &temps {
            fs::write(t, b"half a pack").unwrap();
        }
        // A fresh temporary may be a write in progress.
        let report = prune(&r, &PruneTime::new());
        assert_eq!(report["temporaries_removed"], 0);
        assert!(temps.iter().all(|t| t.exists()));
        let out = ok(&r.run(&["--json", "prune", "--now"]));
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["temporaries_removed"], 2, "{out}");
        assert!(temps.iter().all(|t| !t.exists()));
        ok(&r.run(&["check", "--read-data"]));
    }

    /// Every file under `dir` with its bytes.
    fn files_under(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    /// `prune --dry-run` with `args` changes no file of the repository and
    /// reports what `prune` with `args` then reports; returns that report.
    fn dry_run_then_run(r: &CliRepo, t: &PruneTime, args: &[&str]) -> serde_json::Value {
        let before = files_under(&r.path);
        let out = ok(&t.run(r, &[&["--json", "prune", "--dry-run"][..], args].concat()));
        let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(dry["dry_run"], true);
        assert!(
            files_under(&r.path) == before,
            "a dry run changed the repository"
        );
        let out = ok(&t.run(r, &[&["--json", "prune"][..], args].concat()));
        let real: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(real["dry_run"], false);
        for field in [
            "snapshots",
            "live_chunks",
            "packs",
            "bytes",
            "condemned_packs",
            "condemned_bytes",
            "repacked_packs",
            "repacked_bytes",
            "deleted_packs",
            "freed_bytes",
            "resurrected_packs",
            "adopted_packs",
            "records_swept",
            "unused_bytes_after",
        ] {
            assert_eq!(dry[field], real[field], "{field}: {dry} vs {real}");
        }
        real
    }

    #[test]
    fn a_dry_run_changes_nothing_and_reports_what_the_run_then_does() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for seed in [51, 52, 53] {
            fs::write(src.join("x"), pseudo_random(1 << 20, seed)).unwrap();
            ok(&r.run(&["backup", "-q", src.to_str().unwrap()]));
        }
        ok(&r.run(&["forget", "--keep-last", "2"]));
        // The first graced run only writes the reference record; the next
        // condemns, and the one after the grace deletes.
        let t = PruneTime::new();
        prune(&r, &t);
        t.pass_grace();
        let condemning = dry_run_then_run(&r, &t, &["--grace", "1s"]);
        assert!(
            condemning["condemned_packs"].as_u64().unwrap() > 0,
            "{condemning}"
        );
        t.pass_grace();
        let deleting = dry_run_then_run(&r, &t, &["--grace", "1s"]);
        assert!(
            deleting["deleted_packs"].as_u64().unwrap() > 0,
            "{deleting}"
        );
        assert!(
            deleting["freed_bytes"].as_u64().unwrap() > 1_000_000,
            "{deleting}"
        );
        // With --now, both phases in one run.
        ok(&r.run(&["forget", "--keep-last", "1"]));
        let now = dry_run_then_run(&r, &t, &["--now"]);
        assert!(now["deleted_packs"].as_u64().unwrap() > 0, "{now}");
        ok(&r.run(&["check", "--read-data"]));
    }

    #[test]
    fn forget_prune_now_frees_space_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = CliRepo::init(dir.path());
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("x"), pseudo_random(3 << 20, 21)).unwrap();
        ok(&r.run(&["backup", "-q", src.to_str().unwrap()]));
        fs::write(src.join("x"), pseudo_random(3 << 20, 22)).unwrap();
        ok(&r.run(&["backup", "-q", src.to_str().unwrap()]));
        let refused = r.run(&["forget", "--keep-last", "1", "--prune", "--grace", "0"]);
        assert!(!refused.status.success(), "grace 0 needs --now");
        assert_eq!(
            ok(&r.run(&["snapshots"])).lines().count(),
            3,
            "nothing forgotten"
        );
        let out = ok(&r.run(&["--json", "forget", "--keep-last", "1", "--prune", "--now"]));
        let prune: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert!(prune["freed_bytes"].as_u64().unwrap() > 3_000_000, "{out}");
        ok(&r.run(&["check", "--read-data"]));
    }
}

// ---- prune on a damaged repository never deletes a live blob

/// Kinds of damage of the issue's matrix.
#[derive(Debug, Clone, Copy)]
enum Damage {
    MissingPack,
    FlippedPackByte,
    TruncatedPack,
    FlippedIndexByte,
    FlippedTree,
    FlippedSnapshot,
    DuplicateBlobs,
    StaleIndexEntries,
}

fn first_pack_of_kind(repo: &Repository, kind: kura::format::pack::PackKind) -> String {
    for info in repo.backend().list(layout::INDEX_DIR).unwrap() {
        let id = layout::parse_index_path(&info.path).unwrap();
        let file = kura::chunkstore::index::read_index_file(repo, &id).unwrap();
        if let Some(p) = file.packs.iter().find(|p| p.kind == kind) {
            return layout::pack_path(&p.id);
        }
    }
    panic!("no {kind:?} pack");
}

fn damage(w: &mut World, how: Damage) {
    use kura::format::pack::PackKind;
    let repo = w.repo();
    let data_pack = first_pack_of_kind(&repo, PackKind::Data);
    let first = |dir: &str| w.backend.list(dir).unwrap()[0].path.clone();
    match how {
        Damage::MissingPack => w.backend.delete(&data_pack).unwrap(),
        Damage::FlippedPackByte => w.backend.tamper(&data_pack, |b| b[100] ^= 1),
        Damage::TruncatedPack => w.backend.tamper(&data_pack, |b| b.truncate(b.len() / 2)),
        Damage::FlippedIndexByte => w.backend.tamper(&first("index"), |b| b[60] ^= 1),
        Damage::FlippedTree => {
            let tree_pack = first_pack_of_kind(&repo, PackKind::Tree);
            w.backend.tamper(&tree_pack, |b| b[40] ^= 1);
        }
        Damage::FlippedSnapshot => w.backend.tamper(&first("snapshots"), |b| b[50] ^= 1),
        Damage::DuplicateBlobs => {
            // A store that knows nothing stores `b` again: the same blobs
            // in two packs, both indexed.
            let index = ChunkIndex::open(None).unwrap();
            let store = ChunkStore::new(&repo, &index, small_packs());
            store.put_stream(&pseudo_random(300_000, 2)[..]).unwrap();
            store.flush().unwrap();
        }
        Damage::StaleIndexEntries => {
            // An index file naming a pack that does not exist, with the
            // entries of a real one (live chunks among them).
            let index_id = layout::parse_index_path(&first("index")).unwrap();
            let mut file = kura::chunkstore::index::read_index_file(&repo, &index_id).unwrap();
            file.supersedes.clear();
            file.packs.truncate(1);
            file.packs[0].id = kura::id::PackId::random();
            kura::chunkstore::index::write_index_file(&repo, &file, 0).unwrap();
        }
    }
}

/// Every snapshot restored: `Some(description)` if it restores, `None` if
/// it fails.
fn restorable(w: &World) -> HashMap<SnapshotId, Option<HashMap<PathBuf, String>>> {
    let repo = w.repo();
    let index = ChunkIndex::open(None).unwrap();
    let _ = index.sync(&repo);
    restorable_with(w, &index)
}

/// [`restorable`] from what the packs themselves hold (an index rebuilt
/// from every readable pack header, as `repair index` does): the truth a
/// damaged index file cannot hide.
fn restorable_from_packs(w: &World) -> HashMap<SnapshotId, Option<HashMap<PathBuf, String>>> {
    let repo = w.repo();
    let index = ChunkIndex::open(None).unwrap();
    index.rebuild_from_pack_headers(&repo).unwrap();
    restorable_with(w, &index)
}

fn restorable_with(
    w: &World,
    index: &ChunkIndex,
) -> HashMap<SnapshotId, Option<HashMap<PathBuf, String>>> {
    let repo = w.repo();
    let store = ChunkStore::new(&repo, index, ChunkStoreOptions::default());
    let mut out = HashMap::new();
    for id in snapshots::list_ids(&repo).unwrap() {
        let target = w.scratch().join(format!("r-{id}"));
        let _ = fs::remove_dir_all(&target);
        let got = snapshots::load(&repo, &id)
            .and_then(|s| s.tree_id())
            .and_then(|tree| {
                restore(
                    &store,
                    &tree,
                    &RestoreOptions {
                        target: target.clone(),
                        ..RestoreOptions::default()
                    },
                )
            })
            .ok()
            .map(|_| describe(&target.join(w.src.strip_prefix("/").unwrap())));
        let _ = fs::remove_dir_all(&target);
        out.insert(id, got);
    }
    out
}

#[test]
fn prune_on_a_damaged_repository_never_deletes_a_live_blob() {
    for how in [
        Damage::MissingPack,
        Damage::FlippedPackByte,
        Damage::TruncatedPack,
        Damage::FlippedIndexByte,
        Damage::FlippedTree,
        Damage::FlippedSnapshot,
        Damage::DuplicateBlobs,
        Damage::StaleIndexEntries,
    ] {
        // Blobs go to packs at random, so a damaged pack may hold what
        // every snapshot needs; the test wants one left whole (else it
        // proves nothing), so such a world is made again.
        let (w, first, before) = (0..8)
            .map(|_| {
                let (mut w, first, _) = two_snapshots();
                w.write("d", 200_000, 4);
                let third = w.backup();
                w.forget(&third); // something for prune to do
                damage(&mut w, how);
                let before = (restorable(&w), restorable_from_packs(&w));
                (w, first, before)
            })
            .find(|(_, _, (_, from_packs))| from_packs.values().any(Option::is_some))
            .expect("some world keeps a snapshot whole");
        let (before, before_from_packs) = before;
        let packs_before: Vec<String> = w
            .backend
            .list(layout::DATA_DIR)
            .unwrap()
            .into_iter()
            .map(|i| i.path)
            .collect();
        let outcome = prune_on(
            &w.repo(),
            &w.scratch(),
            &PruneOptions {
                grace: 0,
                max_unused: 0.0,
                ..PruneOptions::default()
            },
        );
        if outcome.is_err() {
            let after: Vec<String> = w
                .backend
                .list(layout::DATA_DIR)
                .unwrap()
                .into_iter()
                .map(|i| i.path)
                .collect();
            assert_eq!(after, packs_before, "{how:?}: a failed prune deleted packs");
        }
        eprintln!(
            "{how:?}: prune {:?}",
            outcome
                .as_ref()
                .map(|r| (r.deleted_packs, r.repacked_packs, &r.warnings))
        );
        // Whatever restored before (through the index, and from the packs
        // themselves) restores after: a damaged index file hides nothing
        // here, since prune must not delete what only the packs still say
        // is live. The world was chosen so that the packs keep at least one
        // snapshot whole, so this is never vacuous.
        for (which, before, after) in [
            ("through the index", &before, restorable(&w)),
            (
                "from the packs",
                &before_from_packs,
                restorable_from_packs(&w),
            ),
        ] {
            for (id, got) in before {
                if let Some(files) = got {
                    assert_eq!(
                        after.get(id),
                        Some(&Some(files.clone())),
                        "{how:?}: snapshot {id} restored {which} before prune ({outcome:?}) \
                         and not after"
                    );
                }
            }
        }
        let _ = first;
    }
}

#[test]
fn orphans_are_adopted_when_they_hold_the_only_copy_and_deleted_otherwise() {
    let (mut w, _, _) = two_snapshots();
    let repo = w.repo();
    // Duplicates of `b` in packs no index file names.
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    store.put_stream(&pseudo_random(300_000, 2)[..]).unwrap();
    store.flush().unwrap();
    drop(store);
    let before: Vec<String> = w
        .backend
        .list(layout::INDEX_DIR)
        .unwrap()
        .into_iter()
        .map(|i| i.path)
        .collect();
    // The duplicates' index file is the one a fresh cache names their
    // packs in: find it by its packs' absence from the others.
    let files: Vec<(String, Vec<kura::id::PackId>)> = before
        .iter()
        .map(|path| {
            let f = kura::chunkstore::index::read_index_file(
                &repo,
                &layout::parse_index_path(path).unwrap(),
            )
            .unwrap();
            (path.clone(), f.packs.iter().map(|p| p.id).collect())
        })
        .collect();
    let dup_packs: Vec<kura::id::PackId> = index
        .packs_missing_from(&std::collections::HashSet::new())
        .unwrap();
    let dup_file = files
        .iter()
        .find(|(_, packs)| packs.iter().all(|p| dup_packs.contains(p)))
        .unwrap()
        .0
        .clone();
    w.backend.delete(&dup_file).unwrap();
    let now = PruneOptions {
        grace: 0,
        ..PruneOptions::default()
    };
    let r = w.prune(&now);
    assert_eq!(r.adopted_packs, 0, "{r:?}");
    assert!(r.deleted_packs >= dup_packs.len(), "{r:?}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());

    // Now lose the index file of a snapshot's own packs: its chunks are
    // nowhere else, so prune indexes the orphans again instead.
    let some_file = w.backend.list(layout::INDEX_DIR).unwrap()[0].path.clone();
    w.backend.delete(&some_file).unwrap();
    let r = w.prune(&now);
    assert!(r.adopted_packs > 0, "{r:?}");
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
    let _ = &mut w;
}

type ListHook = Box<
    dyn Fn(&str, Vec<kura::backend::ObjectInfo>) -> Vec<kura::backend::ObjectInfo> + Send + Sync,
>;

/// A repository over `inner` whose listings pass through `hook` (which may
/// also change the repository), for what a concurrent prune does between
/// a reader's listing and its reads.
fn racing_lister(inner: Arc<MemoryBackend>, hook: ListHook) -> Repository {
    Repository::open(Arc::new(HookedBackend::new(inner).on_list(hook)), PASSWORD).unwrap()
}

#[test]
fn a_record_swept_between_listing_and_reading_is_skipped() {
    let (w, _, _) = two_snapshots();
    // A condemning prune (graced): it writes a record.
    let record = || {
        prune_on(
            &w.repo(),
            &w.scratch(),
            &PruneOptions {
                grace: 3600,
                ..PruneOptions::default()
            },
        )
        .unwrap()
    };
    record();
    assert_eq!(
        w.backend.list(layout::PRUNE_DIR).unwrap().len(),
        1,
        "a record"
    );
    // Every prune record is deleted right after it is listed, as a
    // sweeping prune running at that moment would.
    let memory = w.backend.clone();
    let racing = racing_lister(
        w.backend.clone(),
        Box::new(move |dir, listed| {
            if dir == layout::PRUNE_DIR {
                for info in &listed {
                    memory.delete(&info.path).unwrap();
                }
            }
            listed
        }),
    );
    let records = kura::repository::records::load_all(&racing).unwrap();
    assert!(
        records.is_empty(),
        "the vanished record is skipped, not an error"
    );
    // A record that is there but damaged still stops the reader.
    record();
    let path = w.backend.list(layout::PRUNE_DIR).unwrap()[0].path.clone();
    w.backend.tamper(&path, |b| b[40] ^= 1);
    assert!(kura::repository::records::load_all(&w.repo()).is_err());
}

#[test]
fn index_files_merged_between_listing_and_reading_are_found_by_listing_again() {
    let mut w = World::new();
    for night in 0..10 {
        w.write(&format!("n{night}"), 50_000, 100 + night);
        w.backup();
    }
    let stale = w.backend.list(layout::INDEX_DIR).unwrap();
    assert!(stale.len() >= 10, "{stale:?}");
    let merge = w.prune(&PruneOptions {
        grace: 0,
        ..PruneOptions::default()
    });
    assert!(merge.index_files_deleted >= 10, "{merge:?}");
    let whole = ChunkIndex::open(None).unwrap();
    whole.sync(&w.repo()).unwrap();

    // `index/` is listed as it was before the merge the first `rounds`
    // times, while reads see the repository after it: a reader that listed
    // just before a prune merged the index files and read just after.
    let racing = |rounds: usize| {
        let (stale, rounds) = (stale.clone(), std::sync::atomic::AtomicUsize::new(rounds));
        racing_lister(
            w.backend.clone(),
            Box::new(move |dir, listed| {
                use std::sync::atomic::Ordering;
                if dir == layout::INDEX_DIR
                    && rounds
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    stale.clone()
                } else {
                    listed
                }
            }),
        )
    };
    // Opening reads no index file; the first sync's listing is stale.
    let index = ChunkIndex::open(None).unwrap();
    let report = index.sync(&racing(1)).unwrap();
    assert_eq!(report.index_files_loaded, 1, "{report:?}");
    assert_eq!(index.len().unwrap(), whole.len().unwrap());
    assert!(!index.is_empty().unwrap());

    // check lists again too, instead of calling the merged files missing.
    let quick = CheckOptions::default();
    let report = check(&racing(1), &whole, &quick).unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);

    // A listing that never catches up is an error, not a partial index;
    // check reports the files as missing.
    let index = ChunkIndex::open(None).unwrap();
    let err = index.sync(&racing(usize::MAX)).unwrap_err();
    assert_eq!(err.kind(), kura::ErrorKind::NotFound, "{err}");
    let report = check(&racing(usize::MAX), &whole, &quick).unwrap();
    assert!(!report.is_clean());
}

#[test]
fn the_plan_changes_nothing_and_is_what_a_dry_run_reports() {
    let (mut w, first, _) = interleaved_snapshots();
    w.forget(&first);
    let before = all_objects(w.backend.as_ref());
    let options = PruneOptions {
        grace: 0,
        max_unused: 0.0,
        ..PruneOptions::default()
    };
    let repo = w.repo();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let plan = kura::ops::prune::plan(&repo, &index, &w.scratch(), &options).unwrap();
    assert!(all_objects(w.backend.as_ref()) == before, "planning wrote");
    let dry = w.prune(&PruneOptions {
        dry_run: true,
        ..options
    });
    assert_eq!(plan.report(), dry);
    assert!(
        !plan.repack.is_empty() && !plan.condemn.is_empty(),
        "{dry:?}"
    );
    // The plan serializes with its packs named by id.
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["condemn"].as_array().unwrap().len(),
        plan.condemn.len()
    );
    let hex = json["repack"][0]["pack"].as_str().unwrap();
    assert_eq!(hex, plan.repack[0].pack.to_hex());
    drop(plan);
    let real = w.prune(&options);
    assert_eq!(
        (real.deleted_packs, real.freed_bytes, real.condemned_bytes),
        (dry.deleted_packs, dry.freed_bytes, dry.condemned_bytes)
    );
    assert_whole(w.backend.clone(), &w.expected, &w.src, &w.scratch());
}
