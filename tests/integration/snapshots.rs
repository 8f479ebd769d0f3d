//! Backup and restore of file trees: contents and metadata survive,
//! unchanged files are not read again, sparse files stay sparse, and no
//! snapshot can make restore write outside its target.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura::backend::{Backend, LocalBackend};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::pack::PackKind;
use kura::format::tree::{Entry, Metadata, Payload, TreeBlob};
use kura::ops::backup::{BackupOptions, ParentChoice, backup};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::Repository;
use kura::repository::snapshots;
use kura::{ErrorKind, snapshot};

use crate::common::{PASSWORD, describe, fast_options, pseudo_random, snapshot_at, text_like};

/// A tree with one of each thing a server holds.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("www/theme/css")).unwrap();
    fs::write(root.join("www/index.php"), text_like(10_000, 1)).unwrap();
    fs::write(root.join("www/theme/css/site.css"), text_like(300_000, 2)).unwrap();
    fs::write(root.join("www/upload.jpg"), pseudo_random(700_000, 3)).unwrap();
    fs::write(root.join("www/empty"), b"").unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"www/caf\xe9.txt")),
        b"latin-1 name",
    )
    .unwrap();
    fs::set_permissions(
        root.join("www/index.php"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(root.join("www/theme"), fs::Permissions::from_mode(0o2750)).unwrap();
    symlink("index.php", root.join("www/link")).unwrap();
    symlink("/nonexistent/target", root.join("www/dangling")).unwrap();
    fs::hard_link(
        root.join("www/upload.jpg"),
        root.join("www/upload-copy.jpg"),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &root.join("www/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let sparse = fs::File::create(root.join("www/disk.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    sparse
        .write_all_at(&pseudo_random(100_000, 4), 5 << 20)
        .unwrap();
    sparse
        .write_all_at(&text_like(50_000, 5), 40 << 20)
        .unwrap();
    xattr::set(root.join("www/index.php"), "user.kura-test", b"xattr value")
        .expect("user xattrs on the test file system (the metadata round trip needs one)");
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    work: PathBuf,
    repo: Repository,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let repo = Repository::init(backend, PASSWORD, &fast_options()).unwrap();
    let work = dir.path().to_path_buf();
    Fixture {
        _dir: dir,
        src,
        work,
        repo,
    }
}

fn options(paths: &[&Path]) -> BackupOptions {
    BackupOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        hostname: "test".into(),
        ..BackupOptions::default()
    }
}

fn restore_latest(
    f: &Fixture,
    target: &Path,
    include: Vec<PathBuf>,
) -> kura::Result<kura::ops::restore::RestoreReport> {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&f.repo).unwrap();
    let (_, snap) = snapshot::find(&f.repo, "latest").unwrap();
    let store = ChunkStore::new(&f.repo, &index, ChunkStoreOptions::default());
    restore(
        &store,
        &snap.tree_id().unwrap(),
        &RestoreOptions {
            target: target.to_path_buf(),
            include,
            ..RestoreOptions::default()
        },
    )
}

#[test]
fn a_tree_round_trips_with_metadata() {
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    let report = backup(&f.repo, &index, &options(&[&f.src])).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.summary.files, 7);
    let target = f.work.join("restored");
    restore_latest(&f, &target, vec![]).unwrap();
    let restored_root = target.join(f.src.strip_prefix("/").unwrap());
    assert_eq!(describe(&restored_root), describe(&f.src));
    // The sparse image stays sparse: 64 MiB apparent, about 150 KB of data.
    let img = fs::metadata(restored_root.join("www/disk.img")).unwrap();
    assert_eq!(img.len(), 64 << 20);
    assert!(
        img.blocks() * 512 < 4 << 20,
        "{} bytes allocated",
        img.blocks() * 512
    );
    assert!(
        fs::symlink_metadata(restored_root.join("www/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn unchanged_files_are_not_read_again() {
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    let first = backup(&f.repo, &index, &options(&[&f.src])).unwrap();
    assert_eq!(first.summary.files_unchanged, 0);
    fs::write(f.src.join("www/index.php"), text_like(12_000, 9)).unwrap();
    let second = backup(&f.repo, &index, &options(&[&f.src])).unwrap();
    assert_eq!(second.parent, Some(first.snapshot));
    assert_eq!(second.summary.files, 7);
    assert_eq!(
        second.summary.files_unchanged, 6,
        "only the edited file is read"
    );
    assert!(second.summary.bytes_stored < 100_000);
    let target = f.work.join("restored");
    restore_latest(&f, &target, vec![]).unwrap();
    assert_eq!(
        describe(&target.join(f.src.strip_prefix("/").unwrap())),
        describe(&f.src)
    );
}

/// Reading small files ahead on worker threads (the default) gives the
/// snapshot a walk on one thread gives: the same trees, byte for byte, on
/// a first night and on one with a parent where a few files changed.
#[test]
fn files_read_ahead_give_the_snapshot_one_reader_gives() {
    let f = fixture();
    // Many small files in nested directories, beside the fixture's
    // large, sparse, special and unreadable-to-none entries.
    for i in 0..600u64 {
        let dir = f.src.join(format!("many/d{}/e{}", i % 7, i % 3));
        fs::create_dir_all(&dir).unwrap();
        let data = if i % 4 == 0 {
            pseudo_random(100 + (i as usize * 977) % 90_000, i)
        } else {
            text_like(100 + (i as usize * 1931) % 200_000, i)
        };
        fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    fs::write(f.src.join("many/big"), text_like(3 << 20, 7)).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    let night = |one_reader: bool, parent| {
        let report = backup(
            &f.repo,
            &index,
            &BackupOptions {
                read_ahead: one_reader.then_some(0),
                parent,
                ..options(&[&f.src])
            },
        )
        .unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        // The backed-up directory's entry (the directories above it are
        // shared with other tests, which change their times).
        let snap = snapshots::load(&f.repo, &report.snapshot).unwrap();
        let store = ChunkStore::new(&f.repo, &index, ChunkStoreOptions::default());
        let comps = kura::source::walk::components(&f.src);
        let entry = kura::snapshot::tree::lookup(&store, snap.tree_id().unwrap(), &comps);
        (entry.unwrap().unwrap(), report.summary, report.snapshot)
    };
    let (ahead, ahead_summary, first) = night(false, ParentChoice::None);
    let (one, one_summary, _) = night(true, ParentChoice::None);
    assert_eq!(ahead, one, "first night");
    assert_eq!(ahead_summary.files, one_summary.files);
    // A few files change (sizes kept, contents not), one grows, one goes.
    for i in [3u64, 200, 401] {
        let p = f.src.join(format!("many/d{}/e{}/f{i}", i % 7, i % 3));
        let len = fs::metadata(&p).unwrap().len() as usize;
        fs::write(&p, pseudo_random(len, 1000 + i)).unwrap();
    }
    fs::write(f.src.join("many/d0/e0/f0"), text_like(150_000, 99)).unwrap();
    fs::remove_file(f.src.join("many/d1/e1/f1")).unwrap();
    let (ahead, ahead_summary, _) = night(false, ParentChoice::Id(first));
    let (one, one_summary, _) = night(true, ParentChoice::Id(first));
    assert_eq!(ahead, one, "a night with a parent");
    assert_eq!(ahead_summary.files_unchanged, one_summary.files_unchanged);
    assert!(ahead_summary.files_unchanged >= 590);
    let target = f.work.join("restored");
    restore_latest(&f, &target, vec![]).unwrap();
    assert_eq!(
        describe(&target.join(f.src.strip_prefix("/").unwrap())),
        describe(&f.src)
    );
}

#[test]
fn include_restores_one_path() {
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    backup(&f.repo, &index, &options(&[&f.src])).unwrap();
    let target = f.work.join("partial");
    let css = f.src.join("www/theme/css");
    restore_latest(&f, &target, vec![css.clone()]).unwrap();
    let rel = css.strip_prefix("/").unwrap();
    assert_eq!(
        fs::read(target.join(rel).join("site.css")).unwrap(),
        fs::read(css.join("site.css")).unwrap()
    );
    assert!(
        !target
            .join(f.src.strip_prefix("/").unwrap())
            .join("www/index.php")
            .exists()
    );
}

#[test]
fn restore_run_again_keeps_intact_files_and_rewrites_the_rest() {
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    backup(&f.repo, &index, &options(&[&f.src])).unwrap();
    let target = f.work.join("again");
    let first = restore_latest(&f, &target, vec![]).unwrap();
    assert_eq!(first.files_intact, 0);
    let www = target.join(f.src.strip_prefix("/").unwrap()).join("www");
    // An interrupted or damaged earlier restore: a byte changed (same
    // size), a file cut short, a file replaced by a symlink to outside,
    // a file missing, a hole filled with data.
    let outside = f.work.join("outside");
    fs::write(&outside, b"must stay").unwrap();
    let mut css = fs::read(www.join("theme/css/site.css")).unwrap();
    css[1000] ^= 1;
    fs::write(www.join("theme/css/site.css"), &css).unwrap();
    let upload = fs::OpenOptions::new()
        .write(true)
        .open(www.join("index.php"))
        .unwrap();
    upload.set_len(100).unwrap();
    fs::remove_file(www.join("empty")).unwrap();
    symlink(&outside, www.join("empty")).unwrap();
    fs::remove_file(www.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"))).unwrap();
    let disk = fs::OpenOptions::new()
        .write(true)
        .open(www.join("disk.img"))
        .unwrap();
    disk.write_all_at(b"not a hole", 20 << 20).unwrap();
    drop(disk);

    let second = restore_latest(&f, &target, vec![]).unwrap();
    assert_eq!(second.files, first.files);
    // upload.jpg and its hard link are one file to write; the five damaged
    // ones are written again, the rest kept.
    assert_eq!(second.files_intact, first.files - 1 - 5, "{second:?}");
    assert_eq!(fs::read(&outside).unwrap(), b"must stay");
    assert_eq!(
        describe(&target.join(f.src.strip_prefix("/").unwrap())),
        describe(&f.src)
    );
    let third = restore_latest(&f, &target, vec![]).unwrap();
    assert_eq!(third.files_intact, first.files - 1);
    assert_eq!(third.bytes, 0);
}

/// Stores a root tree holding `entries` and a snapshot naming it.
fn plant_snapshot(repo: &Repository, entries: Vec<Entry>) {
    plant_snapshot_at(repo, entries, 1, "evil", &[]);
}

fn plant_snapshot_at(
    repo: &Repository,
    entries: Vec<Entry>,
    time: i64,
    host: &str,
    tags: &[&str],
) -> kura::id::SnapshotId {
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    let root = store
        .put_blob(PackKind::Tree, &TreeBlob::Directory(entries).encode())
        .unwrap();
    store.flush().unwrap();
    let snap = snapshot_at(&root.to_hex(), time, host, tags);
    snapshots::save(repo, &snap).unwrap()
}

fn file_entry(repo: &Repository, name: &[u8], data: &[u8]) -> Entry {
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    let refs = store.put_stream(data).unwrap();
    store.flush().unwrap();
    let extents = refs
        .iter()
        .map(|r| kura::format::tree::Extent::Data {
            id: r.id,
            len: r.len,
        })
        .collect();
    Entry {
        name: name.to_vec(),
        meta: Metadata {
            mode: 0o644,
            nlink: 1,
            size: data.len() as u64,
            ..Metadata::default()
        },
        payload: Payload::File(kura::format::tree::Content::Inline(extents)),
    }
}

#[test]
fn hostile_names_never_write_outside_the_target() {
    for name in [
        &b"../escaped"[..],
        b"/tmp/absolute-escape",
        b"a/../../escaped",
        b"..",
    ] {
        let f = fixture();
        let entry = file_entry(&f.repo, name, b"payload");
        plant_snapshot(&f.repo, vec![entry]);
        let target = f.work.join("target");
        let err = restore_latest(&f, &target, vec![]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Corrupt,
            "{}",
            String::from_utf8_lossy(name)
        );
        assert!(!f.work.join("escaped").exists());
        assert!(!Path::new("/tmp/absolute-escape").exists());
    }
}

#[test]
fn an_existing_symlink_in_the_target_is_not_followed() {
    let f = fixture();
    let outside = f.work.join("outside");
    fs::create_dir(&outside).unwrap();
    let file = file_entry(&f.repo, b"f", b"data");
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&f.repo, &index, ChunkStoreOptions::default());
    let sub = store
        .put_blob(PackKind::Tree, &TreeBlob::Directory(vec![file]).encode())
        .unwrap();
    store.flush().unwrap();
    let dir = Entry {
        name: b"a".to_vec(),
        meta: Metadata {
            mode: 0o755,
            ..Metadata::default()
        },
        payload: Payload::Dir(sub),
    };
    plant_snapshot(&f.repo, vec![dir]);
    let target = f.work.join("target");
    fs::create_dir(&target).unwrap();
    symlink(&outside, target.join("a")).unwrap();
    restore_latest(&f, &target, vec![]).unwrap();
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing was written through the symlink"
    );
    assert_eq!(fs::read(target.join("a/f")).unwrap(), b"data");
}

#[test]
fn command_output_is_stored_and_a_failing_command_commits_nothing() {
    use kura::ops::backup::StreamSource;
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    let dump = StreamSource {
        name: "db/site.sql".into(),
        command: Some("seq 1 300000".into()),
    };
    let opts = BackupOptions {
        streams: vec![dump],
        ..options(&[&f.src.join("www/theme")])
    };
    let report = backup(&f.repo, &index, &opts).unwrap();
    assert_eq!(report.summary.files, 2);
    let target = f.work.join("restored");
    restore_latest(&f, &target, vec![]).unwrap();
    let expected = std::process::Command::new("seq")
        .args(["1", "300000"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(fs::read(target.join("db/site.sql")).unwrap(), expected);
    assert!(
        target
            .join(f.src.strip_prefix("/").unwrap())
            .join("www/theme/css/site.css")
            .exists()
    );

    let failing = StreamSource {
        name: "db/site.sql".into(),
        command: Some("seq 1 1000; echo 'pg_dump: connection refused' >&2; exit 3".into()),
    };
    let opts = BackupOptions {
        streams: vec![failing],
        ..options(&[&f.src])
    };
    let err = backup(&f.repo, &index, &opts).unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert_eq!(
        snapshots::list(&f.repo).unwrap().len(),
        1,
        "no snapshot was committed"
    );
}

#[test]
fn at_selects_the_newest_snapshot_not_after_the_time() {
    use kura::snapshot::{Filter, newest_at, parse_utc};
    let f = fixture();
    let t = |s: &str| parse_utc(s).unwrap();
    let a = plant_snapshot_at(&f.repo, vec![], t("2026-11-18 03:00"), "web1", &["nightly"]);
    let b = plant_snapshot_at(&f.repo, vec![], t("2026-11-19 03:00"), "web1", &[]);
    let c = plant_snapshot_at(&f.repo, vec![], t("2026-11-20 03:00"), "web2", &["nightly"]);
    let d = plant_snapshot_at(&f.repo, vec![], t("2026-11-21 03:00"), "web1", &["nightly"]);
    let all = Filter::default();
    let at = |time: &str, filter: &Filter| newest_at(&f.repo, t(time), filter).map(|(id, _)| id);
    assert_eq!(
        at("2026-11-20 03:00", &all).unwrap(),
        c,
        "a snapshot exactly at the time counts"
    );
    assert_eq!(at("2026-11-20 02:59", &all).unwrap(), b);
    assert_eq!(
        at("2026-11-19", &all).unwrap(),
        b,
        "a bare date means its end"
    );
    assert_eq!(at("2026-12-01", &all).unwrap(), d);
    let web1 = Filter {
        host: Some("web1".into()),
        ..Filter::default()
    };
    assert_eq!(at("2026-11-20 12:00", &web1).unwrap(), b);
    let nightly_web1 = Filter {
        host: Some("web1".into()),
        tags: vec!["nightly".into()],
        paths: Vec::new(),
    };
    assert_eq!(at("2026-11-20 12:00", &nightly_web1).unwrap(), a);
    assert_eq!(
        at("2026-11-17", &all).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn excludes_leave_out_globs_and_marked_directories() {
    use kura::source::exclude::ExcludeOptions;
    let f = fixture();
    fs::create_dir_all(f.src.join("www/cache/sub")).unwrap();
    fs::write(f.src.join("www/cache/.nobackup"), b"").unwrap();
    fs::write(f.src.join("www/cache/sub/big.bin"), b"regenerable").unwrap();
    let css = f.src.join("www/theme/css");
    let excludes = ExcludeOptions {
        patterns: vec!["*.jpg".into(), css.to_str().unwrap().to_owned()],
        if_present: vec![".nobackup".into()],
        one_file_system: false,
    };
    let index = ChunkIndex::open(None).unwrap();
    let opts = BackupOptions {
        excludes,
        ..options(&[&f.src])
    };
    backup(&f.repo, &index, &opts).unwrap();
    let target = f.work.join("restored");
    restore_latest(&f, &target, vec![]).unwrap();
    let root = target.join(f.src.strip_prefix("/").unwrap());
    assert!(root.join("www/index.php").exists());
    assert!(
        root.join("www/theme").is_dir(),
        "the parent of an excluded path stays"
    );
    assert!(!root.join("www/theme/css").exists());
    assert!(!root.join("www/upload.jpg").exists() && !root.join("www/upload-copy.jpg").exists());
    assert!(
        !root.join("www/cache").exists(),
        "a marked directory is left out whole"
    );
}

/// A tmpfs mounted inside the tree, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_keeps_mount_points_empty() {
    use kura::source::exclude::ExcludeOptions;
    let f = fixture();
    let mnt = f.src.join("www/mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        crate::common::skip("snapshots: --one-file-system", "cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(mnt.clone());
    fs::write(mnt.join("other-fs.txt"), b"on the tmpfs").unwrap();
    let index = ChunkIndex::open(None).unwrap();
    for one_fs in [true, false] {
        let opts = BackupOptions {
            excludes: ExcludeOptions {
                one_file_system: one_fs,
                ..ExcludeOptions::default()
            },
            ..options(&[&f.src])
        };
        backup(&f.repo, &index, &opts).unwrap();
        let target = f.work.join(format!("restored-{one_fs}"));
        restore_latest(&f, &target, vec![]).unwrap();
        let root = target.join(f.src.strip_prefix("/").unwrap());
        assert!(root.join("www/index.php").exists());
        assert!(root.join("www/mnt").is_dir(), "the mount point stays");
        assert_eq!(root.join("www/mnt/other-fs.txt").exists(), !one_fs);
    }
}

/// Counts what an operation reports.
#[derive(Default)]
struct Counted {
    bytes: std::sync::atomic::AtomicU64,
    files: std::sync::atomic::AtomicU64,
    total: std::sync::Mutex<Option<(u64, u64)>>,
}

impl kura::ops::progress::Progress for Counted {
    fn set_total(&self, files: u64, bytes: u64) {
        *self.total.lock().unwrap() = Some((files, bytes));
    }
    fn bytes(&self, n: u64) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn file_done(&self) {
        self.files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn progress_adds_up_to_the_summary_and_the_scan_agrees() {
    use kura::ops::backup::backup_with_progress;
    use std::sync::atomic::Ordering::Relaxed;
    let f = fixture();
    let index = ChunkIndex::open(None).unwrap();
    let opts = options(&[&f.src]);
    let (files, bytes) = kura::source::scan::estimate(&opts.paths, &[], &opts.excludes).unwrap();
    for round in 0..2 {
        // The second round reuses every file from the parent unread.
        let counted = Counted::default();
        let report = backup_with_progress(&f.repo, &index, &opts, &counted).unwrap();
        assert_eq!(
            report.summary.files_unchanged,
            if round == 0 { 0 } else { 7 }
        );
        assert_eq!(counted.bytes.load(Relaxed), report.summary.bytes);
        assert_eq!(counted.files.load(Relaxed), report.summary.files);
        assert_eq!((files, bytes), (report.summary.files, report.summary.bytes));
    }
    let counted = Counted::default();
    let store = ChunkStore::new(&f.repo, &index, ChunkStoreOptions::default());
    let (_, snap) = snapshot::find(&f.repo, "latest").unwrap();
    let target = f.work.join("restored");
    let report = kura::ops::restore::restore_with_progress(
        &store,
        &snap.tree_id().unwrap(),
        &RestoreOptions {
            target,
            ..RestoreOptions::default()
        },
        &counted,
    )
    .unwrap();
    // Hard-linked copies are linked, not written: one file fewer.
    let (total_files, total_bytes) = counted.total.lock().unwrap().unwrap();
    assert_eq!(total_files, report.files - 1);
    assert_eq!(counted.files.load(Relaxed), total_files);
    assert_eq!(counted.bytes.load(Relaxed), total_bytes);
}
