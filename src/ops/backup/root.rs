//! Part of `backup`: the root tree, the directories leading to the paths
//! backed up, built in memory and stored last.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::chunkstore::ChunkStore;
use crate::error::Result;
use crate::format::tree::{Entry, Metadata, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree;

/// An in-memory directory of the root tree: the directories leading to
/// the backed-up paths, and the entries of those paths.
#[derive(Default)]
pub(super) struct RootDir {
    pub meta: Metadata,
    pub children: BTreeMap<Vec<u8>, RootNode>,
}

pub(super) enum RootNode {
    Dir(RootDir),
    Entry(Entry),
}

/// Puts `entry` into the root tree below `dirs`, creating the directories
/// on the way with the metadata `dir_meta` gives for their absolute path.
pub(super) fn insert_root(
    root: &mut RootDir,
    dirs: &[Vec<u8>],
    entry: Entry,
    mut dir_meta: impl FnMut(&Path) -> Metadata,
) {
    let mut node = root;
    let mut real = PathBuf::from("/");
    for d in dirs {
        real.push(std::ffi::OsStr::from_bytes(d));
        let child = node.children.entry(d.clone()).or_insert_with(|| {
            let meta = dir_meta(&real);
            RootNode::Dir(RootDir {
                meta,
                children: BTreeMap::new(),
            })
        });
        node = match child {
            RootNode::Dir(d) => d,
            RootNode::Entry(_) => return, // an ancestor path was backed up whole
        };
    }
    node.children
        .insert(entry.name.clone(), RootNode::Entry(entry));
}

pub(super) fn store_root(store: &ChunkStore<'_>, dir: RootDir) -> Result<ChunkId> {
    let mut entries = Vec::with_capacity(dir.children.len());
    for (name, node) in dir.children {
        entries.push(match node {
            RootNode::Entry(e) => e,
            RootNode::Dir(d) => {
                let meta = Metadata {
                    size: 0,
                    ..d.meta.clone()
                };
                Entry {
                    name,
                    meta,
                    payload: Payload::Dir(store_root(store, d)?),
                }
            }
        });
    }
    tree::store_directory(store, entries)
}
