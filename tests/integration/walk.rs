//! The shared tree walker (`snapshot::walk`) over real snapshots: every
//! path on disk in stored (name) order, a directory before what is below
//! it; once-per-tree walks enter a directory shared by snapshots once; `ls`
//! of a path lists the same entries as a walk of it.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::id::ChunkId;
use kura::ops::backup::{BackupOptions, backup};
use kura::snapshot::walk::{Step, TreeWalk, Visit, Visitor, path_of, walk};

use crate::common::{memory_repo, text_like};

/// Every path below `dir` (absolute), depth first in name-byte order.
fn disk_paths(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for p in names {
        out.push(p.as_os_str().as_bytes().to_vec());
        if p.symlink_metadata().unwrap().is_dir() {
            disk_paths(&p, out);
        }
    }
}

fn make_tree(src: &Path) {
    for d in ["a/deep/er", "b", "shared/x", "shared/y"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (i, f) in [
        "a/1",
        "a/deep/2",
        "a/deep/er/3",
        "b/4",
        "shared/x/5",
        "shared/y/6",
        "top",
    ]
    .iter()
    .enumerate()
    {
        fs::write(src.join(f), text_like(100 + i, i as u64)).unwrap();
    }
    fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"raw name",
    )
    .unwrap();
}

/// Paths handed to `entry`, and every directory entered.
#[derive(Default)]
struct Seen {
    paths: Vec<Vec<u8>>,
    entered: Vec<ChunkId>,
}

impl Visitor for Seen {
    fn entry(&mut self, path: &[u8], _: &kura::format::tree::Entry) -> kura::Result<Visit> {
        self.paths.push(path.to_vec());
        Ok(Visit::Descend)
    }

    fn enter_dir(&mut self, _: &[u8], tree: &ChunkId, _: &[ChunkId]) -> kura::Result<()> {
        self.entered.push(*tree);
        Ok(())
    }
}

#[test]
fn a_walk_hands_out_every_path_in_stored_order_and_shared_trees_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (_, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let options = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        ..BackupOptions::default()
    };
    let first = backup(&repo, &index, &options).unwrap().snapshot;
    fs::write(src.join("top"), b"changed").unwrap();
    let second = backup(&repo, &index, &options).unwrap().snapshot;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let root = |id| {
        kura::repository::snapshots::load(&repo, &id)
            .unwrap()
            .tree_id()
            .unwrap()
    };

    let mut seen = Seen::default();
    walk(&store, &root(second), &mut seen).unwrap();
    let below: Vec<Vec<u8>> = seen
        .paths
        .iter()
        .filter(|p| p.starts_with(src.as_os_str().as_bytes()) && p.len() > src.as_os_str().len())
        .cloned()
        .collect();
    let mut want = Vec::new();
    disk_paths(&src, &mut want);
    assert_eq!(below, want);
    let distinct: HashSet<ChunkId> = seen.entered.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seen.entered.len(),
        "no directory repeats here"
    );

    // Both snapshots once per tree: `a`, `b` and `shared` (and what is
    // below them) are the same trees and are entered once; the trees on
    // the way to src changed with `top`.
    let mut w = TreeWalk::new(&store).once_per_tree();
    let mut both = Seen::default();
    for id in [first, second] {
        w.start_tree(root(id), Vec::new());
        w.run(&mut both).unwrap();
    }
    let way = src.components().count(); // the root tree included
    assert_eq!(both.entered.len(), seen.entered.len() + way);
    assert_eq!(w.trees_seen(), both.entered.len());
}

#[test]
fn ls_of_a_path_lists_what_a_walk_of_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (_, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let options = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        ..BackupOptions::default()
    };
    let id = backup(&repo, &index, &options).unwrap().snapshot;
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let root = kura::repository::snapshots::load(&repo, &id)
        .unwrap()
        .tree_id()
        .unwrap();
    let names: Vec<Vec<u8>> = src
        .join("a")
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    let listed: Vec<Vec<u8>> = kura::ops::ls::ls(&store, &root, &names)
        .unwrap()
        .map(|l| l.unwrap().path)
        .collect();
    let mut want = vec![path_of(&names)];
    disk_paths(&src.join("a"), &mut want);
    assert_eq!(listed, want);

    // Pulled step by step, a skipped directory is not read.
    let mut w = TreeWalk::new(&store);
    w.start_tree(root, Vec::new());
    let mut entries = 0;
    while let Some(step) = w.next_step() {
        if let Step::Entry { .. } = step {
            entries += 1;
            w.skip_subtree();
        }
    }
    assert_eq!(entries, 1, "only the root's one entry");

    let missing = [b"no-such".to_vec()];
    let Err(e) = kura::ops::ls::ls(&store, &root, &missing) else {
        panic!("a missing path is an error");
    };
    assert_eq!(e.kind(), kura::ErrorKind::NotFound);
}
