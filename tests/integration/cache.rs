//! The caches in front of a remote repository: the object cache decorator
//! (metadata objects on local disk) and the tree blob cache in the index
//! cache, counted at the backend they save reads from.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kura::backend::cache::object_cache_dir;
use kura::backend::{
    Backend, CachingBackend, HookedBackend, MemoryBackend, conformance, decorate_remote,
};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::layout;
use kura::format::pack::PackKind;
use kura::format::tree::Payload;
use kura::id::ChunkId;
use kura::ops::backup::{BackupOptions, backup};
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::Repository;
use kura::repository::snapshots;
use kura::{ErrorKind, snapshot};

use crate::common::{PASSWORD, describe, memory_repo, pseudo_random, text_like};

const LOCATION: &str = "sftp://backup.example/srv/kura";

/// Counts the reads that reach the backend it wraps: whole-object reads by
/// top directory (`config` by itself), ranged reads by object.
struct Counting {
    counts: Arc<Counts>,
    backend: Arc<dyn Backend>,
}

#[derive(Default)]
struct Counts {
    whole: Mutex<HashMap<String, u64>>,
    ranged: Mutex<HashMap<String, u64>>,
}

impl Counting {
    fn new(inner: Arc<dyn Backend>) -> Self {
        let counts = Arc::new(Counts::default());
        let seen = Arc::clone(&counts);
        let backend = HookedBackend::new(inner).on_read(move |path, range| {
            let (key, counts) = match range {
                Some(_) => (path, &seen.ranged),
                None => (path.split('/').next().unwrap(), &seen.whole),
            };
            *counts.lock().unwrap().entry(key.to_owned()).or_default() += 1;
        });
        Self {
            counts,
            backend: Arc::new(backend),
        }
    }

    /// The counted backend.
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn whole(&self, dir: &str) -> u64 {
        self.counts
            .whole
            .lock()
            .unwrap()
            .get(dir)
            .copied()
            .unwrap_or(0)
    }

    /// Ranged reads of the objects in `paths`.
    fn ranged_in(&self, paths: &HashSet<String>) -> u64 {
        let ranged = self.counts.ranged.lock().unwrap();
        paths.iter().filter_map(|p| ranged.get(p)).sum()
    }

    fn ranged_total(&self) -> u64 {
        self.counts.ranged.lock().unwrap().values().sum()
    }

    fn reset(&self) {
        self.counts.whole.lock().unwrap().clear();
        self.counts.ranged.lock().unwrap().clear();
    }
}

/// A source tree of a few directories (so, several tree blobs).
fn make_source(root: &Path) {
    for (i, dir) in ["etc", "srv/www", "srv/www/img", "var/lib/db"]
        .iter()
        .enumerate()
    {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("notes.txt"), text_like(3000 + i * 100, i as u64)).unwrap();
        fs::write(d.join("blob.bin"), pseudo_random(40_000, 7 + i as u64)).unwrap();
    }
}

fn backup_of(repo: &Repository, index: &ChunkIndex, src: &Path) -> ChunkId {
    index.sync(repo).unwrap();
    let options = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "web1".into(),
        ..BackupOptions::default()
    };
    let report = backup(repo, index, &options).unwrap();
    snapshots::load(repo, &report.snapshot)
        .unwrap()
        .tree_id()
        .unwrap()
}

/// Opens the repository in `backend` through a fresh object cache instance
/// (what each run of the CLI does).
fn open_cached(backend: Arc<dyn Backend>, cache_root: &Path) -> Repository {
    let cached: Arc<dyn Backend> = Arc::new(CachingBackend::new(backend, cache_root, LOCATION));
    Repository::open(cached, PASSWORD).unwrap()
}

/// The paths of the repository's tree packs.
fn tree_packs(repo: &Repository) -> HashSet<String> {
    repo.list_packs()
        .unwrap()
        .into_iter()
        .filter(|(id, size)| repo.read_pack_header(id, *size).unwrap().kind == PackKind::Tree)
        .map(|(id, _)| layout::pack_path(&id))
        .collect()
}

/// Reads every directory below `root`, as `ls -R` does.
fn walk(store: &ChunkStore<'_>, root: &ChunkId) -> usize {
    let mut entries = 0;
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        for e in kura::snapshot::tree::load_directory(store, &id).unwrap() {
            entries += 1;
            if let Payload::Dir(sub) = e.payload {
                stack.push(sub);
            }
        }
    }
    entries
}

/// A memory repository with two snapshots of a source tree.
fn two_snapshots() -> (Arc<MemoryBackend>, tempfile::TempDir) {
    let (memory, repo) = memory_repo();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_source(&src);
    let index = ChunkIndex::open(None).unwrap();
    backup_of(&repo, &index, &src);
    fs::write(src.join("etc/new.conf"), b"changed").unwrap();
    backup_of(&repo, &index, &src);
    (memory, dir)
}

#[test]
fn a_second_snapshot_listing_reads_no_snapshot_object() {
    let (memory, dir) = two_snapshots();
    let counting = Counting::new(memory);
    let cache = dir.path().join("cache");

    let first = open_cached(counting.backend(), &cache);
    assert_eq!(snapshots::list(&first).unwrap().len(), 2);
    assert_eq!(counting.whole("snapshots"), 2);
    assert_eq!(counting.whole("keys"), 1);
    drop(first);

    counting.reset();
    let second = open_cached(counting.backend(), &cache);
    let listed = snapshots::list(&second).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        counting.whole("snapshots"),
        0,
        "snapshots came from the cache"
    );
    assert_eq!(counting.whole("keys"), 0, "key slots came from the cache");
    assert_eq!(counting.whole("config"), 1, "config is read once per run");
    let mode = fs::metadata(object_cache_dir(&cache, LOCATION))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the cache is private");
}

#[test]
fn a_deleted_snapshot_is_not_served_from_the_cache_after_a_listing() {
    let (memory, dir) = two_snapshots();
    let cache = dir.path().join("cache");
    let repo = open_cached(memory.clone(), &cache);
    let ids = snapshots::list_ids(&repo).unwrap();
    snapshots::list(&repo).unwrap(); // caches both
    let gone = layout::snapshot_path(&ids[0]);
    let cached_copy = object_cache_dir(&cache, LOCATION).join(&gone);
    assert!(cached_copy.exists());

    memory.delete(&gone).unwrap(); // another client's forget
    assert_eq!(snapshots::list(&repo).unwrap().len(), 1);
    let err = repo.backend().read(&gone, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!cached_copy.exists(), "the listing evicted it");

    let again = open_cached(memory, &cache);
    assert_eq!(snapshots::list(&again).unwrap().len(), 1);
}

#[test]
fn a_damaged_cache_file_is_detected_and_read_again() {
    let (memory, dir) = two_snapshots();
    let counting = Counting::new(memory);
    let cache = dir.path().join("cache");
    let want = snapshots::list(&open_cached(counting.backend(), &cache)).unwrap();
    let victim = object_cache_dir(&cache, LOCATION).join(layout::snapshot_path(&want[0].0));
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&victim, &bytes).unwrap();

    counting.reset();
    let got = snapshots::list(&open_cached(counting.backend(), &cache)).unwrap();
    assert_eq!(
        got, want,
        "the damage did not reach the repository's reader"
    );
    assert_eq!(
        counting.whole("snapshots"),
        1,
        "only the damaged copy was read again"
    );

    counting.reset();
    snapshots::list(&open_cached(counting.backend(), &cache)).unwrap();
    assert_eq!(
        counting.whole("snapshots"),
        0,
        "and it was cached whole again"
    );
}

#[test]
fn a_replaced_repository_at_the_same_location_empties_the_cache() {
    let (old, dir) = two_snapshots();
    let cache = dir.path().join("cache");
    let old_ids = snapshots::list_ids(&open_cached(old.clone(), &cache)).unwrap();
    snapshots::list(&open_cached(old, &cache)).unwrap();
    let objects = object_cache_dir(&cache, LOCATION);
    assert!(objects.join(layout::snapshot_path(&old_ids[0])).exists());

    // The repository is deleted and another made at the same location.
    let (new, new_repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let src = dir.path().join("src");
    backup_of(&new_repo, &index, &src);
    let repo = open_cached(new.clone(), &cache);
    assert_eq!(repo.id(), new_repo.id());
    for id in &old_ids {
        assert!(!objects.join(layout::snapshot_path(id)).exists());
    }
    let mut cached_keys: Vec<String> = fs::read_dir(objects.join("keys"))
        .unwrap()
        .map(|e| format!("keys/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    cached_keys.sort();
    let new_keys: Vec<String> = new
        .list("keys")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert_eq!(cached_keys, new_keys, "only the new key slot is cached");
    assert_eq!(snapshots::list(&repo).unwrap().len(), 1);
}

#[test]
fn caching_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(MemoryBackend::new());
    conformance::run_shared(Arc::new(CachingBackend::new(inner, dir.path(), LOCATION)));
}

#[test]
fn the_remote_decorators_conform() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(MemoryBackend::new());
    conformance::run_shared(decorate_remote(inner, Some(dir.path()), LOCATION));
    conformance::run_shared(decorate_remote(
        Arc::new(MemoryBackend::new()),
        None,
        LOCATION,
    ));
}

#[test]
fn a_second_ls_and_restore_read_no_tree_pack() {
    let (memory, dir) = two_snapshots();
    let counting = Counting::new(memory.clone());
    let repo = Repository::open(counting.backend(), PASSWORD).unwrap();
    let (_, snap) = snapshot::find(&repo, "latest").unwrap();
    let root = snap.tree_id().unwrap();
    let trees = tree_packs(&repo);
    let cache_file = dir.path().join("cache/index.redb");
    let run = |options: ChunkStoreOptions| {
        let index = ChunkIndex::open(Some(&cache_file)).unwrap();
        index.sync(&repo).unwrap();
        counting.reset();
        let store = ChunkStore::new(&repo, &index, options);
        walk(&store, &root)
    };

    let entries = run(ChunkStoreOptions::default());
    assert!(entries > 10);
    let first_reads = counting.ranged_in(&trees);
    assert!(
        first_reads >= 5,
        "the first ls read the trees ({first_reads})"
    );

    assert_eq!(run(ChunkStoreOptions::default()), entries);
    assert_eq!(counting.ranged_in(&trees), 0, "the second ls read no tree");

    let off = ChunkStoreOptions {
        tree_cache: false,
        ..ChunkStoreOptions::default()
    };
    assert_eq!(run(off), entries);
    assert_eq!(
        counting.ranged_in(&trees),
        first_reads,
        "without the cache: read again"
    );

    let index = ChunkIndex::open(Some(&cache_file)).unwrap();
    index.sync(&repo).unwrap();
    counting.reset();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let target = dir.path().join("restored");
    let options = RestoreOptions {
        target: target.clone(),
        include: Vec::new(),
        ..RestoreOptions::default()
    };
    restore(&store, &root, &options).unwrap();
    assert_eq!(counting.ranged_in(&trees), 0, "the restore read no tree");
    assert!(counting.ranged_total() > 0, "but it read the data");
    let src = dir.path().join("src");
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(describe(&restored), describe(&src));
}

#[test]
fn a_backup_caches_its_trees_so_the_next_backup_reads_none() {
    let (memory, repo) = memory_repo();
    let counting = Counting::new(memory.clone());
    let counted = Repository::open(counting.backend(), PASSWORD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_source(&src);
    let index = ChunkIndex::open(Some(&dir.path().join("cache/index.redb"))).unwrap();
    backup_of(&counted, &index, &src);
    fs::write(src.join("srv/www/img/new.png"), pseudo_random(5000, 99)).unwrap();

    counting.reset();
    backup_of(&counted, &index, &src);
    let trees = tree_packs(&repo);
    assert!(!trees.is_empty());
    assert_eq!(
        counting.ranged_in(&trees),
        0,
        "the parent's trees came from the cache, put there when their pack was uploaded"
    );
}

#[test]
fn a_cached_tree_that_fails_authentication_is_dropped_and_read_from_its_pack() {
    let (memory, dir) = two_snapshots();
    let counting = Counting::new(memory);
    let repo = Repository::open(counting.backend(), PASSWORD).unwrap();
    let root = snapshot::find(&repo, "latest")
        .unwrap()
        .1
        .tree_id()
        .unwrap();
    let trees = tree_packs(&repo);
    let index = ChunkIndex::open(Some(&dir.path().join("cache/index.redb"))).unwrap();
    index.sync(&repo).unwrap();
    let plain = {
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        store.get(&root).unwrap()
    };
    let mut forged = index.cached_tree(&root).unwrap().expect("cached on read");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    index.cache_trees(&[(root, forged.clone())]).unwrap();

    counting.reset();
    {
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        assert_eq!(store.get(&root).unwrap(), plain);
    }
    assert_eq!(counting.ranged_in(&trees), 1, "read from its pack instead");
    let now = index.cached_tree(&root).unwrap().expect("cached again");
    assert_ne!(now, forged, "the forged copy was replaced");

    counting.reset();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    assert_eq!(store.get(&root).unwrap(), plain);
    assert_eq!(counting.ranged_in(&trees), 0);
}

#[test]
fn the_tree_cache_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let index = ChunkIndex::open(Some(&dir.path().join("index.redb")))
        .unwrap()
        .with_tree_cache_limit(100_000);
    let blobs: Vec<(ChunkId, Vec<u8>)> = (0..400u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            (ChunkId(id), vec![i as u8; 1000])
        })
        .collect();
    for batch in blobs.chunks(10) {
        index.cache_trees(batch).unwrap();
    }
    let kept: Vec<_> = blobs
        .iter()
        .filter(|(id, _)| index.cached_tree(id).unwrap().is_some())
        .collect();
    assert!(kept.len() <= 100, "at most the bound: {}", kept.len());
    assert!(
        kept.len() >= 60,
        "evicts down to three quarters, no further"
    );
    for (id, bytes) in kept {
        assert_eq!(index.cached_tree(id).unwrap().as_ref(), Some(bytes));
    }
    let off = ChunkIndex::open(None).unwrap().with_tree_cache_limit(0);
    off.cache_trees(&blobs[..1]).unwrap();
    assert_eq!(off.cached_tree(&blobs[0].0).unwrap(), None);
}

#[test]
fn restore_reads_neighbouring_chunks_of_a_pack_with_one_request() {
    let (memory, repo) = memory_repo();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // About 128 chunks of 32 KiB, stored next to each other in one or two
    // packs.
    let data = pseudo_random(4 << 20, 99);
    fs::write(src.join("big.bin"), &data).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    let root = backup_of(&repo, &index, &src);
    drop(repo);
    let counting = Counting::new(memory);
    let repo = Repository::open(counting.backend(), PASSWORD).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let off = ChunkStoreOptions {
        tree_cache: false,
        ..ChunkStoreOptions::default()
    };
    let store = ChunkStore::new(&repo, &index, off);
    counting.reset();
    let target = dir.path().join("restore");
    restore(
        &store,
        &root,
        &RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    let restored = fs::read(target.join(src.strip_prefix("/").unwrap()).join("big.bin")).unwrap();
    assert!(restored == data, "restored byte-identical");
    let reads = counting.ranged_total();
    assert!(
        reads <= 12,
        "{reads} ranged reads for ~128 chunks (one per run of neighbours, per 8 MiB group, plus trees)"
    );
}

#[test]
fn a_chunk_listed_several_times_is_read_once_and_handed_to_each_position() {
    let (memory, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let refs = {
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        let refs = store.put_stream(&pseudo_random(200_000, 5)[..]).unwrap();
        store.flush().unwrap();
        refs
    };
    assert!(refs.len() >= 3, "{}", refs.len());
    drop(repo);
    let counting = Counting::new(memory);
    let repo = Repository::open(counting.backend(), PASSWORD).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let want: Vec<Vec<u8>> = refs.iter().map(|r| store.get(&r.id).unwrap()).collect();
    let pick = [0, 1, 0, 0, 2, 1, 2];
    let ids: Vec<ChunkId> = pick.iter().map(|&i| refs[i].id).collect();

    counting.reset();
    let mut seen = vec![0; ids.len()];
    store
        .for_each_chunk(&ids, |k, chunk| {
            seen[k] += 1;
            assert!(chunk == want[pick[k]].as_slice(), "position {k}");
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, vec![1; ids.len()], "each position once");
    // The chunks of one stream sit next to each other in at most the two
    // packs it was spread over: a read per pack, repeats included.
    let reads = counting.ranged_total();
    assert!(reads <= 2, "{reads} ranged reads for 3 distinct chunks");
    assert_eq!(
        store.get_many(&ids).unwrap(),
        pick.iter().map(|&i| want[i].clone()).collect::<Vec<_>>()
    );

    // The callback's error stops it at once.
    let mut calls = 0;
    let err = store
        .for_each_chunk(&ids, |_, _| {
            calls += 1;
            Err(kura::Error::new(ErrorKind::Io, "disk full"))
        })
        .unwrap_err();
    assert_eq!((calls, err.kind()), (1, ErrorKind::Io));
}

// ---- the local cache is a cache: its failures degrade, never stop

/// Makes a repository under `dir` whose cache root is `cache`, lets
/// `damage` harm the cache once it exists, then backs up a small tree,
/// restores it, checks every pack and plans a prune: each must succeed,
/// with a warning about the cache.
fn works_without_the_cache(dir: &Path, cache: &Path, damage: impl FnOnce(&Path)) {
    let repo = dir.join("repo");
    crate::common::init(&repo);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(20_000, i)).unwrap();
    }
    let env = [
        ("KURA_PASSWORD", std::ffi::OsStr::new("pw")),
        ("KURA_CACHE_DIR", cache.as_os_str()),
    ];
    let run = |args: &[&str]| {
        let out = crate::common::kura_env(&repo, &env, args);
        let err = crate::common::stderr(&out);
        assert!(out.status.success(), "{args:?}: {err}");
        err
    };
    run(&["check"]);
    damage(cache);
    let mut warnings = run(&["backup", src.to_str().unwrap()]);
    let target = dir.join("restored");
    warnings += &run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    warnings += &run(&["check", "--read-data"]);
    warnings += &run(&["prune", "--dry-run"]);
    assert!(
        warnings.contains("cache"),
        "no warning about the cache: {warnings}"
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(describe(&src), describe(&restored));
}

#[test]
fn a_cache_root_that_is_a_file_is_worked_around() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    works_without_the_cache(dir.path(), &cache, |cache| {
        fs::remove_dir_all(cache).unwrap();
        fs::write(cache, b"not a directory").unwrap();
    });
}

#[test]
fn a_corrupt_cache_file_is_worked_around() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    works_without_the_cache(dir.path(), &cache, |cache| {
        for entry in fs::read_dir(cache).unwrap() {
            let file = entry.unwrap().path().join("index.redb");
            assert!(file.is_file(), "{} was made", file.display());
            fs::write(&file, pseudo_random(64 << 10, 7)).unwrap();
        }
    });
}

/// Fills the file system of `dir` until a write fails.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_cache_file_system_is_worked_around() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&cache)
        .output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: a_full_cache_file_system_is_worked_around: cannot mount a tmpfs here");
        return;
    }
    let result = std::panic::catch_unwind(|| works_without_the_cache(dir.path(), &cache, fill));
    let _ = std::process::Command::new("umount").arg(&cache).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
