//! `diff`: what changed between two snapshots. Both root trees are walked
//! together in name order. Trees are content-addressed, so a subtree with
//! the same tree id on both sides is identical and is skipped without being
//! loaded: the cost follows the size of the change, not of the snapshots.
//!
//! Two trees side by side do not fit one visitor, so diff keeps its own
//! stack of paired directories (innermost last, no recursion), reads them
//! with `tree::load_directory` and pairs their listings with
//! `walk::merge_listings`; what is below a directory only one side has is
//! walked with `walk::TreeWalk`, in the same order as every other walk.

use std::collections::HashMap;

use crate::chunkstore::ChunkStore;
use crate::error::Result;
use crate::format::tree::{Content, Entry, Extent, Metadata, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree;
use crate::snapshot::walk::{
    MergedListings, Paired, TreeWalk, Visit, Visitor, child_path, merge_listings,
};

/// How a path differs between the old and the new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Only in the new snapshot.
    Added,
    /// Only in the old snapshot.
    Removed,
    /// A file whose content differs (its metadata may differ too).
    Content,
    /// Same type and content; mode, owner, mtime, xattrs, symlink target
    /// or device number differ.
    Metadata,
    /// Another type of entry (a file became a symlink, ...). What was below
    /// a directory on either side is listed as removed or added.
    Type,
}

impl ChangeKind {
    /// The marker of the text output.
    pub fn marker(self) -> char {
        match self {
            Self::Added => '+',
            Self::Removed => '-',
            Self::Content => 'M',
            Self::Metadata => 'U',
            Self::Type => 'T',
        }
    }

    /// A stable lower-case name, as JSON output uses it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Content => "content",
            Self::Metadata => "metadata",
            Self::Type => "type",
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute path in the snapshots, `/`-separated bytes.
    pub path: Vec<u8>,
    pub kind: ChangeKind,
}

/// `{"path", "path_hex" (only for a name that is not UTF-8), "change":
/// the kind's name, "marker"}`.
impl serde::Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Change", 4)?;
        super::serialize_entry_path(&mut out, &self.path)?;
        out.serialize_field("change", self.kind.name())?;
        out.serialize_field("marker", &self.kind.marker())?;
        out.end()
    }
}

/// What differs between two snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffReport {
    /// In name order, a directory before what is below it.
    pub changes: Vec<Change>,
    pub added: u64,
    pub removed: u64,
    /// Files whose content changed.
    pub changed: u64,
    pub metadata_only: u64,
    pub type_changed: u64,
    /// File data (holes not counted) of added files, and of changed files
    /// in chunks the old version of that file does not have.
    pub bytes_added: u64,
    /// The same for removed files and the old version of changed files.
    pub bytes_removed: u64,
}

/// Compares the root trees `old` and `new` of two snapshots.
///
/// # Errors
/// Missing or damaged tree blobs of the parts that differ.
pub fn diff(store: &ChunkStore<'_>, old: &ChunkId, new: &ChunkId) -> Result<DiffReport> {
    let mut d = Differ {
        store,
        report: DiffReport::default(),
    };
    d.run(old, new)?;
    Ok(d.report)
}

/// Whether two entries of the same type and content carry the same
/// metadata. ctime, device, inode and link count are left out: they change
/// when a file is merely copied, restored or linked elsewhere.
fn same_metadata(a: &Metadata, b: &Metadata) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.user == b.user
        && a.group == b.group
        && a.mtime == b.mtime
        && a.size == b.size
        && a.xattrs == b.xattrs
}

/// The distinct data chunks of a file, with their lengths.
type Chunks = HashMap<ChunkId, u64>;

fn bytes_not_in(a: &Chunks, b: &Chunks) -> u64 {
    a.iter()
        .filter(|(id, _)| !b.contains_key(id))
        .map(|(_, len)| len)
        .sum()
}

struct Differ<'s, 'r> {
    store: &'s ChunkStore<'r>,
    report: DiffReport,
}

impl Differ<'_, '_> {
    fn push(&mut self, path: Vec<u8>, kind: ChangeKind) {
        let r = &mut self.report;
        match kind {
            ChangeKind::Added => r.added += 1,
            ChangeKind::Removed => r.removed += 1,
            ChangeKind::Content => r.changed += 1,
            ChangeKind::Metadata => r.metadata_only += 1,
            ChangeKind::Type => r.type_changed += 1,
        }
        r.changes.push(Change { path, kind });
    }

    /// The distinct data chunks of a file, read one extent list at a
    /// time (the set itself grows with the file: 40 bytes a chunk).
    fn chunks(&self, content: &Content, size: u64) -> Result<Chunks> {
        let mut out = Chunks::new();
        for list in tree::extent_lists(self.store, content, size) {
            out.extend(list?.into_iter().filter_map(|e| match e {
                Extent::Data { id, len } => Some((id, u64::from(len))),
                Extent::Hole { .. } => None,
            }));
        }
        Ok(out)
    }

    /// Compares the paired directories from the roots down, a stack of
    /// them open (innermost last) instead of recursion.
    fn run(&mut self, old: &ChunkId, new: &ChunkId) -> Result<()> {
        let mut open = Vec::new();
        self.open(&mut open, old, new, Vec::new())?;
        while let Some(top) = open.last_mut() {
            let Some(pair) = top.pairs.next() else {
                open.pop();
                continue;
            };
            let dir = &top.path;
            match pair {
                Paired::Old(e) => {
                    self.one_side(&e, child_path(dir, &e.name), ChangeKind::Removed)?;
                }
                Paired::New(e) => {
                    self.one_side(&e, child_path(dir, &e.name), ChangeKind::Added)?;
                }
                Paired::Both(x, y) => {
                    let path = child_path(dir, &x.name);
                    if let Some((a, b)) = self.pair(&x, &y, path.clone())? {
                        self.open(&mut open, &a, &b, path)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens two directories at `path` for comparing, unless they are the
    /// same tree.
    fn open(
        &self,
        open: &mut Vec<Paths>,
        old: &ChunkId,
        new: &ChunkId,
        path: Vec<u8>,
    ) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let old = tree::load_directory(self.store, old)?;
        let new = tree::load_directory(self.store, new)?;
        open.push(Paths {
            pairs: merge_listings(old, new),
            path,
        });
        Ok(())
    }

    /// An entry only one side has (`kind` is `Added` or `Removed`).
    fn one_side(&mut self, e: &Entry, path: Vec<u8>, kind: ChangeKind) -> Result<()> {
        self.push(path.clone(), kind);
        self.below(e, path, kind)
    }

    /// Counts a one-sided entry's data and lists what is below it.
    fn below(&mut self, e: &Entry, path: Vec<u8>, kind: ChangeKind) -> Result<()> {
        match &e.payload {
            Payload::File(content) => self.count(content, e.meta.size, kind),
            Payload::Dir(id) => {
                let mut w = TreeWalk::new(self.store);
                w.start_tree(*id, path);
                w.run(&mut OneSide { differ: self, kind })
            }
            _ => Ok(()),
        }
    }

    /// Counts the data of a file only one side has.
    fn count(&mut self, content: &Content, size: u64, kind: ChangeKind) -> Result<()> {
        let bytes: u64 = self.chunks(content, size)?.values().sum();
        if kind == ChangeKind::Added {
            self.report.bytes_added += bytes;
        } else {
            self.report.bytes_removed += bytes;
        }
        Ok(())
    }

    /// Two entries of the same name; the directories to compare next if
    /// both are directories.
    fn pair(&mut self, a: &Entry, b: &Entry, path: Vec<u8>) -> Result<Option<(ChunkId, ChunkId)>> {
        match (&a.payload, &b.payload) {
            (Payload::Dir(x), Payload::Dir(y)) => {
                if !same_metadata(&a.meta, &b.meta) {
                    self.push(path, ChangeKind::Metadata);
                }
                return Ok(Some((*x, *y)));
            }
            (Payload::File(x), Payload::File(y)) if x != y => {
                let old = self.chunks(x, a.meta.size)?;
                let new = self.chunks(y, b.meta.size)?;
                self.report.bytes_added += bytes_not_in(&new, &old);
                self.report.bytes_removed += bytes_not_in(&old, &new);
                self.push(path, ChangeKind::Content);
            }
            (x, y) if x.entry_type() == y.entry_type() => {
                if x != y || !same_metadata(&a.meta, &b.meta) {
                    self.push(path, ChangeKind::Metadata);
                }
            }
            _ => {
                self.push(path.clone(), ChangeKind::Type);
                self.below(a, path.clone(), ChangeKind::Removed)?;
                self.below(b, path, ChangeKind::Added)?;
            }
        }
        Ok(None)
    }
}

/// Two directories at `path` being compared.
struct Paths {
    pairs: MergedListings,
    path: Vec<u8>,
}

/// What is below a directory only one side has, every entry `kind`.
struct OneSide<'d, 's, 'r> {
    differ: &'d mut Differ<'s, 'r>,
    kind: ChangeKind,
}

impl Visitor for OneSide<'_, '_, '_> {
    fn entry(&mut self, path: &[u8], e: &Entry) -> Result<Visit> {
        self.differ.push(path.to_vec(), self.kind);
        if let Payload::File(content) = &e.payload {
            self.differ.count(content, e.meta.size, self.kind)?;
        }
        Ok(Visit::Descend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Xattr;

    #[test]
    fn metadata_comparison_ignores_what_copies_change() {
        let a = Metadata {
            mode: 0o644,
            mtime: (5, 0),
            ..Metadata::default()
        };
        let copied = Metadata {
            ctime: (9, 9),
            dev: 3,
            ino: 4,
            nlink: 2,
            ..a.clone()
        };
        assert!(same_metadata(&a, &copied));
        for changed in [
            Metadata {
                mode: 0o600,
                ..a.clone()
            },
            Metadata {
                mtime: (5, 1),
                ..a.clone()
            },
            Metadata {
                user: b"www".to_vec(),
                ..a.clone()
            },
            Metadata {
                xattrs: vec![Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![],
                }],
                ..a.clone()
            },
        ] {
            assert!(!same_metadata(&a, &changed), "{changed:?}");
        }
    }
}
