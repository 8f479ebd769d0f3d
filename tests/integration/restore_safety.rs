//! Restore as root: a local user who swaps a directory inside the target
//! for a symlink while the restore runs changes nothing outside the
//! target; setuid/setgid bits and file capabilities are dropped unless
//! owners are restored by root with --keep-setuid; --no-devices skips
//! device nodes and FIFOs; symlinks already in the target are replaced,
//! never followed; a tree too deep is refused.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kura::ErrorKind;
use kura::backend::{Backend, HookedBackend, LocalBackend};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::layout;
use kura::format::pack::PackKind;
use kura::format::tree::{Content, Entry, Extent, Metadata, Payload, TreeBlob};
use kura::ops::backup::{BackupOptions, backup};
use kura::ops::progress::NoProgress;
use kura::ops::restore::{
    ImageRestoreOptions, MAX_DEPTH, RestoreOptions, RestoreReport, restore, restore_image,
};
use kura::repository::{Repository, snapshots};
use kura::snapshot;

use crate::common::{BIN, CliRepo, PASSWORD, describe, fast_options, skip, snapshot_at, stderr};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chown(path: &Path, id: u32) {
    std::os::unix::fs::chown(path, Some(id), Some(id)).unwrap();
}

fn restore_latest(repo: &Repository, options: &RestoreOptions) -> kura::Result<RestoreReport> {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(repo).unwrap();
    let (_, snap) = snapshot::find(repo, "latest").unwrap();
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    restore(&store, &snap.tree_id().unwrap(), options)
}

fn backup_of(repo: &Repository, path: &Path) {
    let index = ChunkIndex::open(None).unwrap();
    let options = BackupOptions {
        paths: vec![path.to_path_buf()],
        hostname: "test".into(),
        ..BackupOptions::default()
    };
    backup(repo, &index, &options).unwrap();
}

/// The data pack that holds `data` (a file of one chunk).
fn pack_of(repo: &Repository, data: &[u8]) -> String {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(repo).unwrap();
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    let loc = index.lookup(&store.chunk_id(data)).unwrap().unwrap();
    layout::pack_path(&loc.pack)
}

/// Runs `script` with `sh` as the unprivileged user `nobody`.
fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-ec",
            script,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", stderr(&out));
}

#[test]
fn a_directory_swapped_for_a_symlink_during_a_root_restore_changes_nothing_outside() {
    if !is_root() {
        skip(
            "restore_safety::a_directory_swapped_for_a_symlink_during_a_root_restore_changes_nothing_outside",
            "needs root (a root restore raced by the user nobody)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("src");
    let d = src.join("home/u/d");
    fs::create_dir_all(&d).unwrap();
    for i in 0..50 {
        fs::write(d.join(format!("f{i:02}")), format!("file {i} of the user")).unwrap();
    }
    chown(&src.join("home/u"), NOBODY);
    // What the user wants root to overwrite: a root-only directory with a
    // file of the same name as one restored into d.
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("f00"), b"precious").unwrap();
    fs::set_permissions(outside.join("f00"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = describe(&outside);

    let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let repo = Repository::init(Arc::clone(&local), PASSWORD, &fast_options()).unwrap();
    backup_of(&repo, &src);
    let data_pack = pack_of(&repo, b"file 0 of the user");

    // The target already holds the user's home (an earlier restore); d is
    // made by this one. On the first read of file data, after every
    // directory was made, the user swaps d for a symlink to outside.
    let target = dir.path().join("target");
    let home = target.join(src.strip_prefix("/").unwrap()).join("home");
    fs::create_dir_all(home.join("u")).unwrap();
    chown(&home.join("u"), NOBODY);
    let swapped = Arc::new(AtomicBool::new(false));
    let (flag, u, out) = (Arc::clone(&swapped), home.join("u"), outside.clone());
    let hooked = HookedBackend::new(local).on_read(move |path, _| {
        if path == data_pack && !flag.swap(true, Ordering::SeqCst) {
            assert!(u.join("d").is_dir(), "d is made before file data is read");
            let script = format!(
                "cd '{}' && mv d d.old && ln -s '{}' d",
                u.display(),
                out.display()
            );
            as_nobody(&script);
        }
    });
    let repo = Repository::open(Arc::new(hooked), PASSWORD).unwrap();
    let result = restore_latest(
        &repo,
        &RestoreOptions {
            target: target.clone(),
            owners: true,
            ..RestoreOptions::default()
        },
    );
    assert!(swapped.load(Ordering::SeqCst), "the swap happened");
    assert_eq!(
        describe(&outside),
        before,
        "nothing outside the target changed"
    );
    // Either an error for d, or the files restored into the directory the
    // user moved (inside the target).
    if let Err(e) = result {
        assert!(
            e.to_string().contains("/home/u/d"),
            "the error names d: {e}"
        );
    } else {
        let moved = home.join("u/d.old");
        assert_eq!(fs::read(moved.join("f00")).unwrap(), b"file 0 of the user");
    }
}

/// A source tree with a setuid, a setgid and (where the file system takes
/// it) a capability-carrying file; whether the capability could be set.
fn privileged_tree(src: &Path) -> bool {
    fs::create_dir_all(src).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("capped", 0o755)] {
        fs::write(src.join(name), name).unwrap();
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    // vfs_cap_data revision 2: cap_net_bind_service permitted.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0000u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    xattr::set(src.join("capped"), "security.capability", &cap).is_ok()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn has_capability(path: &Path) -> bool {
    xattr::get(path, "security.capability").unwrap().is_some()
}

/// `kura restore latest --json` into `target` with `args`, as root or as
/// nobody; the report.
fn cli_restore(cli: &CliRepo, target: &Path, nobody: bool, args: &[&str]) -> serde_json::Value {
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .arg("-r")
        .arg(&cli.path)
        .args(["--json", "restore", "latest", "--target"])
        .arg(target)
        .args(args)
        .env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .envs(cli.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn open_up(path: &Path) {
    let out = Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn setuid_setgid_and_capabilities_are_kept_only_by_root_with_owners_and_keep_setuid() {
    let test = "restore_safety::setuid_setgid_and_capabilities_are_kept_only_by_root_with_owners_and_keep_setuid";
    if !is_root() {
        skip(test, "needs root (setuid is kept only by a root restore)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let capable = privileged_tree(&src);
    if !capable {
        skip(
            test,
            "this file system refuses security.capability: capability checks skipped",
        );
    }
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["backup", "--quiet", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rel = src.strip_prefix("/").unwrap();
    let caps = u64::from(capable);

    // Root, by default: owners restored, privileges dropped and counted.
    let t = dir.path().join("default");
    let report = cli_restore(&cli, &t, false, &[]);
    assert_eq!(
        (
            mode_of(&t.join(rel).join("suid")),
            mode_of(&t.join(rel).join("sgid"))
        ),
        (0o755, 0o755)
    );
    assert_eq!(report["setuid_dropped"], 2);
    assert_eq!(report["capabilities_dropped"], caps);
    assert!(!has_capability(&t.join(rel).join("capped")));

    // Root with --keep-setuid: kept.
    let t = dir.path().join("kept");
    let report = cli_restore(&cli, &t, false, &["--keep-setuid"]);
    assert_eq!(
        (
            mode_of(&t.join(rel).join("suid")),
            mode_of(&t.join(rel).join("sgid"))
        ),
        (0o4755, 0o2755)
    );
    assert_eq!(
        (
            report["setuid_dropped"].as_u64(),
            report["capabilities_dropped"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(has_capability(&t.join(rel).join("capped")), capable);

    // Root with --no-owners: dropped (the flags conflict, so no keep).
    let t = dir.path().join("no-owners");
    let report = cli_restore(&cli, &t, false, &["--no-owners"]);
    assert_eq!(report["setuid_dropped"], 2);
    assert_eq!(mode_of(&t.join(rel).join("suid")), 0o755);

    // Not root, even asking for them: never kept.
    open_up(dir.path());
    let t = dir.path().join("nobody");
    fs::create_dir(&t).unwrap();
    chown(&t, NOBODY);
    let report = cli_restore(&cli, &t, true, &["--keep-setuid"]);
    let suid = t.join(rel).join("suid");
    assert_eq!(fs::metadata(&suid).unwrap().uid(), NOBODY);
    assert_eq!(
        (mode_of(&suid), mode_of(&t.join(rel).join("sgid"))),
        (0o755, 0o755)
    );
    assert_eq!(report["setuid_dropped"], 2);
    assert!(!has_capability(&t.join(rel).join("capped")));
}

/// The content of a file holding `data`, stored in `store`.
fn stored(store: &ChunkStore<'_>, data: &[u8]) -> Payload {
    let refs = store.put_stream(data).unwrap();
    let extents = refs
        .iter()
        .map(|r| Extent::Data {
            id: r.id,
            len: r.len,
        })
        .collect();
    Payload::File(Content::Inline(extents))
}

/// Plants a snapshot whose root holds `entries`: each file holds its own
/// name, each directory one file `inner` holding "inner".
fn planted(dir: &Path, entries: Vec<Entry>) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.join("repo")));
    let repo = Repository::init(backend, PASSWORD, &fast_options()).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let mut inner = file(b"inner");
    inner.meta.size = 5;
    inner.payload = stored(&store, b"inner");
    let inner = TreeBlob::Directory(vec![inner]).encode();
    let inner = store.put_blob(PackKind::Tree, &inner).unwrap();
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .map(|mut e| {
            match e.payload {
                Payload::File(_) => {
                    e.meta.size = e.name.len() as u64;
                    e.payload = stored(&store, &e.name);
                }
                Payload::Dir(_) => e.payload = Payload::Dir(inner),
                _ => {}
            }
            e
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let root = TreeBlob::Directory(entries).encode();
    let root = store.put_blob(PackKind::Tree, &root).unwrap();
    store.flush().unwrap();
    drop(store);
    snapshots::save(&repo, &snapshot_at(&root.to_hex(), 1, "test", &[])).unwrap();
    repo
}

fn named(name: &[u8], payload: Payload) -> Entry {
    Entry {
        name: name.to_vec(),
        meta: Metadata {
            mode: 0o644,
            nlink: 1,
            ..Metadata::default()
        },
        payload,
    }
}

fn file(name: &[u8]) -> Entry {
    named(name, Payload::File(Content::Inline(Vec::new())))
}

fn a_dir(name: &[u8]) -> Entry {
    let mut e = named(name, Payload::Dir(kura::id::ChunkId::from_slice(&[0; 32])));
    e.meta.mode = 0o755;
    e
}

#[test]
fn no_devices_skips_device_nodes_and_fifos_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let null = rustix::fs::makedev(1, 3);
    let repo = planted(
        dir.path(),
        vec![
            named(b"pipe", Payload::Fifo),
            named(b"null", Payload::CharDevice(null)),
            named(b"loop", Payload::BlockDevice(rustix::fs::makedev(7, 0))),
            file(b"plain"),
        ],
    );
    let target = dir.path().join("skipped");
    let options = RestoreOptions {
        target: target.clone(),
        skip_devices: true,
        ..RestoreOptions::default()
    };
    let report = restore_latest(&repo, &options).unwrap();
    assert_eq!(
        (report.devices_skipped, report.others, report.files),
        (3, 0, 1)
    );
    let mut names: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["plain"]);
    // Without it, the FIFO is made (devices too, where allowed).
    let target = dir.path().join("made");
    let options = RestoreOptions {
        target: target.clone(),
        ..RestoreOptions::default()
    };
    let report = restore_latest(&repo, &options).unwrap();
    assert_eq!(report.devices_skipped, 0);
    assert!(
        fs::symlink_metadata(target.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn symlinks_at_a_files_or_a_directorys_name_are_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = planted(dir.path(), vec![file(b"f"), a_dir(b"a")]);
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"precious").unwrap();
    fs::write(outside.join("inner"), b"precious too").unwrap();
    fs::set_permissions(outside.join("victim"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = describe(&outside);
    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    symlink(outside.join("victim"), target.join("f")).unwrap();
    symlink(&outside, target.join("a")).unwrap();
    let options = RestoreOptions {
        target: target.clone(),
        owners: is_root(),
        ..RestoreOptions::default()
    };
    restore_latest(&repo, &options).unwrap();
    assert_eq!(describe(&outside), before);
    assert!(fs::symlink_metadata(target.join("f")).unwrap().is_file());
    assert_eq!(fs::read(target.join("f")).unwrap(), b"f");
    assert!(fs::symlink_metadata(target.join("a")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("a/inner")).unwrap(), b"inner");
    // An image restored --to a symlink is refused, not written through it.
    let link = dir.path().join("image-link");
    symlink(outside.join("victim"), &link).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let (_, snap) = snapshot::find(&repo, "latest").unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let image = ImageRestoreOptions {
        path: "/f".into(),
        to: link,
    };
    let err = restore_image(&store, &snap.tree_id().unwrap(), &image, &NoProgress).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(describe(&outside), before);
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let repo = Repository::init(backend, PASSWORD, &fast_options()).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let mut tree = store
        .put_blob(PackKind::Tree, &TreeBlob::Directory(Vec::new()).encode())
        .unwrap();
    for _ in 0..=MAX_DEPTH {
        let mut e = a_dir(b"d");
        e.payload = Payload::Dir(tree);
        tree = store
            .put_blob(PackKind::Tree, &TreeBlob::Directory(vec![e]).encode())
            .unwrap();
    }
    store.flush().unwrap();
    snapshots::save(&repo, &snapshot_at(&tree.to_hex(), 1, "test", &[])).unwrap();
    let target = dir.path().join("target");
    let err = restore_latest(
        &repo,
        &RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("deeper than 2048"), "{err}");
    // The directories made are removed with rm, which goes any depth.
    let out = Command::new("rm").arg("-rf").arg(&target).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let _: PathBuf = target;
}
