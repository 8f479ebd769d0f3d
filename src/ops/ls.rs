//! `ls`: the entries of a snapshot, or of one path in it and everything
//! below, in the tree walker's order (stored order, depth first), streamed:
//! a directory is read only when the listing reaches it, so a reader that
//! stops early (`kura ls | head`) reads little, and output already given
//! stays given when a damaged directory ends the listing.

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::Entry;
use crate::id::ChunkId;
use crate::snapshot::tree;
use crate::snapshot::walk::{Step, TreeWalk, path_of};

/// One listed entry.
#[derive(Debug, Clone)]
pub struct ListedEntry {
    /// Absolute path in the snapshot, `/`-separated bytes.
    pub path: Vec<u8>,
    pub entry: Entry,
}

/// The entries of a listing, one at a time; the first error ends it.
pub struct Listing<'s, 'r> {
    walk: TreeWalk<'s, ChunkStore<'r>>,
    failed: bool,
}

/// Lists the snapshot root tree `root`, or with `path` (names from the
/// root) the entry there and what is below it.
///
/// # Errors
/// [`ErrorKind::NotFound`] if `path` is not in the snapshot; missing or
/// damaged tree blobs on the way to it. Blobs below come as the listing's
/// items.
pub fn ls<'s, 'r>(
    store: &'s ChunkStore<'r>,
    root: &ChunkId,
    path: &[Vec<u8>],
) -> Result<Listing<'s, 'r>> {
    let mut walk = TreeWalk::new(store);
    if let Some((_, parents)) = path.split_last() {
        let entry = tree::lookup(store, *root, path)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such path in the snapshot"))?;
        walk.start_entry(path_of(parents), entry);
    } else {
        walk.start_tree(*root, Vec::new());
    }
    Ok(Listing {
        walk,
        failed: false,
    })
}

impl Iterator for Listing<'_, '_> {
    type Item = Result<ListedEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.walk.next_step()? {
                Step::Entry { path, entry } => return Some(Ok(ListedEntry { path, entry })),
                Step::Enter { .. } | Step::Leave { .. } => {}
                Step::Unreadable { error, .. } => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}
