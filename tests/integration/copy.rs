//! `copy` between repositories with different keys (and chunker
//! parameters): copies restore byte-identical with their metadata and
//! check clean; a second copy sends and reads nothing; a copy after a new
//! backup reads and sends only the new chunks; selections; a copy stopped
//! at every backend operation of the target leaves it clean and the next
//! copy completes; a wrong target password writes nothing (exit 12).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kura::ErrorKind;
use kura::backend::faulty::FaultPlan;
use kura::backend::{
    Backend, FaultyBackend, HookedBackend, LocalBackend, MemoryBackend, write_bytes,
};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::pack::PackerOptions;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::config::ChunkerParams;
use kura::format::snapshot::{CopyOf, Snapshot};
use kura::format::tree::Payload;
use kura::id::SnapshotId;
use kura::ops::backup::{BackupOptions, backup};
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::copy::{CopyOptions, CopyReport, copy};
use kura::ops::repair::RepairSnapshotsOptions;
use kura::ops::restore::{RestoreOptions, restore};
use kura::repository::snapshots;
use kura::repository::{InitOptions, Repository};
use kura::snapshot::Filter;

use crate::common::{
    CliRepo, PASSWORD, all_objects, describe, fast_options, kura, kura_env, pseudo_random, stderr,
    text_like,
};

const TARGET_PASSWORD: &[u8] = b"the off-site password";

/// Chunks of about 4 KiB in the source; the target keeps the default
/// (32 KiB average, 128 KiB max), so its chunker would cut differently.
fn small_chunks() -> InitOptions {
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

/// Packs of 64 KiB and an index file every two packs: a small copy passes
/// through every crash state of a backup.
fn small_packs() -> ChunkStoreOptions {
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

/// Counts what goes through a backend: reads of packs (and the bytes of
/// ranged ones), and bytes written.
struct Counting {
    counts: Arc<Counts>,
    backend: Arc<dyn Backend>,
}

#[derive(Default)]
struct Counts {
    pack_reads: AtomicU64,
    pack_bytes_read: AtomicU64,
    writes: AtomicU64,
    pack_bytes_written: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        let counts = Arc::new(Counts::default());
        let (reads, written) = (Arc::clone(&counts), Arc::clone(&counts));
        let backend = HookedBackend::new(inner)
            .on_read(move |path, range| {
                if path.starts_with("data/") {
                    reads.pack_reads.fetch_add(1, Ordering::SeqCst);
                    let len = range.map_or(0, |r| r.end - r.start);
                    reads.pack_bytes_read.fetch_add(len, Ordering::SeqCst);
                }
            })
            .on_write(move |path, bytes, _| {
                written.writes.fetch_add(1, Ordering::SeqCst);
                if path.starts_with("data/") {
                    written
                        .pack_bytes_written
                        .fetch_add(bytes.len() as u64, Ordering::SeqCst);
                }
            });
        Arc::new(Self {
            counts,
            backend: Arc::new(backend),
        })
    }

    /// The counted backend.
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn reset(&self) {
        self.counts.pack_reads.store(0, Ordering::SeqCst);
        self.counts.pack_bytes_read.store(0, Ordering::SeqCst);
        self.counts.writes.store(0, Ordering::SeqCst);
        self.counts.pack_bytes_written.store(0, Ordering::SeqCst);
    }

    fn pack_reads(&self) -> u64 {
        self.counts.pack_reads.load(Ordering::SeqCst)
    }

    fn pack_bytes_read(&self) -> u64 {
        self.counts.pack_bytes_read.load(Ordering::SeqCst)
    }

    fn writes(&self) -> u64 {
        self.counts.writes.load(Ordering::SeqCst)
    }

    fn pack_bytes_written(&self) -> u64 {
        self.counts.pack_bytes_written.load(Ordering::SeqCst)
    }
}

/// A tree with one of each thing a server holds, a sparse file, and a
/// file with more extents than an entry holds inline (extent lists).
fn make_tree(root: &Path, big: bool) {
    fs::create_dir_all(root.join("www/theme")).unwrap();
    fs::write(root.join("www/index.php"), text_like(30_000, 1)).unwrap();
    fs::write(root.join("www/theme/site.css"), text_like(120_000, 2)).unwrap();
    fs::write(root.join("www/upload.jpg"), pseudo_random(200_000, 3)).unwrap();
    fs::write(root.join("www/empty"), b"").unwrap();
    fs::set_permissions(
        root.join("www/index.php"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(root.join("www/theme"), fs::Permissions::from_mode(0o2750)).unwrap();
    symlink("index.php", root.join("www/link")).unwrap();
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
    sparse.set_len(8 << 20).unwrap();
    sparse
        .write_all_at(&pseudo_random(50_000, 4), 1 << 20)
        .unwrap();
    xattr::set(root.join("www/index.php"), "user.kura-test", b"xattr value")
        .expect("user xattrs on the test file system (the metadata round trip needs one)");
    if big {
        // About 2000 chunks of 4 to 5 KiB: more than the 1024 extents an
        // entry holds inline.
        fs::write(root.join("www/big.bin"), pseudo_random(10 << 20, 5)).unwrap();
    }
}

/// Changes a little: one file rewritten, one new.
fn change_tree(root: &Path) {
    fs::write(root.join("www/index.php"), text_like(31_000, 6)).unwrap();
    fs::write(root.join("www/new.bin"), pseudo_random(60_000, 7)).unwrap();
}

fn backup_of(
    repo: &Repository,
    index: &ChunkIndex,
    src: &Path,
    host: &str,
    tag: &str,
) -> SnapshotId {
    let options = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: host.into(),
        tags: vec![tag.into()],
        ..BackupOptions::default()
    };
    let report = backup(repo, index, &options).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    report.snapshot
}

fn synced(repo: &Repository, cache: Option<&Path>) -> ChunkIndex {
    let index = ChunkIndex::open(cache).unwrap();
    index.sync(repo).unwrap();
    index
}

fn copy_all(
    source: &Repository,
    target: &Repository,
    target_cache: Option<&Path>,
    store: ChunkStoreOptions,
) -> kura::Result<CopyReport> {
    let source_index = synced(source, None);
    let target_index = ChunkIndex::open(target_cache).unwrap();
    target_index.sync(target)?;
    let options = CopyOptions {
        store,
        cache_root: target_cache.map(|c| c.with_extension("d")),
        ..CopyOptions::default()
    };
    copy(source, &source_index, target, &target_index, &options)
}

/// `check --read-data`, from the library, with a fresh cache.
fn assert_clean(repo: &Repository, label: &str) {
    let index = synced(repo, None);
    let options = CheckOptions {
        read_data: Some(Subset::All),
        ..CheckOptions::default()
    };
    let report = check(repo, &index, &options).unwrap_or_else(|e| panic!("{label}: check: {e}"));
    assert!(report.is_clean(), "{label}: {:#?}", report.damage);
    assert!(report.orphan_packs.is_empty(), "{label}: orphan packs");
}

/// Restores snapshot `id` into `target` and describes what was backed up
/// from `src`.
fn restored(
    repo: &Repository,
    id: &SnapshotId,
    src: &Path,
    target: &Path,
) -> HashMap<PathBuf, String> {
    let index = synced(repo, None);
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    let root = snapshots::load(repo, id).unwrap().tree_id().unwrap();
    restore(
        &store,
        &root,
        &RestoreOptions {
            target: target.to_path_buf(),
            ..RestoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("snapshot {id} does not restore: {e}"));
    let got = describe(&target.join(src.strip_prefix("/").unwrap()));
    fs::remove_dir_all(target).unwrap();
    got
}

/// The target's snapshots by the source snapshot they copy.
fn copies(target: &Repository) -> HashMap<SnapshotId, (SnapshotId, Snapshot)> {
    let mut out = HashMap::new();
    for (id, s) in snapshots::list(target).unwrap() {
        let of = s.copy_of.as_ref().expect("a copy names its original");
        let source = SnapshotId::from_hex(&of.snapshot).unwrap();
        assert!(
            out.insert(source, (id, s)).is_none(),
            "one copy per snapshot"
        );
    }
    out
}

/// The lengths of the data extents of file `path` in a snapshot.
fn extent_lengths(
    repo: &Repository,
    id: &SnapshotId,
    path: &Path,
) -> (Vec<u32>, Vec<kura::id::ChunkId>) {
    use std::os::unix::ffi::OsStrExt;
    let index = synced(repo, None);
    let store = ChunkStore::new(repo, &index, ChunkStoreOptions::default());
    let root = snapshots::load(repo, id).unwrap().tree_id().unwrap();
    let comps: Vec<Vec<u8>> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    let entry = kura::snapshot::tree::lookup(&store, root, &comps)
        .unwrap()
        .unwrap();
    let Payload::File(content) = &entry.payload else {
        panic!("not a file")
    };
    let extents = kura::snapshot::tree::load_extents(&store, content, entry.meta.size).unwrap();
    extents
        .iter()
        .filter_map(|e| match e {
            kura::format::tree::Extent::Data { id, len } => Some((*len, *id)),
            kura::format::tree::Extent::Hole { .. } => None,
        })
        .unzip()
}

struct Pair {
    dir: tempfile::TempDir,
    src: PathBuf,
    source_backend: Arc<Counting>,
    source: Repository,
    source_index: ChunkIndex,
    target_backend: Arc<Counting>,
    target: Repository,
    target_cache: PathBuf,
}

/// A source with small chunks and a target with the default chunker and
/// another password, both on local disk.
fn pair(big: bool) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, big);
    let source_backend = Counting::new(Arc::new(LocalBackend::new(dir.path().join("source"))));
    let source = Repository::init(source_backend.backend(), PASSWORD, &small_chunks()).unwrap();
    let target_backend = Counting::new(Arc::new(LocalBackend::new(dir.path().join("target"))));
    let target =
        Repository::init(target_backend.backend(), TARGET_PASSWORD, &fast_options()).unwrap();
    let source_index = synced(&source, None);
    let target_cache = dir.path().join("target-cache.redb");
    Pair {
        dir,
        src,
        source_backend,
        source,
        source_index,
        target_backend,
        target,
        target_cache,
    }
}

impl Pair {
    fn copy(&self, options: &CopyOptions) -> CopyReport {
        self.source_index.sync(&self.source).unwrap();
        let target_index = synced(&self.target, Some(&self.target_cache));
        self.source_backend.reset();
        self.target_backend.reset();
        let options = CopyOptions {
            cache_root: Some(self.dir.path().join("cache")),
            ..options.clone()
        };
        copy(
            &self.source,
            &self.source_index,
            &self.target,
            &target_index,
            &options,
        )
        .unwrap()
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn a_copy_restores_byte_identical_and_keeps_chunk_boundaries() {
    let p = pair(true);
    let first = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    let first_tree = describe(&p.src);
    change_tree(&p.src);
    let second = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    let second_tree = describe(&p.src);

    let report = p.copy(&CopyOptions::default());
    let sources: Vec<SnapshotId> = report.copied.iter().map(|c| c.source).collect();
    assert_eq!(sources, vec![first, second], "oldest first");
    assert!(report.already_copied.is_empty());
    assert!(report.chunks_read > 1024, "{report:?}");
    assert_eq!(p.source_backend.writes(), 0, "the source is only read");

    let copies = copies(&p.target);
    assert_eq!(copies.len(), 2);
    let source_repo = p.source.id().to_hex();
    for (src_id, parent) in [(first, None), (second, Some(first))] {
        let (tgt_id, tgt) = &copies[&src_id];
        assert!(
            report
                .copied
                .iter()
                .any(|c| c.source == src_id && c.target == Some(*tgt_id))
        );
        let orig = snapshots::load(&p.source, &src_id).unwrap();
        // Every member is kept but the tree, the parent and copy_of.
        let mut want = orig.clone();
        want.tree.clone_from(&tgt.tree);
        want.parent = parent.map(|s: SnapshotId| copies[&s].0.to_hex());
        want.copy_of = Some(CopyOf {
            repository: source_repo.clone(),
            snapshot: src_id.to_hex(),
        });
        assert_eq!(*tgt, want);
        assert_ne!(tgt.tree, orig.tree, "tree ids are keyed: they differ");
    }

    // The same chunk lengths, other ids.
    let big = p.src.join("www/big.bin");
    let (src_lens, src_ids) = extent_lengths(&p.source, &second, &big);
    let (tgt_lens, tgt_ids) = extent_lengths(&p.target, &copies[&second].0, &big);
    assert!(
        src_lens.len() > 1024,
        "{} chunks: extent lists",
        src_lens.len()
    );
    assert_eq!(src_lens, tgt_lens);
    assert!(src_ids.iter().zip(&tgt_ids).all(|(s, t)| s != t));

    for (src_id, tree) in [(first, &first_tree), (second, &second_tree)] {
        let got = restored(&p.target, &copies[&src_id].0, &p.src, &p.scratch("restore"));
        assert_eq!(got, *tree);
    }
    assert_clean(&p.target, "target after copy");
}

#[test]
fn a_second_copy_copies_nothing_and_reads_no_data() {
    let p = pair(false);
    let first = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    change_tree(&p.src);
    let second = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    let report = p.copy(&CopyOptions::default());
    assert_eq!(report.copied.len(), 2);

    let again = p.copy(&CopyOptions::default());
    assert!(again.copied.is_empty(), "{again:?}");
    let already: Vec<SnapshotId> = again.already_copied.iter().map(|c| c.source).collect();
    assert_eq!(already, vec![first, second]);
    assert_eq!(again.chunks_read, 0);
    assert_eq!(p.source_backend.pack_reads(), 0, "no tree, no chunk read");
    assert_eq!(p.target_backend.writes(), 0, "nothing written");

    // Copied back to where they were made, they are recognised too.
    let source_index = synced(&p.target, None);
    let target_index = synced(&p.source, None);
    let back = copy(
        &p.target,
        &source_index,
        &p.source,
        &target_index,
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(
        back.copied.is_empty() && back.already_copied.len() == 2,
        "{back:?}"
    );
    assert_eq!(snapshots::list_ids(&p.source).unwrap().len(), 2);
}

/// Copies once more and checks that only `second` was copied, reading no
/// more source chunks than its backup stored new (the rest were known).
fn copy_reads_only_new_chunks(p: &Pair, second: &SnapshotId) {
    let new_source_chunks = snapshots::load(&p.source, second)
        .unwrap()
        .summary
        .chunks_new;
    let report = p.copy(&CopyOptions::default());
    assert_eq!(report.copied.len(), 1);
    assert!(
        report.chunks_read > 0 && report.chunks_read <= new_source_chunks,
        "read {} chunks; the backup stored {new_source_chunks} new blobs",
        report.chunks_read
    );
}

#[test]
fn a_copy_after_a_new_backup_reads_and_sends_only_new_chunks() {
    let p = pair(false);
    backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    p.copy(&CopyOptions::default());
    let first_sent = p.target_backend.pack_bytes_written();
    let first_read = p.source_backend.pack_bytes_read();

    change_tree(&p.src);
    let second = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    // A new process: the translations come from the cache on disk.
    copy_reads_only_new_chunks(&p, &second);
    let sent = p.target_backend.pack_bytes_written();
    assert!(
        sent * 2 < first_sent,
        "sent {sent} bytes of packs, the first copy {first_sent}"
    );
    // Bytes, not reads: neighbouring chunks are read in runs, so the
    // number of reads depends on where the chunks lie.
    assert!(
        p.source_backend.pack_bytes_read() * 2 < first_read,
        "{} bytes of packs read, the first copy {first_read}",
        p.source_backend.pack_bytes_read()
    );
    let copies = copies(&p.target);
    let got = restored(&p.target, &copies[&second].0, &p.src, &p.scratch("restore"));
    assert_eq!(got, describe(&p.src));
    assert_clean(&p.target, "target after the second copy");
}

#[test]
fn translations_outlive_the_target_index_cache() {
    let p = pair(false);
    backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    p.copy(&CopyOptions::default());
    let translations =
        kura::ops::copy::translations_file(&p.dir.path().join("cache"), p.target.id());
    assert!(translations.is_file(), "{}", translations.display());

    // The target's index cache is gone (rebuilt from its index files);
    // copy's own store still knows every chunk the target holds.
    fs::remove_file(&p.target_cache).unwrap();
    change_tree(&p.src);
    let second = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    copy_reads_only_new_chunks(&p, &second);
    assert_clean(&p.target, "target after the second copy");
}

#[test]
fn selected_snapshots_are_copied_and_parents_only_mapped_when_copied() {
    let p = pair(false);
    let a = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    change_tree(&p.src);
    let b = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    let c = backup_of(&p.source, &p.source_index, &p.src, "db1", "weekly");

    let report = p.copy(&CopyOptions {
        snapshots: vec![b],
        ..CopyOptions::default()
    });
    assert_eq!(report.copied.len(), 1);
    let copies_now = copies(&p.target);
    assert_eq!(copies_now.keys().copied().collect::<Vec<_>>(), vec![b]);
    // b's parent (a) is not in the target: no parent.
    assert_eq!(copies_now[&b].1.parent, None);

    let dry = p.copy(&CopyOptions {
        filter: Filter {
            host: Some("db1".into()),
            ..Filter::default()
        },
        dry_run: true,
        ..CopyOptions::default()
    });
    assert_eq!(dry.copied.len(), 1);
    assert_eq!((dry.copied[0].source, dry.copied[0].target), (c, None));
    assert_eq!(p.target_backend.writes(), 0, "a dry run writes nothing");
    assert_eq!(p.source_backend.pack_reads(), 0, "nor reads trees");

    let report = p.copy(&CopyOptions {
        filter: Filter {
            tags: vec!["nightly".into()],
            ..Filter::default()
        },
        ..CopyOptions::default()
    });
    assert_eq!(
        report.copied.iter().map(|c| c.source).collect::<Vec<_>>(),
        vec![a]
    );
    assert_eq!(report.already_copied.len(), 1);
    let copies = copies(&p.target);
    assert_eq!(copies.len(), 2);
    assert!(!copies.contains_key(&c));
    assert_clean(&p.target, "target after selected copies");
}

#[test]
fn a_target_with_a_smaller_max_chunk_is_refused_before_writing() {
    let p = pair(false);
    backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    let narrow = Counting::new(Arc::new(MemoryBackend::new()));
    let options = InitOptions {
        chunker: ChunkerParams {
            min: 512,
            avg: 2 << 10,
            max: 8 << 10,
            normalization: 1,
        },
        ..fast_options()
    };
    let target = Repository::init(narrow.backend(), TARGET_PASSWORD, &options).unwrap();
    narrow.reset();
    let err = copy_all(&p.source, &target, None, ChunkStoreOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(narrow.writes(), 0);
}

#[test]
fn a_repaired_copy_is_copied_again_whole() {
    let p = pair(false);
    let first = backup_of(&p.source, &p.source_index, &p.src, "web1", "nightly");
    p.copy(&CopyOptions::default());
    // Lose a data pack of the target and repair its snapshot.
    let packs = p.target.list_packs().unwrap();
    let index = synced(&p.target, None);
    let data_pack = packs
        .keys()
        .find(|id| {
            let header = p.target.read_pack_header(id, packs[id]).unwrap();
            header.kind == kura::format::pack::PackKind::Data
        })
        .copied()
        .unwrap();
    p.target
        .backend()
        .delete(&kura::format::layout::pack_path(&data_pack))
        .unwrap();
    let repair =
        kura::ops::repair::repair_snapshots(&p.target, &index, &RepairSnapshotsOptions::default())
            .unwrap();
    assert_eq!(repair.repaired.len(), 1);
    let repaired = snapshots::list(&p.target).unwrap();
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0].1.copy_of, None, "a repaired copy is no copy");

    let report = p.copy(&CopyOptions::default());
    assert_eq!(report.copied.len(), 1, "{report:?}");
    let copy = &snapshots::list(&p.target)
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.copy_of.is_some())
        .unwrap();
    assert_eq!(copy.1.copy_of.as_ref().unwrap().snapshot, first.to_hex());
    let got = restored(&p.target, &copy.0, &p.src, &p.scratch("restore"));
    assert_eq!(got, describe(&p.src));
}

// ---- a copy stopped at each backend operation of the target

/// Every object of `from` in a new memory backend.
fn copy_of_storage(from: &MemoryBackend) -> Arc<MemoryBackend> {
    let to = Arc::new(MemoryBackend::new());
    for (path, bytes) in all_objects(from) {
        write_bytes(to.as_ref(), &path, &bytes).unwrap();
    }
    to
}

#[test]
fn a_copy_crashed_at_any_target_operation_leaves_it_clean_and_the_next_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, false);
    let source =
        Repository::init(Arc::new(MemoryBackend::new()), PASSWORD, &small_chunks()).unwrap();
    let source_index = synced(&source, None);
    let first = backup_of(&source, &source_index, &src, "web1", "nightly");
    let mut trees = HashMap::from([(first, describe(&src))]);
    change_tree(&src);
    let second = backup_of(&source, &source_index, &src, "web1", "nightly");
    trees.insert(second, describe(&src));
    let empty = Arc::new(MemoryBackend::new());
    Repository::init(empty.clone(), TARGET_PASSWORD, &fast_options()).unwrap();

    let run = |plan: FaultPlan, cache: &Path| {
        let storage = copy_of_storage(&empty);
        let faulty = Arc::new(FaultyBackend::new(storage.clone()));
        let target = Repository::open(faulty.clone(), TARGET_PASSWORD).unwrap();
        faulty.set_plan(plan);
        let result = copy_all(&source, &target, Some(cache), small_packs());
        (storage, faulty.ops(), faulty.crashed(), result)
    };
    let (_, n, _, result) = run(FaultPlan::default(), &dir.path().join("count.redb"));
    assert_eq!(result.unwrap().copied.len(), 2);
    assert!(n >= 15, "{n} operations");
    let mut crashed = 0;
    for k in 1.. {
        let label = format!("crash at operation {k} of {n}");
        let cache = dir.path().join(format!("cache-{k}.redb"));
        let (storage, _, hit, result) = run(
            FaultPlan {
                crash_at: Some(k),
                ..FaultPlan::default()
            },
            &cache,
        );
        assert_eq!(result.is_err(), hit, "{label}: {:?}", result.err());
        crashed += usize::from(hit);
        let target = Repository::open(storage, TARGET_PASSWORD).unwrap();
        // What the crash left: clean but for orphans; each copy restores.
        let index = synced(&target, None);
        let options = CheckOptions {
            read_data: Some(Subset::All),
            ..CheckOptions::default()
        };
        let report = check(&target, &index, &options).unwrap();
        assert!(report.is_clean(), "{label}: {:#?}", report.damage);
        for (id, (tgt_id, _)) in copies(&target) {
            let got = restored(&target, &tgt_id, &src, &dir.path().join("restore"));
            assert!(got == trees[&id], "{label}: copy of {id} restores wrong");
        }
        // The next copy, with the crashed run's cache, completes.
        let next = copy_all(&source, &target, Some(&cache), small_packs())
            .unwrap_or_else(|e| panic!("{label}: the next copy fails: {e}"));
        assert_eq!(next.copied.len() + next.already_copied.len(), 2, "{label}");
        assert_clean(&target, &format!("{label}, next copy"));
        let done = copies(&target);
        assert_eq!(done.len(), 2, "{label}");
        for (id, (tgt_id, _)) in done {
            let got = restored(&target, &tgt_id, &src, &dir.path().join("restore"));
            assert!(got == trees[&id], "{label}: copy of {id} restores wrong");
        }
        fs::remove_file(&cache).unwrap();
        if !hit {
            break;
        }
        assert!(k < 2 * n, "{label}: the runs do not end");
    }
    assert!(crashed as u64 + 3 >= n, "{crashed} of {n} points reached");
}

// ---- the command line

/// A second repository at `dir/target` with its own password in
/// `dir/target-password`.
fn cli_target(dir: &Path) -> (PathBuf, PathBuf) {
    let path = dir.join("target");
    let out = kura(
        &path,
        Some("off-site"),
        &[&["init"][..], &crate::common::FAST_KDF].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let password = dir.join("target-password");
    fs::write(&password, "off-site\n").unwrap();
    (path, password)
}

#[test]
fn cli_copy_dry_run_copy_and_again_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, false);
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["backup", "--host", "web1", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (target, password) = cli_target(dir.path());
    let to = [
        "--to",
        target.to_str().unwrap(),
        "--to-password-file",
        password.to_str().unwrap(),
    ];

    let before = all_objects(&LocalBackend::new(&target));
    let out = cli.run(&[&["--json", "copy", "--dry-run"][..], &to[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    assert_eq!(all_objects(&LocalBackend::new(&target)), before);

    let out = cli.run(&[&["--json", "copy"][..], &to[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["copied"][0]["target"].is_string());
    assert!(report["chunks_read"].as_u64().unwrap() > 0);

    // Again, with the source given by --from and KURA_TO_PASSWORD.
    let cache = dir.path().join("cache");
    let out = kura_env(
        &dir.path().join("elsewhere"),
        &[
            ("KURA_PASSWORD", OsStr::new("pw")),
            ("KURA_TO_PASSWORD", OsStr::new("off-site")),
            ("KURA_CACHE_DIR", cache.as_os_str()),
        ],
        &[
            "--json",
            "copy",
            "--from",
            cli.path.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["already_copied"].as_array().unwrap().len(), 1);
    assert_eq!(report["chunks_read"], 0);

    let target_env = [
        ("KURA_PASSWORD", OsStr::new("off-site")),
        ("KURA_CACHE_DIR", cache.as_os_str()),
    ];
    let out = kura_env(&target, &target_env, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restore_to = dir.path().join("restored");
    let out = kura_env(
        &target,
        &target_env,
        &[
            "restore",
            "latest",
            "--target",
            restore_to.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        describe(&restore_to.join(src.strip_prefix("/").unwrap())),
        describe(&src)
    );
}

#[test]
fn cli_copy_with_a_wrong_target_password_exits_12_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"some data").unwrap();
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (target, _) = cli_target(dir.path());
    let wrong = dir.path().join("wrong");
    fs::write(&wrong, "not it\n").unwrap();
    let before = all_objects(&LocalBackend::new(&target));
    let source_before = all_objects(&LocalBackend::new(&cli.path));
    let out = cli.run(&[
        "copy",
        "--to",
        target.to_str().unwrap(),
        "--to-password-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the target repository"),
        "whose password was wrong: {}",
        stderr(&out)
    );
    assert_eq!(all_objects(&LocalBackend::new(&target)), before);
    assert_eq!(all_objects(&LocalBackend::new(&cli.path)), source_before);
    // Without a target password none is borrowed from the source, and
    // there is no prompt off a terminal.
    let out = cli.run(&["copy", "--to", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
