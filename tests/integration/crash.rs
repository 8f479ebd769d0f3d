//! Backups that go wrong. One killed with SIGKILL: the repository still
//! verifies, and the next backup adopts the packs already uploaded instead
//! of sending them again (format-spec/07, "Crash states"). Backups stopped
//! at every backend operation in turn, or with each write torn: `check`
//! stays clean, committed snapshots restore whole, the next backup works.
//! One that meets unreadable files: warnings, an incomplete snapshot and
//! exit code 3.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kura::backend::faulty::FaultPlan;
use kura::backend::{
    Backend, FaultyBackend, HookedBackend, LocalBackend, MemoryBackend, write_bytes,
};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::pack::{PackerOptions, verify_pack};
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::config::ChunkerParams;
use kura::format::layout;
use kura::id::SnapshotId;
use kura::ops::backup::{BackupOptions, BackupReport, backup};
use kura::ops::check::{CheckOptions, CheckReport, Subset, check};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::snapshots;
use kura::repository::{InitOptions, Repository};

use crate::common::{
    BIN, CliRepo, PASSWORD, all_objects, describe, fast_options, init, kura_env, pseudo_random,
    stderr, text_like,
};

/// Total size of the repository's objects (what `list` shows; a killed
/// writer's hidden temporary files are not objects).
fn repo_bytes(backend: &dyn Backend) -> u64 {
    ["keys", "data", "index", "snapshots"]
        .iter()
        .flat_map(|d| backend.list(d).unwrap())
        .map(|i| i.size)
        .sum::<u64>()
        + backend.read("config", None).unwrap().len() as u64
}

/// What `kura check --read-data` will do, from the library: every pack
/// authenticates whole (header, padding, every blob and its id), every
/// index file decodes, and every snapshot restores; returns the number of
/// snapshots.
pub fn verify_repository(path: &Path, password: &[u8], scratch: &Path) -> usize {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(path));
    let repo = Repository::open(backend.clone(), password).unwrap();
    for info in backend.list(layout::DATA_DIR).unwrap() {
        let id = layout::parse_pack_path(&info.path).unwrap();
        let bytes = backend.read(&info.path, None).unwrap();
        verify_pack(repo.sealer(), &id, &bytes)
            .unwrap_or_else(|e| panic!("pack {id} does not verify: {e}"));
    }
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).expect("index files authenticate");
    let snaps = snapshots::list(&repo).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    for (i, (id, snap)) in snaps.iter().enumerate() {
        let target = scratch.join(format!("verify-{i}"));
        restore(
            &store,
            &snap.tree_id().unwrap(),
            &RestoreOptions {
                target: target.clone(),
                ..RestoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("snapshot {id} does not restore: {e}"));
        fs::remove_dir_all(&target).unwrap();
    }
    snaps.len()
}

fn pack_count(repo: &Path) -> usize {
    let Ok(dirs) = fs::read_dir(repo.join("data")) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| fs::read_dir(d.path()).ok())
        .flat_map(Iterator::flatten)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count()
}

#[test]
fn sigkill_during_backup_leaves_a_verifying_repository_and_packs_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // 128 MiB that does not compress: 16 packs of 8 MiB.
    for i in 0..16u64 {
        fs::write(
            src.join(format!("media-{i:02}.bin")),
            pseudo_random(8 << 20, 1001 + 2 * i),
        )
        .unwrap();
    }
    let cli = CliRepo::init(dir.path());
    let repo = cli.path.clone();
    // The data as one stream whose first run cannot end by itself: after
    // the files, its command waits on a FIFO that is opened for writing
    // only once kura is killed. So the kill always lands mid-backup, with
    // no race to lose.
    let fifo = dir.path().join("hold");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    let stream = |hold: bool| {
        let cat = format!("cat {}/media-*.bin", src.display());
        let cmd = if hold {
            format!("{cat}; cat {} >/dev/null", fifo.display())
        } else {
            cat
        };
        format!("media.bin={cmd}")
    };

    // Kill the first backup once a few packs are stored.
    let mut child = Command::new(BIN)
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--quiet", "--stdin-from-command", &stream(true)])
        .env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .envs(cli.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pack_count(&repo) < 4 {
        assert!(child.try_wait().unwrap().is_none(), "backup ended early");
        assert!(Instant::now() < deadline, "no packs appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the backup finished before the kill");
    // Let the held command end: it reads EOF once a writer has come and
    // gone. Non-blocking, polled: the reader may not have opened it yet.
    for _ in 0..500 {
        use std::os::unix::fs::OpenOptionsExt;
        let writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&fifo);
        if writer.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let backend = LocalBackend::new(&repo);
    let killed_bytes = repo_bytes(&backend);
    assert!(killed_bytes > 24 << 20, "only {killed_bytes} bytes stored");
    assert_eq!(
        verify_repository(&repo, b"pw", dir.path()),
        0,
        "no snapshot was committed"
    );

    // The next backup adopts what is there and completes.
    let out = cli.run(&["--json", "backup", "--stdin-from-command", &stream(false)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["packs_adopted"].as_u64().unwrap() >= 3, "{report}");
    let added = repo_bytes(&backend) - killed_bytes;
    assert_eq!(verify_repository(&repo, b"pw", dir.path()), 1);

    // The same data into a fresh repository, for the full cost.
    let fresh = dir.path().join("fresh");
    init(&fresh);
    let out = kura_env(
        &fresh,
        &[("KURA_PASSWORD", OsStr::new("pw"))],
        &["backup", "--quiet", "--stdin-from-command", &stream(false)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let full = repo_bytes(&LocalBackend::new(&fresh));
    // Everything stored before the kill was reused: the second run sent at
    // most the rest, plus a pack's worth of slack for index files.
    assert!(
        added + killed_bytes <= full + (4 << 20),
        "second run added {added} after {killed_bytes} were stored; a full backup is {full}"
    );
    assert!(added < full - (16 << 20), "added {added}, full {full}");
}

/// Runs kura as an unprivileged user (`nobody` via setpriv when the tests
/// run as root, so that permissions apply), with `cli`'s environment.
fn kura_unprivileged(cli: &CliRepo, args: &[&str]) -> std::process::Output {
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("-r")
        .arg(&cli.path)
        .args(args)
        .env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .envs(cli.env())
        .output()
        .unwrap()
}

fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(path) {
        let mode = if entry.is_dir() { 0o777 } else { 0o666 };
        fs::set_permissions(&entry, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let children: Vec<_> = fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}

#[test]
fn unreadable_files_give_exit_3_and_an_incomplete_snapshot() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("ok.txt"), b"readable").unwrap();
    fs::write(src.join("secret.txt"), b"not for nobody").unwrap();
    fs::write(src.join("locked/inside.txt"), b"hidden").unwrap();
    open_up(dir.path());
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    let out = kura_unprivileged(&cli, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("secret.txt") && err.contains("locked"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["incomplete"], true);
    assert_eq!(report["summary"]["warnings"], 2);

    let out = cli.run(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["snapshot"]["incomplete"], true);
    let target = dir.path().join("target");
    let out = cli.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(restored.join("ok.txt")).unwrap(), b"readable");
    assert!(!restored.join("secret.txt").exists());
}

// ---- a backup stopped at each backend operation in turn (library API)

/// Chunks of about 4 KiB: a few hundred KiB make enough of them to fill
/// several packs.
fn small_chunk_repo() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min: 1 << 10,
            avg: 4 << 10,
            max: 16 << 10,
            normalization: 1,
        },
        ..fast_options()
    }
}

/// Packs of 64 KiB and an index file every two packs, so that a backup of
/// a few hundred KiB passes every crash state of format-spec/07 in a few
/// dozen backend operations.
fn small_pack_store() -> ChunkStoreOptions {
    ChunkStoreOptions {
        packer: PackerOptions {
            target_size: 64 << 10,
            open_packs: 2,
        },
        index_every: 2,
        segment: 64 << 10,
        upload_threads: 1,
        ..ChunkStoreOptions::default()
    }
}

/// The first snapshot's tree: two files sharing data, one of several
/// packs, a subdirectory and a symlink.
fn make_first_tree(src: &Path) {
    fs::create_dir_all(src.join("sub")).unwrap();
    let text = text_like(40_000, 11);
    fs::write(src.join("a.txt"), &text).unwrap();
    fs::write(src.join("b.txt"), [&text[..], b"and a tail"].concat()).unwrap();
    fs::write(src.join("big.bin"), pseudo_random(300_000, 12)).unwrap();
    fs::write(src.join("sub/c.txt"), b"small").unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("sub/link")).unwrap();
}

/// The second snapshot's tree: a file rewritten, one grown, a new one
/// sharing data with the grown one, one replaced by another.
fn modify_tree(src: &Path) {
    fs::write(src.join("a.txt"), text_like(45_000, 13)).unwrap();
    let mut big = fs::read(src.join("big.bin")).unwrap();
    big.extend(pseudo_random(150_000, 14));
    fs::write(src.join("big.bin"), &big).unwrap();
    let new = [&pseudo_random(120_000, 15)[..], &big[..100_000]].concat();
    fs::write(src.join("new.bin"), new).unwrap();
    fs::remove_file(src.join("sub/c.txt")).unwrap();
    fs::write(src.join("sub/d.txt"), b"another small file").unwrap();
}

/// Every object of `from` in a new memory backend: each run starts from
/// the same repository.
fn copy_of(from: &MemoryBackend) -> Arc<MemoryBackend> {
    let to = Arc::new(MemoryBackend::new());
    for (path, bytes) in all_objects(from) {
        write_bytes(to.as_ref(), &path, &bytes).unwrap();
    }
    to
}

fn assert_clean(repo: &Repository, index: &ChunkIndex, label: &str) -> CheckReport {
    let options = CheckOptions {
        read_data: Some(Subset::All),
        ..CheckOptions::default()
    };
    let report = check(repo, index, &options).unwrap_or_else(|e| panic!("{label}: check: {e}"));
    assert!(report.is_clean(), "{label}: {:#?}", report.damage);
    report
}

/// A repository with one snapshot of `src`, and `src` changed since: the
/// second backup is the one that is made to fail.
struct CrashBed {
    dir: tempfile::TempDir,
    src: PathBuf,
    /// The repository after the first snapshot, never written again.
    storage: Arc<MemoryBackend>,
    /// The index cache after the first snapshot.
    cache: PathBuf,
    first: SnapshotId,
    first_tree: HashMap<PathBuf, String>,
    second_tree: HashMap<PathBuf, String>,
}

/// The second backup, run on a copy of the bed's repository and cache.
struct CrashRun {
    storage: Arc<MemoryBackend>,
    /// The cache as the run left it (stale if it crashed).
    cache: PathBuf,
    /// Backend operations started, counting the cache sync.
    ops: u64,
    /// Whether the plan's crash point was reached.
    crashed: bool,
    /// Writes that reached the storage and failed there (torn).
    failed_writes: usize,
    result: kura::Result<BackupReport>,
}

/// What [`CrashBed::verify`] saw.
struct AfterRun {
    committed: bool,
    orphan_packs: usize,
    packs_adopted: usize,
}

impl CrashBed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_first_tree(&src);
        let storage = Arc::new(MemoryBackend::new());
        let backend = storage.clone() as Arc<dyn Backend>;
        let repo = Repository::init(backend, PASSWORD, &small_chunk_repo()).unwrap();
        let cache = dir.path().join("first-cache.redb");
        let index = ChunkIndex::open(Some(&cache)).unwrap();
        let options = Self::options_for(&src);
        let first = backup(&repo, &index, &options).unwrap().snapshot;
        drop(index);
        let first_tree = describe(&src);
        modify_tree(&src);
        let second_tree = describe(&src);
        Self {
            dir,
            src,
            storage,
            cache,
            first,
            first_tree,
            second_tree,
        }
    }

    fn options_for(src: &Path) -> BackupOptions {
        BackupOptions {
            paths: vec![src.to_path_buf()],
            hostname: "crash".into(),
            store: small_pack_store(),
            ..BackupOptions::default()
        }
    }

    /// A new, empty scratch directory.
    fn work(&self, name: &str) -> PathBuf {
        let work = self.dir.path().join(name);
        fs::create_dir_all(&work).unwrap();
        work
    }

    /// Syncs a copy of the first snapshot's cache and runs the second
    /// backup with `plan`, as `kura backup` does.
    fn run(&self, plan: FaultPlan, work: &Path) -> CrashRun {
        let storage = copy_of(&self.storage);
        let cache = work.join("cache.redb");
        fs::copy(&self.cache, &cache).unwrap();
        // The storage under the faulty backend counts the writes that
        // reach it and fail (a torn write does), to tell which runs lost
        // a write.
        let failed_writes = Arc::new(AtomicUsize::new(0));
        let failed = Arc::clone(&failed_writes);
        let counted = HookedBackend::new(storage.clone()).on_write(move |_, _, result| {
            if result.is_err() {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        });
        let faulty = Arc::new(FaultyBackend::new(Arc::new(counted)));
        let repo = Repository::open(faulty.clone(), PASSWORD).unwrap();
        faulty.set_plan(plan);
        let result = {
            let index = ChunkIndex::open(Some(&cache)).unwrap();
            index
                .sync(&repo)
                .and_then(|_| backup(&repo, &index, &Self::options_for(&self.src)))
        };
        CrashRun {
            storage,
            cache,
            ops: faulty.ops(),
            crashed: faulty.crashed(),
            failed_writes: failed_writes.load(Ordering::SeqCst),
            result,
        }
    }

    /// Restores snapshot `id` of `repo` into a scratch directory and
    /// compares it with the tree it was taken of.
    fn assert_restores(&self, repo: &Repository, index: &ChunkIndex, id: &SnapshotId, label: &str) {
        let tree = if *id == self.first {
            &self.first_tree
        } else {
            &self.second_tree
        };
        let target = self.work(&format!("restore-{id}"));
        let store = ChunkStore::new(repo, index, ChunkStoreOptions::default());
        let root = snapshots::load(repo, id).unwrap().tree_id().unwrap();
        restore(
            &store,
            &root,
            &RestoreOptions {
                target: target.clone(),
                ..RestoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{label}: snapshot {id} does not restore: {e}"));
        let restored = describe(&target.join(self.src.strip_prefix("/").unwrap()));
        assert!(restored == *tree, "{label}: snapshot {id} restores wrong");
        fs::remove_dir_all(&target).unwrap();
    }

    /// What must hold after any run, failed or not, read with a plain
    /// backend: `check --read-data` is clean with a fresh cache and with
    /// the run's own; every snapshot restores to the tree it was taken of;
    /// a fault-free backup with the run's cache then completes, whole.
    fn verify(&self, run: &CrashRun, label: &str) -> AfterRun {
        let repo = Repository::open(run.storage.clone(), PASSWORD).unwrap();
        let fresh = ChunkIndex::open(None).unwrap();
        fresh.sync(&repo).unwrap();
        let orphan_packs = assert_clean(&repo, &fresh, label).orphan_packs.len();
        let stale = ChunkIndex::open(Some(&run.cache)).unwrap();
        assert!(!stale.is_empty().unwrap(), "{label}: the run's cache opens");
        stale.sync(&repo).unwrap();
        assert_clean(&repo, &stale, &format!("{label}, the run's cache"));
        let ids = snapshots::list_ids(&repo).unwrap();
        assert!(ids.contains(&self.first), "{label}: first snapshot kept");
        assert!(ids.len() <= 2, "{label}: {} snapshots", ids.len());
        for id in &ids {
            self.assert_restores(&repo, &fresh, id, label);
        }
        let next = backup(&repo, &stale, &Self::options_for(&self.src))
            .unwrap_or_else(|e| panic!("{label}: the next backup fails: {e}"));
        assert!(next.warnings.is_empty(), "{label}: {:?}", next.warnings);
        let fresh = ChunkIndex::open(None).unwrap();
        fresh.sync(&repo).unwrap();
        let after = assert_clean(&repo, &fresh, &format!("{label}, next backup"));
        assert!(after.orphan_packs.is_empty(), "{label}: orphans adopted");
        self.assert_restores(&repo, &fresh, &next.snapshot, &format!("{label}, next"));
        AfterRun {
            committed: ids.len() == 2,
            orphan_packs,
            packs_adopted: next.packs_adopted,
        }
    }

    /// Runs the second backup with the fault `plan(k)` for k = 1, 2, ...,
    /// each from the same starting state, until a run past the operation
    /// count of a fault-free run succeeds; verifies the repository after
    /// each run.
    fn enumerate(&self, what: &str, plan: impl Fn(u64) -> FaultPlan) -> Tally {
        let n = self.run(FaultPlan::default(), &self.work("count")).ops;
        let mut tally = Tally {
            n,
            ..Tally::default()
        };
        for k in 1.. {
            let work = self.work(&format!("{what}-{k}"));
            let label = format!("{what} at operation {k} of {n}");
            let (run, after) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let run = self.run(plan(k), &work);
                let after = self.verify(&run, &label);
                (run, after)
            }))
            .unwrap_or_else(|_| panic!("{label}: panicked"));
            let error = run.result.as_ref().err();
            // A run fails only because of its fault, and then commits nothing.
            assert_eq!(
                error.is_some(),
                run.crashed || run.failed_writes > 0,
                "{label}: {error:?}"
            );
            assert_eq!(after.committed, error.is_none(), "{label}: {error:?}");
            tally.points = k;
            tally.failed += usize::from(error.is_some());
            tally.crashed += usize::from(run.crashed);
            tally.torn += usize::from(run.failed_writes > 0);
            tally.with_orphans += usize::from(after.orphan_packs > 0);
            tally.adopted += after.packs_adopted;
            fs::remove_dir_all(&work).unwrap();
            if run.result.is_ok() && k > n {
                break;
            }
            assert!(k < 2 * n, "{label}: the runs do not end");
        }
        tally
    }
}

/// What [`CrashBed::enumerate`] went through.
#[derive(Default, Debug)]
struct Tally {
    /// Backend operations of the fault-free run.
    n: u64,
    /// Runs made, one per fault point.
    points: u64,
    /// Runs whose backup returned an error.
    failed: usize,
    /// Runs that reached their crash point.
    crashed: usize,
    /// Runs that lost a write to tearing.
    torn: usize,
    /// Runs after which `check` found packs no index file names.
    with_orphans: usize,
    /// Packs the next backups adopted, over all runs.
    adopted: usize,
}

#[test]
fn a_backup_crashed_at_any_backend_operation_leaves_a_whole_repository() {
    let bed = CrashBed::new();
    let tally = bed.enumerate("crash", |k| FaultPlan {
        crash_at: Some(k),
        ..FaultPlan::default()
    });
    // Nearly every point is reached (a run's operation count varies a
    // little with upload timing: 11 to 17 operations have been seen; the
    // small files of the corpus share groups, and so fewer packs, since
    // they are gathered).
    assert!(
        tally.n >= 8 && tally.crashed as u64 + 3 >= tally.n,
        "{tally:?}"
    );
    // Some crashes left packs without an index, which the next backup
    // adopted.
    assert!(tally.with_orphans > 0 && tally.adopted > 0, "{tally:?}");
}

#[test]
fn a_backup_with_any_one_write_torn_leaves_a_whole_repository() {
    let bed = CrashBed::new();
    let tally = bed.enumerate("tear", |k| FaultPlan {
        tear_at: Some(k),
        ..FaultPlan::default()
    });
    // Tearing a read or a listing does nothing; tearing a write (a data
    // pack, a tree pack, an index file, the snapshot: at least four) fails
    // the backup.
    assert!(tally.torn >= 4 && tally.failed == tally.torn, "{tally:?}");
}

#[test]
fn a_repository_the_user_may_not_read_is_access_denied_exit_17() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    open_up(dir.path());
    fs::set_permissions(&cli.path, fs::Permissions::from_mode(0o700)).unwrap();
    if !nix::unistd::geteuid().is_root() {
        // The repository is the caller's own: nothing to refuse.
        crate::common::skip(
            "crash::a_repository_the_user_may_not_read_is_access_denied_exit_17",
            "needs root to run kura as another user",
        );
        return;
    }
    let out = kura_unprivileged(&cli, &["snapshots"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}
