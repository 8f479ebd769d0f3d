//! The source layer's one walker: a backup through it stores a tree exactly
//! as a plain recursion over `std::fs` does (a simple twin, no walker),
//! and the size scan, which walks with it too, leaves out exactly what the
//! backup leaves out.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, symlink};
use std::path::Path;

use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::tree::{Content, Entry, Extent, Payload};
use kura::id::ChunkId;
use kura::ops::backup::{BackupOptions, ParentChoice, backup};
use kura::snapshot::tree;
use kura::source::exclude::ExcludeOptions;
use kura::source::{NameCache, data_ranges, read_metadata};

use crate::common::{memory_repo, pseudo_random, text_like};

/// A tree with nested directories, a large directory, a sparse file, empty
/// files and directories, links, a fifo, and what the excludes below hit.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("www/theme/css")).unwrap();
    fs::create_dir_all(root.join("www/cache/sub")).unwrap();
    fs::create_dir_all(root.join("logs/old")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("many")).unwrap();
    fs::write(root.join("www/index.php"), text_like(20_000, 1)).unwrap();
    fs::write(root.join("www/theme/css/site.css"), text_like(300_000, 2)).unwrap();
    fs::write(root.join("www/upload.jpg"), pseudo_random(700_000, 3)).unwrap();
    fs::write(root.join("www/empty"), b"").unwrap();
    fs::write(root.join("www/cache/.nobackup"), b"").unwrap();
    fs::write(root.join("www/cache/sub/big.bin"), pseudo_random(50_000, 4)).unwrap();
    fs::write(root.join("logs/today.log"), text_like(5_000, 5)).unwrap();
    fs::write(root.join("logs/old/2025.log"), text_like(7_000, 6)).unwrap();
    fs::write(root.join("logs/old/keep.txt"), b"kept").unwrap();
    for i in 0..300 {
        fs::write(root.join(format!("many/file-{i:04}")), format!("{i}")).unwrap();
    }
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name",
    )
    .unwrap();
    symlink("www/index.php", root.join("link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(32 << 20).unwrap();
    sparse
        .write_all_at(&pseudo_random(100_000, 7), 5 << 20)
        .unwrap();
}

/// The twin of the backup's walk: every entry of `dir`, no excludes, each
/// data range of a file chunked on its own, holes recorded.
fn twin_directory(store: &ChunkStore<'_>, dir: &Path, names: &mut NameCache) -> ChunkId {
    let mut entries = Vec::new();
    for child in fs::read_dir(dir).unwrap() {
        let path = child.unwrap().path();
        let md = fs::symlink_metadata(&path).unwrap();
        let (meta, _) = read_metadata(&path, &md, names);
        let ft = md.file_type();
        let payload = if ft.is_dir() {
            Payload::Dir(twin_directory(store, &path, names))
        } else if ft.is_file() {
            Payload::File(twin_content(store, &path, md.len()))
        } else if ft.is_symlink() {
            Payload::Symlink(
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_fifo() {
            Payload::Fifo
        } else {
            panic!("unexpected file type at {}", path.display());
        };
        let name = path.file_name().unwrap().as_bytes().to_vec();
        entries.push(Entry {
            name,
            meta,
            payload,
        });
    }
    tree::store_directory(store, entries).unwrap()
}

fn twin_content(store: &ChunkStore<'_>, path: &Path, size: u64) -> Content {
    let file = fs::File::open(path).unwrap();
    let mut extents = Vec::new();
    let mut pos = 0;
    for (offset, len) in data_ranges(&file, size) {
        if offset > pos {
            extents.push(Extent::Hole { len: offset - pos });
        }
        let mut data = vec![0; usize::try_from(len).unwrap()];
        file.read_exact_at(&mut data, offset).unwrap();
        let refs = store.put_stream(&data[..]).unwrap();
        extents.extend(refs.into_iter().map(|r| Extent::Data {
            id: r.id,
            len: r.len,
        }));
        pos = offset + len;
    }
    if pos < size {
        extents.push(Extent::Hole { len: size - pos });
    }
    tree::store_content(store, extents).unwrap()
}

/// The id of the directory tree at `path` below the root tree `root`.
fn tree_at(store: &ChunkStore<'_>, root: ChunkId, path: &Path) -> ChunkId {
    let comps: Vec<Vec<u8>> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    match tree::lookup(store, root, &comps).unwrap().unwrap().payload {
        Payload::Dir(id) => id,
        other => panic!("{} is not a directory: {other:?}", path.display()),
    }
}

#[test]
fn the_walker_stores_a_tree_as_a_plain_recursion_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        parent: ParentChoice::None,
        ..BackupOptions::default()
    };
    let report = backup(&repo, &index, &opts).unwrap();
    assert_eq!(report.summary.warnings, 0, "{:?}", report.warnings);
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let snap = kura::repository::snapshots::load(&repo, &report.snapshot).unwrap();
    let walked = tree_at(&store, snap.tree_id().unwrap(), &src);
    let twin = twin_directory(&store, &src, &mut NameCache::default());
    store.flush().unwrap();
    assert_eq!(walked, twin);
    // And again with the first snapshot as parent: files reused unread
    // give the same tree.
    let again = backup(
        &repo,
        &index,
        &BackupOptions {
            parent: ParentChoice::Latest,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(again.summary.files_unchanged, again.summary.files);
    let snap = kura::repository::snapshots::load(&repo, &again.snapshot).unwrap();
    assert_eq!(tree_at(&store, snap.tree_id().unwrap(), &src), twin);
}

#[test]
fn the_size_scan_and_the_backup_leave_out_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let css = src.join("www/theme/css");
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let everything = ExcludeOptions::default();
    let some = ExcludeOptions {
        patterns: vec![
            "*.jpg".into(),
            "old/*.log".into(),
            css.to_str().unwrap().to_owned(),
            "many".into(),
        ],
        if_present: vec![".nobackup".into()],
        one_file_system: true,
    };
    let mut counted = Vec::new();
    for excludes in [everything, some] {
        let opts = BackupOptions {
            paths: vec![src.clone()],
            hostname: "test".into(),
            excludes,
            ..BackupOptions::default()
        };
        let estimate = kura::source::scan::estimate(&opts.paths, &[], &opts.excludes).unwrap();
        let report = backup(&repo, &index, &opts).unwrap();
        assert_eq!(
            estimate,
            (report.summary.files, report.summary.bytes),
            "scan and backup disagree with {:?}",
            opts.excludes
        );
        counted.push(estimate);
    }
    // The excludes did leave something out: the jpg, one old log, the
    // css directory, the marked cache (two files) and the 300 small files
    // of 1 to 3 bytes.
    let (all, some) = (counted[0], counted[1]);
    assert_eq!(all.0 - some.0, 5 + 300);
    assert_eq!(all.1 - some.1, 700_000 + 7_000 + 300_000 + 50_000 + 790);
}

// ---- files that change while read

/// Progress that runs `change` once, when `at` bytes have been read.
struct ChangeAt {
    read: std::sync::atomic::AtomicU64,
    at: u64,
    change: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl kura::ops::progress::Progress for ChangeAt {
    fn bytes(&self, n: u64) {
        let read = self.read.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
        if read >= self.at
            && let Some(change) = self.change.lock().unwrap().take()
        {
            change();
        }
    }
}

/// Backs up a 16 MiB file that `change` alters after 3 MiB were read;
/// returns its entry in the snapshot and the backup's warnings, after
/// checking the entry's size is the sum of its extents.
fn back_up_while(change: impl FnOnce(&Path) + Send + 'static) -> (Entry, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big.log");
    fs::write(&big, pseudo_random(16 << 20, 3)).unwrap();
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let progress = ChangeAt {
        read: 0.into(),
        at: 3 << 20,
        change: std::sync::Mutex::new(Some(Box::new(move || change(&big)))),
    };
    let opts = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        parent: ParentChoice::None,
        ..BackupOptions::default()
    };
    let report = kura::ops::backup::backup_with_progress(&repo, &index, &opts, &progress).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let snap = kura::repository::snapshots::load(&repo, &report.snapshot).unwrap();
    let entries = tree::load_directory(&store, &tree_at(&store, snap.tree_id().unwrap(), &src));
    let entry = entries
        .unwrap()
        .into_iter()
        .next()
        .expect("the file is in the snapshot");
    let Payload::File(content) = &entry.payload else {
        panic!("not a file: {entry:?}");
    };
    let extents = tree::load_extents(&store, content, entry.meta.size).unwrap();
    let stored: u64 = extents.iter().map(Extent::len).sum();
    assert_eq!(stored, entry.meta.size, "size and extents agree");
    (entry, report.warnings)
}

#[test]
fn a_file_that_grows_while_read_is_stored_up_to_its_size_at_open() {
    let (entry, warnings) = back_up_while(|big| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(big).unwrap();
        f.write_all(&vec![b'x'; 1 << 20]).unwrap();
    });
    assert_eq!(entry.meta.size, 16 << 20);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("changed while it was read")),
        "{warnings:?}"
    );
}

#[test]
fn a_file_that_shrinks_while_read_is_stored_as_read() {
    let (entry, warnings) = back_up_while(|big| {
        fs::OpenOptions::new()
            .write(true)
            .open(big)
            .unwrap()
            .set_len(12 << 20)
            .unwrap();
    });
    assert!(entry.meta.size <= 12 << 20, "{}", entry.meta.size);
    assert!(entry.meta.size >= 3 << 20, "{}", entry.meta.size);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("changed while it was read")),
        "{warnings:?}"
    );
}

/// Collects what a read hands over.
#[derive(Default)]
struct Collect(Vec<u8>);

impl kura::source::ContentSink for Collect {
    fn data(&mut self, data: &mut (dyn std::io::Read + Send)) -> kura::Result<u64> {
        let before = self.0.len();
        data.read_to_end(&mut self.0)
            .map_err(|e| kura::Error::io("test sink", e))?;
        Ok((self.0.len() - before) as u64)
    }

    fn hole(&mut self, len: u64) -> kura::Result<()> {
        self.0.resize(self.0.len() + len as usize, 0);
        Ok(())
    }
}

/// A file replaced after the walk found it (by a symlink to a secret
/// elsewhere, or by another file) is not read: neither by the walk's own
/// read nor by a read-ahead worker's.
#[test]
fn a_file_replaced_after_it_was_found_is_not_read() {
    use kura::source::file::{read_file, read_whole};
    let dir = tempfile::tempdir().unwrap();
    let (path, secret) = (dir.path().join("page.html"), dir.path().join("secret"));
    fs::write(&path, b"public page").unwrap();
    fs::write(&secret, b"a secret of the same...").unwrap();
    let found = fs::symlink_metadata(&path).unwrap();
    // Intact: both reads hand over the content.
    let mut sink = Collect::default();
    assert!(read_file(&path, &found, &mut sink).unwrap().is_ok());
    assert_eq!(sink.0, b"public page");
    let (data, _) = read_whole(&path, &found, 1 << 20).unwrap().unwrap();
    assert_eq!(data, b"public page");
    // The found file is moved aside (kept, so its inode is not reused)
    // and something else put at its name.
    let aside = dir.path().join("page.html.old");
    for replace in [
        |p: &Path, s: &Path| symlink(s, p).unwrap(),
        |p: &Path, s: &Path| fs::copy(s, p).map(drop).unwrap(),
    ] {
        fs::rename(&path, &aside).unwrap();
        replace(&path, &secret);
        let mut sink = Collect::default();
        let read = read_file(&path, &found, &mut sink).unwrap();
        assert!(read.is_err(), "{read:?}");
        assert!(sink.0.is_empty());
        assert!(read_whole(&path, &found, 1 << 20).unwrap().is_err());
        fs::remove_file(&path).unwrap();
        fs::rename(&aside, &path).unwrap();
    }
}
