//! Backups that go wrong. One killed with SIGKILL: the repository still
//! verifies, and the next backup adopts the packs already uploaded instead
//! of sending them again (format-spec/07, "Crash states"). One that meets
//! unreadable files: warnings, an incomplete snapshot and exit code 3.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura::backend::{Backend, LocalBackend};
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::layout;
use kura::index::ChunkIndex;
use kura::ops::restore::{RestoreOptions, restore};
use kura::pack::verify_pack;
use kura::repo::Repository;
use kura::snapshot;

use crate::common::{BIN, CliRepo, init, kura_env, pseudo_random, stderr};

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
    let snaps = snapshot::list(&repo).unwrap();
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

    // Kill the first backup once a few packs are stored.
    let mut child = Command::new(BIN)
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--quiet"])
        .arg(&src)
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

    let backend = LocalBackend::new(&repo);
    let killed_bytes = repo_bytes(&backend);
    assert!(killed_bytes > 24 << 20, "only {killed_bytes} bytes stored");
    assert_eq!(
        verify_repository(&repo, b"pw", dir.path()),
        0,
        "no snapshot was committed"
    );

    // The next backup adopts what is there and completes.
    let out = cli.run(&["--json", "backup", src.to_str().unwrap()]);
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
        &["backup", "--quiet", src.to_str().unwrap()],
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
