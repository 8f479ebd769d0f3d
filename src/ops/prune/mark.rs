//! Operations layer, prune step 2: marking. Every chunk reachable from
//! every snapshot (walked with the shared tree walker,
//! [`crate::snapshot::walk`], each tree once) goes into an on-disk
//! [`ChunkSet`], so memory does not
//! grow with the repository. A blob no current index file lists is looked
//! up in the headers of the unindexed packs (condemned ones and orphans)
//! by the chunk store's [`Locator`], the rule every reader shares; such a
//! pack is *needed*. A live blob found nowhere aborts the run
//! before anything is written (format-spec/12, step 2).

use std::collections::HashSet;
use std::path::Path;

use crate::chunkstore::Locator;
use crate::chunkstore::index::{BlobLocation, ChunkIndex, ChunkSet};
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Extent, Payload, TreeBlob};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::repository::Repository;
use crate::repository::snapshots;
use crate::snapshot::tree::TreeSource;
use crate::snapshot::walk::{TreeWalk, Visit, Visitor};

/// Live chunk ids buffered before they go to the on-disk table.
const LIVE_BATCH: usize = 1 << 16;

/// What marking found.
pub(super) struct Marked {
    /// Every chunk id (data and tree) reachable from a snapshot.
    pub live: ChunkSet,
    /// Snapshots walked.
    pub snapshots: usize,
    /// Unindexed packs holding live chunks no current index file lists.
    pub needed: HashSet<PackId>,
}

/// Marks every chunk reachable from `snapshot_ids` into a live set in
/// `scratch`. `unindexed` are the packs (with sizes) whose headers serve
/// blobs the index does not know.
///
/// The live set is a cache: if its file in `scratch` fails (a full disk),
/// marking starts over with the set in memory, with a warning.
///
/// # Errors
/// An unreadable snapshot or tree, a live chunk found nowhere
/// ([`ErrorKind::Corrupt`]), live-set I/O errors in memory, or cache I/O
/// errors.
pub(super) fn mark(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    snapshot_ids: &[SnapshotId],
    unindexed: Vec<(PackId, u64)>,
) -> Result<Marked> {
    let live = ChunkSet::create_in(scratch, LIVE_SET, index.cache_bytes())?;
    let on_disk = live.is_on_disk();
    match mark_into(repo, index, live, snapshot_ids, unindexed.clone()) {
        Err(e) if on_disk && e.kind() == ErrorKind::Io => {
            tracing::warn!("{LIVE_SET} failed on local disk ({e}); marking again in memory");
            let live = ChunkSet::in_memory(LIVE_SET)?;
            mark_into(repo, index, live, snapshot_ids, unindexed)
        }
        done => done,
    }
}

const LIVE_SET: &str = "prune's live set";

fn mark_into(
    repo: &Repository,
    index: &ChunkIndex,
    live: ChunkSet,
    snapshot_ids: &[SnapshotId],
    unindexed: Vec<(PackId, u64)>,
) -> Result<Marked> {
    let source = MarkSource {
        repo,
        index,
        locator: Locator::with_unindexed(repo, index, unindexed),
    };
    let mut marker = Marker {
        source: &source,
        live,
        trees: HashSet::new(),
        pending: Vec::new(),
    };
    // One walk over every snapshot: a tree shared by several (an unchanged
    // directory) is entered once.
    let mut walk = TreeWalk::new(&source).once_per_tree();
    for id in snapshot_ids {
        let snap = load_snapshot(repo, id)?;
        walk.start_tree(snap.tree_id()?, Vec::new());
        walk.run(&mut marker)?;
    }
    marker.flush()?;
    let trees: Vec<ChunkId> = marker.trees.iter().copied().collect();
    marker.live.insert_new(&trees)?;
    Ok(Marked {
        live: marker.live,
        snapshots: snapshot_ids.len(),
        needed: source.locator.used_unindexed(),
    })
}

/// Loads a snapshot to mark from; a damaged one stops the prune (its data
/// cannot be told live or dead) with the command that removes it.
fn load_snapshot(repo: &Repository, id: &SnapshotId) -> Result<Snapshot> {
    snapshots::load(repo, id).map_err(|e| {
        let hint = if e.kind() == ErrorKind::Corrupt {
            format!(
                ", and snapshot {id} is damaged; run `kura repair snapshots` \
                 (it removes the snapshot), then prune again"
            )
        } else {
            String::new()
        };
        e.context(format!(
            "prune reads every snapshot before it changes anything{hint}"
        ))
    })
}

/// Where marking reads blobs: the chunk store's [`Locator`] (the index,
/// else the headers of the packs no current index file names); packs used
/// that way are *needed*.
struct MarkSource<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    locator: Locator<'a>,
}

impl MarkSource<'_> {
    fn locate(&self, id: &ChunkId, what: &str) -> Result<BlobLocation> {
        self.locator.locate(id)?.ok_or_else(|| {
            Error::corrupt(format!(
                "{what} {id} is needed by a snapshot but is in no index file and no \
                 pack prune can read; prune deletes nothing in a damaged repository: run \
                 `kura check`, then `kura repair index` or `kura repair snapshots`"
            ))
        })
    }
}

impl TreeSource for MarkSource<'_> {
    fn tree_blob(&self, id: &ChunkId) -> Result<TreeBlob> {
        let loc = self.locate(id, "tree")?;
        let mut read = crate::chunkstore::read_blob(self.repo, id, &loc);
        // A copy that is missing or damaged where one index file says (a
        // wrong or forged one): any other copy the index knows will do.
        if read.as_ref().is_err_and(is_lost) {
            for other in self.index.locations(id)?.iter().filter(|l| **l != loc) {
                read = crate::chunkstore::read_blob(self.repo, id, other);
                if !read.as_ref().is_err_and(is_lost) {
                    break;
                }
            }
        }
        let bytes = read.map_err(|e| e.context("prune reads every tree of every snapshot"))?;
        TreeBlob::decode(&bytes).map_err(|e| e.context(format!("tree {id}")))
    }
}

/// Whether `e` says a copy of a blob is missing or damaged (another copy
/// may be whole), as opposed to an error that stops the run.
fn is_lost(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt)
}

/// Step 2: marks every chunk reachable from every snapshot, as a visitor
/// of the shared tree walker (a tree that cannot be read stops prune).
struct Marker<'a> {
    source: &'a MarkSource<'a>,
    live: ChunkSet,
    /// Directories, large directories' parts and extent lists reached.
    trees: HashSet<ChunkId>,
    pending: Vec<ChunkId>,
}

impl Visitor for Marker<'_> {
    fn entry(&mut self, _path: &[u8], entry: &Entry) -> Result<Visit> {
        if let Payload::File(content) = &entry.payload {
            self.content(content)?;
        }
        Ok(Visit::Descend)
    }

    fn enter_dir(&mut self, _path: &[u8], tree: &ChunkId, parts: &[ChunkId]) -> Result<()> {
        self.trees.insert(*tree);
        self.trees.extend(parts.iter().copied());
        Ok(())
    }
}

impl Marker<'_> {
    fn data(&mut self, id: ChunkId) -> Result<()> {
        self.pending.push(id);
        if self.pending.len() >= LIVE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.pending);
        let fresh = self.live.insert_new(&batch)?;
        let found = self.source.index.lookup_many(&fresh)?;
        for (id, loc) in fresh.iter().zip(found) {
            if loc.is_none() {
                self.source.locate(id, "data chunk")?;
            }
        }
        Ok(())
    }

    fn content(&mut self, content: &Content) -> Result<()> {
        match content {
            Content::Inline(extents) => self.extents(extents),
            Content::Indirect(lists) => {
                for list in lists {
                    if !self.trees.insert(*list) {
                        continue;
                    }
                    match self.source.tree_blob(list)? {
                        TreeBlob::ExtentList(extents) => self.extents(&extents)?,
                        _ => {
                            return Err(Error::corrupt(format!(
                                "tree {list} is not an extent list"
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn extents(&mut self, extents: &[Extent]) -> Result<()> {
        for x in extents {
            if let Extent::Data { id, .. } = x {
                self.data(*id)?;
            }
        }
        Ok(())
    }
}
