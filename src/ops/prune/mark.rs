//! Operations layer, prune step 2: marking. Every chunk reachable from
//! every snapshot goes into an on-disk [`ChunkSet`], so memory does not
//! grow with the repository. A blob no current index file lists is looked
//! up in the headers of the unindexed packs (condemned ones and orphans);
//! such a pack is *needed*. A live blob found nowhere aborts the run
//! before anything is written (format-spec/12, step 2).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::chunkstore::index::{BlobLocation, ChunkIndex, ChunkSet};
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Content, Extent, Payload, TreeBlob};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::repository::Repository;
use crate::repository::snapshots;

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
/// # Errors
/// An unreadable snapshot or tree, a live chunk found nowhere
/// ([`ErrorKind::Corrupt`]), live-set or cache I/O errors.
pub(super) fn mark(
    repo: &Repository,
    index: &ChunkIndex,
    scratch: &Path,
    snapshot_ids: &[SnapshotId],
    unindexed: Vec<(PackId, u64)>,
) -> Result<Marked> {
    let mut marker = Marker {
        repo,
        index,
        live: ChunkSet::create_in(scratch, "prune's live set")?,
        trees: HashSet::new(),
        pending: Vec::new(),
        fallback: None,
        unindexed,
        needed: HashSet::new(),
    };
    for id in snapshot_ids {
        let snap = snapshots::load(repo, id)
            .map_err(|e| e.context("prune reads every snapshot before it changes anything"))?;
        marker.walk(&snap.tree_id()?)?;
    }
    marker.flush()?;
    let trees: Vec<ChunkId> = marker.trees.iter().copied().collect();
    marker.live.insert_new(&trees)?;
    Ok(Marked {
        live: marker.live,
        snapshots: snapshot_ids.len(),
        needed: marker.needed,
    })
}

/// Step 2: marks every chunk reachable from every snapshot.
struct Marker<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    live: ChunkSet,
    trees: HashSet<ChunkId>,
    pending: Vec<ChunkId>,
    /// Blob locations in packs no current index file names (condemned or
    /// orphans), read when first needed.
    fallback: Option<HashMap<ChunkId, BlobLocation>>,
    unindexed: Vec<(PackId, u64)>,
    /// Unindexed packs holding live chunks no current index file lists.
    needed: HashSet<PackId>,
}

impl Marker<'_> {
    fn locate(&mut self, id: &ChunkId, what: &str) -> Result<BlobLocation> {
        if let Some(loc) = self.index.lookup(id)? {
            return Ok(loc);
        }
        if self.fallback.is_none() {
            let mut map = HashMap::new();
            for (pack, size) in &self.unindexed {
                // A pack already deleted, or one whose header does not
                // authenticate, cannot serve.
                let header = match self.repo.read_pack_header(pack, *size) {
                    Ok(h) => h,
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for e in &header.entries {
                    map.insert(e.id, BlobLocation::from_entry(*pack, header.kind, e));
                }
            }
            self.fallback = Some(map);
        }
        let loc = self.fallback.as_ref().and_then(|m| m.get(id)).copied();
        let Some(loc) = loc else {
            return Err(Error::corrupt(format!(
                "{what} {id} is needed by a snapshot but is in no index file and no \
                 pack prune can read; prune deletes nothing in a damaged repository: run \
                 `kura check`, then `kura repair index` or `kura repair snapshots`"
            )));
        };
        self.needed.insert(loc.pack);
        Ok(loc)
    }

    fn tree(&mut self, id: &ChunkId) -> Result<TreeBlob> {
        let loc = self.locate(id, "tree")?;
        let bytes = crate::chunkstore::read_blob(self.repo, id, &loc)
            .map_err(|e| e.context("prune reads every tree of every snapshot"))?;
        TreeBlob::decode(&bytes).map_err(|e| e.context(format!("tree {id}")))
    }

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
        let found = self.index.lookup_many(&fresh)?;
        for (id, loc) in fresh.iter().zip(found) {
            if loc.is_none() {
                self.locate(id, "data chunk")?;
            }
        }
        Ok(())
    }

    fn walk(&mut self, id: &ChunkId) -> Result<()> {
        if !self.trees.insert(*id) {
            return Ok(());
        }
        match self.tree(id)? {
            TreeBlob::Directory(entries) => {
                for e in entries {
                    match e.payload {
                        Payload::Dir(sub) => self.walk(&sub)?,
                        Payload::File(content) => self.content(&content)?,
                        _ => {}
                    }
                }
            }
            TreeBlob::LargeDirectory(parts) => {
                for part in &parts {
                    self.walk(part)?;
                }
            }
            TreeBlob::ExtentList(_) => {
                return Err(Error::corrupt(format!(
                    "tree {id} is an extent list where a directory belongs"
                )));
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
                    match self.tree(list)? {
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
