//! `kura check` on damaged repositories built by the test: each kind of
//! damage is named with what it affects (exit 14), the unaffected snapshots
//! still restore, partial data checks cover every pack in turn, a backup
//! after the damage is whole without any repair, and `repair index` /
//! `repair snapshots` leave a repository that checks clean and restores
//! what was recoverable.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kura::backend::{Backend, LocalBackend};
use kura::chunkstore::index::{ChunkIndex, write_index_file};
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::index::{IndexFile, IndexedPack};
use kura::format::layout;
use kura::format::pack::{PackEntry, PackKind};
use kura::format::tree::{Content, Extent, Payload};
use kura::id::{ChunkId, PackId, SnapshotId};
use kura::ops::check::{CheckOptions, Subset, check};
use kura::repository::Repository;

use crate::common::{CliRepo, kura_env, pseudo_random, stderr};

pub struct Damaged {
    pub dir: tempfile::TempDir,
    pub cli: CliRepo,
    pub src: PathBuf,
    /// The data pack holding only the second snapshot's new file.
    pub second_data_pack: PathBuf,
    /// The index file the second backup wrote.
    pub second_index: PathBuf,
    pub first: String,
    pub second: String,
}

pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(out)))
}

pub fn data_packs(repo: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for sub in fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in fs::read_dir(sub.path()).unwrap().flatten() {
            out.insert(f.path());
        }
    }
    out
}

/// Two snapshots: the second adds `new.bin`, whose chunks land in packs of
/// their own.
pub fn two_snapshots() -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.bin"), pseudo_random(1 << 20, 5)).unwrap();
    let first = backup(&cli, &src);
    let before = data_packs(&cli.path);
    let indexes_before = files_in(&cli.path.join("index"));
    fs::write(src.join("new.bin"), pseudo_random(1 << 20, 6)).unwrap();
    let second = backup(&cli, &src);
    let second_index = files_in(&cli.path.join("index"))
        .difference(&indexes_before)
        .next()
        .unwrap()
        .clone();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&cli.path));
    let repo = Repository::open(backend, b"pw").unwrap();
    let second_data_pack = data_packs(&cli.path)
        .difference(&before)
        .find(|p| {
            let id = PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let size = fs::metadata(p).unwrap().len();
            repo.read_pack_header(&id, size).unwrap().kind == PackKind::Data
        })
        .unwrap()
        .clone();
    Damaged {
        dir,
        cli,
        src,
        second_data_pack,
        second_index,
        first,
        second,
    }
}

/// Backs up `src` and returns the new snapshot's id.
pub fn backup(cli: &CliRepo, src: &Path) -> String {
    let out = cli.run(&["--json", "backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)["snapshot"].as_str().unwrap().to_owned()
}

pub fn files_in(dir: &Path) -> HashSet<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// The repository through the library, with an index cache of its own.
pub fn open_library(d: &Damaged) -> (Repository, ChunkIndex) {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&d.cli.path));
    let repo = Repository::open(backend, b"pw").unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    (repo, index)
}

/// The entry at `path` (absolute, on the source side) in `snapshot`.
pub fn entry_at(
    repo: &Repository,
    index: &ChunkIndex,
    snapshot: &str,
    path: &Path,
) -> kura::format::tree::Entry {
    let store = ChunkStore::new(repo, index, ChunkStoreOptions::default());
    let snap =
        kura::repository::snapshots::load(repo, &SnapshotId::from_hex(snapshot).unwrap()).unwrap();
    let comps: Vec<Vec<u8>> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    kura::snapshot::tree::lookup(&store, snap.tree_id().unwrap(), &comps)
        .unwrap()
        .unwrap()
}

/// The first data chunk of a small file in `snapshot`.
pub fn first_chunk(repo: &Repository, index: &ChunkIndex, snapshot: &str, path: &Path) -> ChunkId {
    let Payload::File(Content::Inline(extents)) = entry_at(repo, index, snapshot, path).payload
    else {
        panic!("{} is not a file with inline content", path.display());
    };
    match extents[0] {
        Extent::Data { id, .. } => id,
        Extent::Hole { .. } => panic!("a hole"),
    }
}

pub fn pack_file(repo: &Path, id: &PackId) -> PathBuf {
    repo.join(layout::pack_path(id))
}

static RESTORES: AtomicUsize = AtomicUsize::new(0);

/// Restores `snapshot` (with the shared cache, or a new empty one) and
/// checks that the source directory comes back with exactly the files
/// `names`, each byte-identical to the source; `empty_dirs` must come back
/// as empty directories.
pub fn restores_exactly(d: &Damaged, snapshot: &str, names: &[&str], empty_dirs: &[&str]) {
    restores_exactly_with(d, snapshot, names, empty_dirs, false);
}

pub fn restores_exactly_with(
    d: &Damaged,
    snapshot: &str,
    names: &[&str],
    empty_dirs: &[&str],
    fresh_cache: bool,
) {
    let n = RESTORES.fetch_add(1, Ordering::Relaxed);
    let target = d.dir.path().join(format!("restore-{n}"));
    let args = ["restore", snapshot, "--target", target.to_str().unwrap()];
    let out = if fresh_cache {
        let cache = d.dir.path().join(format!("cache-{n}"));
        let env = [
            ("KURA_PASSWORD", std::ffi::OsStr::new("pw")),
            ("KURA_CACHE_DIR", cache.as_os_str()),
        ];
        kura_env(&d.cli.path, &env, &args)
    } else {
        d.cli.run(&args)
    };
    assert!(out.status.success(), "restore {snapshot}: {}", stderr(&out));
    let dir = target.join(d.src.strip_prefix("/").unwrap());
    let mut got: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    let mut want: Vec<&str> = names.iter().chain(empty_dirs).copied().collect();
    want.sort_unstable();
    assert_eq!(got, want, "snapshot {snapshot}");
    for name in names {
        assert_eq!(
            fs::read(dir.join(name)).unwrap(),
            fs::read(d.src.join(name)).unwrap(),
            "{name} in {snapshot}"
        );
    }
    for name in empty_dirs {
        assert_eq!(fs::read_dir(dir.join(name)).unwrap().count(), 0, "{name}");
    }
}

/// `check --read-data` finds nothing.
pub fn checks_clean(d: &Damaged) {
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json(&out)["clean"], true);
}

/// The damage `check` (with `args`) reports, as JSON text; exit 14.
pub fn damage_found(d: &Damaged, args: &[&str]) -> String {
    let out = d.cli.run(&[&["--json", "check"][..], args].concat());
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    json(&out)["damage"].to_string()
}

/// Ids of the snapshot objects in the repository.
pub fn snapshot_ids(d: &Damaged) -> HashSet<String> {
    files_in(&d.cli.path.join("snapshots"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect()
}

pub fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::remove_file(path).unwrap(); // objects are read-only hard links
    fs::write(path, bytes).unwrap();
}

fn one_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()
}

/// The first snapshot restores byte-identical despite the damage.
fn first_still_restores(d: &Damaged) {
    let target = d
        .cli
        .path
        .with_file_name(format!("restore-{}", &d.first[..8]));
    let out = d
        .cli
        .run(&["restore", &d.first, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_old_restored(d, &target);
}

/// The first snapshot's `old.bin`, restored under `target`, equals the source's.
pub fn assert_old_restored(d: &Damaged, target: &Path) {
    let restored = target
        .join(d.src.strip_prefix("/").unwrap())
        .join("old.bin");
    assert_eq!(
        fs::read(restored).unwrap(),
        fs::read(d.src.join("old.bin")).unwrap()
    );
}

#[test]
fn a_clean_repository_checks_clean_with_and_without_data() {
    let d = two_snapshots();
    for args in [
        &["--json", "check"][..],
        &["--json", "check", "--read-data"],
    ] {
        let out = d.cli.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let r = json(&out);
        assert_eq!(r["clean"], true);
        assert_eq!(r["snapshots"], 2);
    }
}

#[test]
fn a_missing_pack_is_named_with_the_files_it_takes() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let r = json(&out);
    let text = r["damage"].to_string();
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("pack {pack}")) && text.contains("missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} /", &d.second[..16])) && text.contains("new.bin"),
        "{text}"
    );
    assert!(
        !text.contains(&d.first[..16]),
        "the first snapshot is not affected: {text}"
    );
    first_still_restores(&d);
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_read_data() {
    let d = two_snapshots();
    flip(&d.second_data_pack, 100);
    let out = d.cli.run(&["--json", "check"]);
    assert!(
        out.status.success(),
        "structure alone cannot see it: {}",
        stderr(&out)
    );
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let text = json(&out)["damage"].to_string();
    assert!(
        text.contains("damaged pack") && text.contains("new.bin"),
        "{text}"
    );
    assert!(!text.contains(&d.first[..16]), "{text}");
    first_still_restores(&d);
}

/// A pack no index file names (its index file is lost) that a snapshot
/// needs is read whole by `--read-data` too: a flipped byte in it is
/// damage named with the pack and the file, not only a note that
/// `repair index` adopts the pack.
#[test]
fn read_data_verifies_an_unindexed_pack_a_snapshot_needs() {
    let d = two_snapshots();
    fs::remove_file(&d.second_index).unwrap();
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    flip(&d.second_data_pack, 100);
    let text = damage_found(&d, &["--read-data"]);
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("pack {pack}")) && text.contains("new.bin"),
        "{text}"
    );
    assert!(!text.contains(&d.first[..16]), "{text}");
    first_still_restores(&d);
}

#[test]
fn truncated_pack_index_and_snapshot_damage_are_named() {
    let d = two_snapshots();
    // A truncated pack.
    let bytes = fs::read(&d.second_data_pack).unwrap();
    fs::remove_file(&d.second_data_pack).unwrap();
    fs::write(&d.second_data_pack, &bytes[..bytes.len() - 10]).unwrap();
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    assert!(
        json(&out)["damage"].to_string().contains("bytes; index"),
        "{}",
        json(&out)
    );
    fs::remove_file(&d.second_data_pack).unwrap();
    fs::write(&d.second_data_pack, &bytes).unwrap();
    assert!(d.cli.run(&["check"]).status.success());
    // A flipped byte in an index file.
    let index_file = one_file(&d.cli.path.join("index"));
    flip(&index_file, 50);
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    let name = index_file.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        json(&out)["damage"]
            .to_string()
            .contains(&format!("index {name}"))
    );
    flip(&index_file, 50);
    // A flipped byte in a snapshot.
    let snap = d.cli.path.join("snapshots").join(&d.second);
    flip(&snap, 60);
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    assert!(
        json(&out)["damage"]
            .to_string()
            .contains(&format!("snapshot {}", d.second))
    );
    first_still_restores(&d);
}

#[test]
fn read_data_subsets_cover_every_pack_within_their_period() {
    use crate::common::{PASSWORD, memory_repo};
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    // Enough data for a dozen packs.
    let store = kura::chunkstore::ChunkStore::new(
        &repo,
        &index,
        kura::chunkstore::ChunkStoreOptions::default(),
    );
    for i in 0..12u64 {
        store
            .put_stream(&pseudo_random(5 << 20, 900 + 2 * i)[..])
            .unwrap();
    }
    store.flush().unwrap();
    drop(store);
    let _ = PASSWORD;
    let packs: Vec<PackId> = repo
        .backend()
        .list(layout::DATA_DIR)
        .unwrap()
        .iter()
        .map(|i| layout::parse_pack_path(&i.path).unwrap())
        .collect();
    assert!(packs.len() >= 7, "{} packs", packs.len());
    let per_night = packs.len().div_ceil(7);
    for night in 0..7 {
        let options = CheckOptions {
            read_data: Some(Subset::Fraction(1, 7)),
            ..CheckOptions::default()
        };
        let r = check(&repo, &index, &options).unwrap();
        assert!(r.is_clean());
        assert_eq!(r.packs_read, per_night, "night {night}");
    }
    for p in &packs {
        assert!(
            index.verified_at(p).unwrap().is_some(),
            "pack {p} never read"
        );
    }
}

#[test]
fn repair_index_drops_a_lost_pack_and_the_next_backup_is_whole() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let out = d.cli.run(&["--json", "repair", "index", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["index_files_written"], 0);
    assert!(
        d.cli.run(&["check"]).status.code() == Some(14),
        "dry run changed nothing"
    );
    let out = d.cli.run(&["--json", "repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    assert!(r["index_files_deleted"].as_u64().unwrap() >= 2, "{r}");
    // The lost data is now simply absent from the index: the second
    // snapshot is still damaged, the first is whole.
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    let text = json(&out)["damage"].to_string();
    assert!(
        text.contains("is in no index") && text.contains(&d.second[..16]),
        "{text}"
    );
    assert!(!text.contains("missing (named by index"), "{text}");
    // A new backup stores the lost chunks again: its snapshot is whole.
    let out = d.cli.run(&["--json", "backup", d.src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let third = json(&out)["snapshot"].as_str().unwrap().to_owned();
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    let text = json(&out)["damage"].to_string();
    assert!(
        !text.contains(&third[..16]),
        "the new snapshot is whole: {text}"
    );
    let target = d.cli.path.with_file_name("restore-third");
    let out = d
        .cli
        .run(&["restore", &third, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(d.src.strip_prefix("/").unwrap());
    for name in ["old.bin", "new.bin"] {
        assert_eq!(
            fs::read(restored.join(name)).unwrap(),
            fs::read(d.src.join(name)).unwrap()
        );
    }
    first_still_restores(&d);
}

// ---- a backup after damage, without any repair

#[test]
fn a_backup_after_a_lost_pack_stores_the_data_again_and_is_whole() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let text = damage_found(&d, &[]);
    assert!(text.contains(&d.second[..16]), "{text}");
    let third = backup(&d.cli, &d.src);
    // The index still names the lost pack, but the new snapshot is whole,
    // and the second one too: its lost chunks have a new copy.
    let text = damage_found(&d, &["--read-data"]);
    assert!(text.contains("missing"), "{text}");
    assert!(
        !text.contains(&d.second[..16]) && !text.contains(&third[..16]),
        "{text}"
    );
    restores_exactly(&d, &third, &["new.bin", "old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    // A client with an empty cache may find the lost copy first; it reads
    // the other one.
    restores_exactly_with(&d, &third, &["new.bin", "old.bin"], &[], true);
}

#[test]
fn a_backup_after_check_found_a_pack_damaged_stores_the_data_again() {
    let d = two_snapshots();
    flip(&d.second_data_pack, 100);
    let text = damage_found(&d, &["--read-data"]);
    assert!(text.contains("damaged pack"), "{text}");
    assert!(text.contains(&d.second[..16]), "{text}");
    let third = backup(&d.cli, &d.src);
    let text = damage_found(&d, &["--read-data"]);
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(&format!("pack {pack}")), "{text}");
    assert!(
        !text.contains(&d.second[..16]) && !text.contains(&third[..16]),
        "{text}"
    );
    restores_exactly(&d, &third, &["new.bin", "old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
}

// ---- the damage matrix: named, the rest restores, repair makes it clean

#[test]
fn a_flipped_index_file_loses_nothing_and_repair_index_replaces_it() {
    let d = two_snapshots();
    flip(&d.second_index, 50);
    let name = d.second_index.file_name().unwrap().to_str().unwrap();
    let text = damage_found(&d, &[]);
    assert!(text.contains(&format!("index {name}")), "{text}");
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    // A new client skips the damaged file instead of refusing to work.
    restores_exactly_with(&d, &d.first, &["old.bin"], &[], true);
    let out = d.cli.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    restores_exactly_with(&d, &d.second, &["new.bin", "old.bin"], &[], true);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
}

#[test]
fn a_flipped_tree_empties_its_directory_in_the_repaired_snapshot() {
    let d = two_snapshots();
    fs::create_dir(d.src.join("sub")).unwrap();
    fs::write(d.src.join("sub/a.txt"), pseudo_random(5000, 7)).unwrap();
    let third = backup(&d.cli, &d.src);
    let (repo, index) = open_library(&d);
    let Payload::Dir(sub_tree) = entry_at(&repo, &index, &third, &d.src.join("sub")).payload else {
        panic!("sub is a directory");
    };
    let loc = index.lookup(&sub_tree).unwrap().unwrap();
    assert_eq!(loc.kind, PackKind::Tree);
    flip(
        &pack_file(&d.cli.path, &loc.pack),
        (loc.offset + loc.stored_len / 2) as usize,
    );
    let text = damage_found(&d, &[]);
    assert!(text.contains(&format!("tree {sub_tree}")), "{text}");
    assert!(
        text.contains(&format!("{} /", &third[..16])) && text.contains("/sub\""),
        "{text}"
    );
    assert!(
        !text.contains(&d.first[..16]) && !text.contains(&d.second[..16]),
        "{text}"
    );
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    // read-data marks the pack damaged; repair rewrites the third snapshot.
    damage_found(&d, &["--read-data"]);
    let before = snapshot_ids(&d);
    let out = d.cli.run(&["--json", "repair", "snapshots", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["snapshots"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["snapshots"][0]["snapshot"], third.as_str());
    let dropped = &r["snapshots"][0]["dropped"];
    assert_eq!(dropped.as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        dropped[0]["path"],
        format!("{}/sub", d.src.display()).as_str()
    );
    assert_eq!(dropped[0]["kind"], "directory emptied");
    assert_eq!(snapshot_ids(&d), before, "a dry run changes nothing");
    let out = d.cli.run(&["--json", "repair", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let repaired = json(&out)["snapshots"][0]["new_snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.cli.run(&["repair", "index", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    restores_exactly(&d, &repaired, &["new.bin", "old.bin"], &["sub"]);
}

#[test]
fn a_flipped_snapshot_object_is_named_and_repair_removes_it() {
    let d = two_snapshots();
    let object = d.cli.path.join("snapshots").join(&d.second);
    flip(&object, 60);
    let text = damage_found(&d, &[]);
    assert!(text.contains(&format!("snapshot {}", d.second)), "{text}");
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    let out = d.cli.run(&["repair", "snapshots", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("snapshot {}: would remove", &d.second[..16])),
        "{text}"
    );
    assert!(object.exists());
    let out = d.cli.run(&["repair", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_ids(&d), HashSet::from([d.first.clone()]));
    checks_clean(&d);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
}

#[test]
fn duplicate_blobs_check_clean_and_losing_one_copy_loses_nothing() {
    let d = two_snapshots();
    let before = data_packs(&d.cli.path);
    {
        // A client that knows no index stores every chunk again, as two
        // backups running at once would.
        let (repo, _) = open_library(&d);
        let unaware = ChunkIndex::open(None).unwrap();
        let store = ChunkStore::new(&repo, &unaware, ChunkStoreOptions::default());
        for name in ["old.bin", "new.bin"] {
            store
                .put_stream(fs::read(d.src.join(name)).unwrap().as_slice())
                .unwrap();
        }
        store.flush().unwrap();
    }
    let copies: Vec<PathBuf> = data_packs(&d.cli.path)
        .difference(&before)
        .cloned()
        .collect();
    assert!(!copies.is_empty());
    checks_clean(&d);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    // The cache now reads the copies first; they go. Their index entries
    // are stale: the missing packs are named, but no file is lost.
    for p in &copies {
        fs::remove_file(p).unwrap();
    }
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let damage = json(&out)["damage"].clone();
    assert_eq!(damage.as_array().unwrap().len(), copies.len(), "{damage}");
    for item in damage.as_array().unwrap() {
        assert!(
            item["problem"].as_str().unwrap().contains("missing"),
            "{damage}"
        );
        assert_eq!(item["affects"].as_array().unwrap().len(), 0, "{damage}");
    }
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    let out = d.cli.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    restores_exactly_with(&d, &d.second, &["new.bin", "old.bin"], &[], true);
}

#[test]
fn a_stale_index_record_past_a_packs_end_is_named_and_repair_index_drops_it() {
    let d = two_snapshots();
    let (repo, index) = open_library(&d);
    let pack = PackId::from_hex(d.second_data_pack.file_name().unwrap().to_str().unwrap()).unwrap();
    let size = fs::metadata(&d.second_data_pack).unwrap().len();
    let header = repo.read_pack_header(&pack, size).unwrap();
    // A record of the pack that claims one more blob, past its real end:
    // a copy of old.bin's first chunk, which the first backup stored
    // elsewhere.
    let chunk = first_chunk(&repo, &index, &d.first, &d.src.join("old.bin"));
    let raw_len = index.lookup(&chunk).unwrap().unwrap().raw_len;
    let mut entries = header.entries.clone();
    entries.push(PackEntry {
        id: chunk,
        offset: u32::try_from(size).unwrap(),
        stored_len: 100,
        raw_offset: 0,
        raw_len,
    });
    let stale = IndexFile {
        supersedes: Vec::new(),
        packs: vec![IndexedPack {
            id: pack,
            kind: PackKind::Data,
            size: size + 100,
            entries,
        }],
    };
    write_index_file(&repo, &stale, 3).unwrap();
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let damage = json(&out)["damage"].clone();
    let text = damage.to_string();
    assert!(
        text.contains(&format!("pack {pack}")) && text.contains(&format!("is {size} bytes; index")),
        "{text}"
    );
    assert_eq!(
        damage.as_array().unwrap().len(),
        1,
        "only the stale record: {text}"
    );
    assert_eq!(damage[0]["affects"].as_array().unwrap().len(), 0, "{text}");
    // The cache reads the stale location first; restore uses the real one.
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
    let out = d.cli.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &d.second, &["new.bin", "old.bin"], &[]);
}
