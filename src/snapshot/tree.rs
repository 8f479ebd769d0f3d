//! Tree layer: stores directories and file contents as tree blobs through
//! the chunk store, and reads them back, resolving large directories and
//! extent lists (format-spec/10-trees.md) so callers see whole listings.

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::PackKind;
use crate::format::tree::{self, Content, Entry, Extent, TreeBlob};
use crate::id::ChunkId;

/// Stores a directory's entries (sorted by name) and returns the id of its
/// tree blob (a plain directory, or a large directory of parts).
///
/// # Errors
/// Chunk store errors.
pub fn store_directory(store: &ChunkStore<'_>, mut entries: Vec<Entry>) -> Result<ChunkId> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut parts = tree::plan_directory(entries);
    if parts.len() == 1 {
        let blob = TreeBlob::Directory(parts.pop().expect("one part"));
        return store.put_blob(PackKind::Tree, &blob.encode());
    }
    let ids = parts
        .into_iter()
        .map(|p| store.put_blob(PackKind::Tree, &TreeBlob::Directory(p).encode()))
        .collect::<Result<Vec<_>>>()?;
    store.put_blob(PackKind::Tree, &TreeBlob::LargeDirectory(ids).encode())
}

/// Turns a file's extents into its content, storing extent lists when the
/// file has too many extents to hold inline.
///
/// # Errors
/// Chunk store errors.
pub fn store_content(store: &ChunkStore<'_>, extents: Vec<Extent>) -> Result<Content> {
    match tree::plan_content(extents) {
        Ok(inline) => Ok(Content::Inline(inline)),
        Err(lists) => lists
            .into_iter()
            .map(|l| store.put_blob(PackKind::Tree, &TreeBlob::ExtentList(l).encode()))
            .collect::<Result<Vec<_>>>()
            .map(Content::Indirect),
    }
}

/// Builds a file's content from its extents as they come, storing each
/// full extent-list blob as soon as the content is known to be too long
/// to be inline, so that a huge file or disk image holds at most
/// [`tree::LIST_EXTENTS`] extents (and the ids of the lists) at a time.
/// The result is what [`store_content`] makes of the same extents.
pub struct ContentBuilder<'s, 'r> {
    store: &'s ChunkStore<'r>,
    pending: Vec<Extent>,
    lists: Vec<ChunkId>,
    size: u64,
}

impl<'s, 'r> ContentBuilder<'s, 'r> {
    pub fn new(store: &'s ChunkStore<'r>) -> Self {
        Self {
            store,
            pending: Vec::new(),
            lists: Vec::new(),
            size: 0,
        }
    }

    /// The next extent of the file.
    ///
    /// # Errors
    /// Storing a full extent list.
    pub fn push(&mut self, extent: Extent) -> Result<()> {
        self.size += extent.len();
        self.pending.push(extent);
        let indirect = !self.lists.is_empty() || self.pending.len() > tree::INLINE_MAX_EXTENTS;
        if indirect && self.pending.len() > tree::LIST_EXTENTS {
            let rest = self.pending.split_off(tree::LIST_EXTENTS);
            let full = std::mem::replace(&mut self.pending, rest);
            self.store_list(full)?;
        }
        Ok(())
    }

    /// The bytes the extents so far add up to.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn store_list(&mut self, extents: Vec<Extent>) -> Result<()> {
        let blob = TreeBlob::ExtentList(extents).encode();
        self.lists.push(self.store.put_blob(PackKind::Tree, &blob)?);
        Ok(())
    }

    /// The content: inline, or the extent lists.
    ///
    /// # Errors
    /// Storing the last extent lists.
    pub fn finish(mut self) -> Result<Content> {
        if self.lists.is_empty() && self.pending.len() <= tree::INLINE_MAX_EXTENTS {
            return Ok(Content::Inline(self.pending));
        }
        let pending = std::mem::take(&mut self.pending);
        for part in pending.chunks(tree::LIST_EXTENTS) {
            self.store_list(part.to_vec())?;
        }
        Ok(Content::Indirect(self.lists))
    }
}

fn load_blob(store: &ChunkStore<'_>, id: &ChunkId) -> Result<TreeBlob> {
    TreeBlob::decode(&store.get(id)?).map_err(|e| e.context(format!("tree {id}")))
}

/// Where a walk reads tree blobs from: the chunk store, or a reader of its
/// own (prune's marking also finds blobs in packs no index file names).
/// `&self`, so a visitor may hold the same source.
pub trait TreeSource {
    /// The tree blob `id`, authenticated and decoded.
    ///
    /// # Errors
    /// Missing or damaged blobs.
    fn tree_blob(&self, id: &ChunkId) -> Result<TreeBlob>;
}

impl TreeSource for ChunkStore<'_> {
    fn tree_blob(&self, id: &ChunkId) -> Result<TreeBlob> {
        load_blob(self, id)
    }
}

/// A directory's entries in name order, with the part blobs a large
/// directory was read from (empty for a plain one).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub entries: Vec<Entry>,
    pub parts: Vec<ChunkId>,
}

/// Reads a directory's entries, in name order, whichever form it has.
///
/// # Errors
/// Missing or damaged blobs, or parts that are not the canonical split.
pub fn load_directory(store: &ChunkStore<'_>, id: &ChunkId) -> Result<Vec<Entry>> {
    read_directory(store, id).map(|l| l.entries)
}

/// [`load_directory`] from any [`TreeSource`], with the parts it read.
///
/// # Errors
/// Missing or damaged blobs, or parts that are not the canonical split.
pub fn read_directory<S: TreeSource + ?Sized>(source: &S, id: &ChunkId) -> Result<Directory> {
    match source.tree_blob(id)? {
        TreeBlob::Directory(entries) => Ok(Directory {
            entries,
            parts: Vec::new(),
        }),
        TreeBlob::LargeDirectory(part_ids) => {
            let mut parts = Vec::with_capacity(part_ids.len());
            for part in &part_ids {
                match source.tree_blob(part)? {
                    TreeBlob::Directory(entries) => parts.push(entries),
                    _ => {
                        return Err(Error::corrupt(format!(
                            "tree {part} is not a directory part"
                        )));
                    }
                }
            }
            tree::check_parts(&parts).map_err(|e| e.context(format!("tree {id}")))?;
            Ok(Directory {
                entries: parts.concat(),
                parts: part_ids,
            })
        }
        TreeBlob::ExtentList(_) => Err(Error::corrupt(format!(
            "tree {id} is an extent list, not a directory"
        ))),
    }
}

/// A file's extents, whichever form its content has. Holds them all: a
/// reader of files of any size uses [`extent_lists`].
///
/// # Errors
/// Missing or damaged lists, or lists that are not the canonical split.
pub fn load_extents(store: &ChunkStore<'_>, content: &Content, size: u64) -> Result<Vec<Extent>> {
    let lists = extent_lists(store, content, size).collect::<Result<Vec<_>>>()?;
    Ok(lists.concat())
}

/// A file's extents one extent list at a time (an inline content is one
/// list), so that memory holds at most [`tree::LIST_EXTENTS`] extents
/// whatever the file's size (format-spec/10). Each list is checked against
/// the canonical split as it comes; the count and the size are checked
/// after the last, so the last item is an error if the lists together are
/// not the file's content. A reader that acts on each list as it comes (a
/// restore writing it) learns that after acting, as it learns of a damaged
/// chunk halfway through a file.
pub fn extent_lists<'a, 's>(
    store: &'a ChunkStore<'s>,
    content: &'a Content,
    size: u64,
) -> ExtentLists<'a, 's> {
    match content {
        Content::Inline(extents) => ExtentLists {
            store,
            inline: Some(extents),
            ids: &[],
            next: 0,
            check: None,
        },
        Content::Indirect(ids) => ExtentLists {
            store,
            inline: None,
            ids,
            next: 0,
            check: Some(tree::ListCheck::new(ids.len(), size)),
        },
    }
}

/// The iterator of [`extent_lists`].
pub struct ExtentLists<'a, 's> {
    store: &'a ChunkStore<'s>,
    inline: Option<&'a Vec<Extent>>,
    ids: &'a [ChunkId],
    next: usize,
    /// `None` once the lists are done (or failed).
    check: Option<tree::ListCheck>,
}

impl ExtentLists<'_, '_> {
    fn load(&mut self, id: ChunkId) -> Result<Vec<Extent>> {
        let TreeBlob::ExtentList(list) = load_blob(self.store, &id)? else {
            return Err(Error::corrupt(format!("tree {id} is not an extent list")));
        };
        if let Some(check) = &mut self.check {
            check
                .list(&list)
                .map_err(|e| e.context(format!("tree {id}")))?;
        }
        Ok(list)
    }
}

impl Iterator for ExtentLists<'_, '_> {
    type Item = Result<Vec<Extent>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(inline) = self.inline.take() {
            return Some(Ok(inline.clone()));
        }
        self.check.as_ref()?;
        let Some(&id) = self.ids.get(self.next) else {
            let check = self.check.take()?;
            return check.finish().err().map(Err);
        };
        self.next += 1;
        let list = self.load(id);
        if list.is_err() {
            self.check = None;
        }
        Some(list)
    }
}

/// The ids of the data chunks among `extents`, in order (holes have none).
pub fn data_ids(extents: &[Extent]) -> Vec<ChunkId> {
    extents
        .iter()
        .filter_map(|e| match e {
            Extent::Data { id, .. } => Some(*id),
            Extent::Hole { .. } => None,
        })
        .collect()
}

/// Whether every blob of a file's content (its extent lists and data
/// chunks) is indexed in a pack `store` trusts, or already accepted by it.
/// A backup reuses a parent's content only then, so a snapshot never refers
/// to data that is lost (a missing pack, one a check found damaged, or one
/// `repair index` dropped): the file is read and stored again.
///
/// # Errors
/// Cache I/O errors; extent lists that cannot be read count as not stored.
pub fn content_is_stored(store: &ChunkStore<'_>, content: &Content, size: u64) -> Result<bool> {
    if let Content::Indirect(lists) = content
        && !store.all_stored(lists)?
    {
        return Ok(false);
    }
    for list in extent_lists(store, content, size) {
        let list = match list {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if !store.all_stored(&data_ids(&list))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The entry at path `comps` (names from the root) below the directory
/// tree `root`, if there is one.
///
/// # Errors
/// Missing or damaged tree blobs.
pub fn lookup(store: &ChunkStore<'_>, root: ChunkId, comps: &[Vec<u8>]) -> Result<Option<Entry>> {
    let mut dir = root;
    for (i, name) in comps.iter().enumerate() {
        let Some(e) = load_directory(store, &dir)?
            .into_iter()
            .find(|e| &e.name == name)
        else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(e));
        }
        let crate::format::tree::Payload::Dir(id) = e.payload else {
            return Ok(None);
        };
        dir = id;
    }
    Ok(None)
}

/// Writes a file's content to `out`, holes as zeros; returns the bytes
/// written. Every chunk is authenticated before it is written.
///
/// # Errors
/// Missing or damaged blobs; `out`'s error (a broken pipe included).
pub fn write_content(
    store: &ChunkStore<'_>,
    content: &Content,
    size: u64,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let mut written = 0u64;
    for list in extent_lists(store, content, size) {
        for e in list? {
            write_extent(store, e, out)?;
            written += e.len();
        }
    }
    Ok(written)
}

fn write_extent(store: &ChunkStore<'_>, e: Extent, out: &mut dyn std::io::Write) -> Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let write_err = |e| Error::io("writing the output", e);
    match e {
        Extent::Data { id, .. } => {
            let data = store.get(&id)?;
            out.write_all(&data).map_err(write_err)?;
        }
        Extent::Hole { len } => {
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left.min(ZEROS.len() as u64)).unwrap_or(ZEROS.len());
                out.write_all(&ZEROS[..n]).map_err(write_err)?;
                left -= n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::ChunkStoreOptions;
    use crate::chunkstore::index::ChunkIndex;

    /// Extents that alternate data and holes, as a sparse file gives them.
    fn extents(n: usize) -> Vec<Extent> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    Extent::Data {
                        id: ChunkId(id),
                        len: 100,
                    }
                } else {
                    Extent::Hole { len: 7 }
                }
            })
            .collect()
    }

    #[test]
    fn the_builder_makes_what_store_content_makes() {
        let repo = crate::repository::in_memory_for_tests();
        let index = ChunkIndex::open(None).unwrap();
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        let (inline, list) = (tree::INLINE_MAX_EXTENTS, tree::LIST_EXTENTS);
        for n in [
            0,
            1,
            inline,
            inline + 1,
            list,
            list + 1,
            2 * list + inline + 3,
        ] {
            let want = store_content(&store, extents(n)).unwrap();
            let mut builder = ContentBuilder::new(&store);
            for e in extents(n) {
                builder.push(e).unwrap();
            }
            let size = builder.size();
            assert_eq!(builder.finish().unwrap(), want, "{n} extents");
            assert_eq!(size, extents(n).iter().map(Extent::len).sum::<u64>());
        }
    }

    #[test]
    fn extent_lists_come_one_at_a_time_and_are_checked() {
        let repo = crate::repository::in_memory_for_tests();
        let index = ChunkIndex::open(None).unwrap();
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        let all = extents(2 * tree::LIST_EXTENTS + 5);
        let size: u64 = all.iter().map(Extent::len).sum();
        let content = store_content(&store, all.clone()).unwrap();
        let lists: Vec<Vec<Extent>> = extent_lists(&store, &content, size)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(lists.len(), 3);
        assert!(lists.iter().all(|l| l.len() <= tree::LIST_EXTENTS));
        assert_eq!(lists.concat(), all);

        // The wrong size fails after the last list; lists out of order
        // fail at the first one that is not full.
        let last = extent_lists(&store, &content, size + 1).last().unwrap();
        assert!(last.is_err());
        let Content::Indirect(ids) = &content else {
            panic!("indirect")
        };
        let swapped = Content::Indirect(vec![ids[2], ids[0], ids[1]]);
        let got: Vec<_> = extent_lists(&store, &swapped, size).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
        let dir = store_directory(&store, Vec::new()).unwrap();
        let wrong = Content::Indirect(vec![ids[0], dir]);
        assert!(extent_lists(&store, &wrong, size).any(|l| l.is_err()));
        assert!(load_extents(&store, &wrong, size).is_err());
    }
}
