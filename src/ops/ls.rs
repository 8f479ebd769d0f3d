//! `ls`: the entries of a snapshot, or of one path in it, depth first in
//! tree order (a directory before what it holds), each with its absolute
//! path in the snapshot. Operations layer; it reads trees only, and hands
//! each entry to the caller as it is reached, so a listing of any size
//! holds one directory per level in memory and can stop early.

use std::ops::ControlFlow;
use std::path::PathBuf;

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind};
use crate::format::tree::{Entry, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct LsOptions {
    /// A directory or file of the snapshot (with or without the leading
    /// `/`); empty or `/` lists everything.
    pub path: PathBuf,
}

/// Walks the snapshot tree `root` as `options` ask, calling `visit` with
/// each entry's path (`/db/site.sql`) and the entry; a `visit` that answers
/// [`ControlFlow::Break`] ends the walk, without error.
///
/// # Errors
/// [`ErrorKind::NotFound`] if the snapshot has no such path; a missing or
/// damaged tree blob; whatever `visit` fails with.
pub fn ls<E: From<Error>>(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &LsOptions,
    mut visit: impl FnMut(&[u8], &Entry) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let mut stack = start(store, root, &super::snapshot_path(&options.path))?;
    while let Some((dir, e)) = stack.pop() {
        let mut path = dir;
        path.extend_from_slice(&e.name);
        if visit(&path, &e)?.is_break() {
            return Ok(());
        }
        if let Payload::Dir(id) = &e.payload {
            path.push(b'/');
            let children = tree::load_directory(store, id)?;
            stack.extend(children.into_iter().rev().map(|c| (path.clone(), c)));
        }
    }
    Ok(())
}

/// The entries to visit first, each with the path of its directory
/// (ending in `/`), as a stack: the last is visited first.
fn start(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    comps: &[Vec<u8>],
) -> crate::Result<Vec<(Vec<u8>, Entry)>> {
    let Some((_, parents)) = comps.split_last() else {
        let entries = tree::load_directory(store, root)?;
        return Ok(entries
            .into_iter()
            .rev()
            .map(|e| (b"/".to_vec(), e))
            .collect());
    };
    let entry = tree::lookup(store, *root, comps)?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such path in the snapshot"))?;
    let mut dir = b"/".to_vec();
    for c in parents {
        dir.extend_from_slice(c);
        dir.push(b'/');
    }
    Ok(vec![(dir, entry)])
}
