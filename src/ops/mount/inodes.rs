//! Operations layer, `mount`: the inode table and name lookup over the
//! catalog and the snapshots' trees. Owns inode numbering: a node is known
//! by its parent, its name and what it shows (a snapshot, a link target),
//! so a name whose meaning changes (`latest`, `by-date/<today>`) gets a new
//! inode and the kernel never mixes the old with the new; numbers are
//! never reused during a mount. Files stored as hard links of each other
//! (the same device and inode, `nlink` above 1) share one inode within a
//! snapshot's directory, as they did on the source. A tree directory's listing is read once
//! (trees never change) and kept with its node.
//!
//! The table stays as large as what the kernel holds, not as what was
//! ever browsed: each lookup the kernel is answered is counted (in the
//! same lock as finding or making the node, so a concurrent forget cannot
//! slip between), and a node whose count the kernel's `forget` brings to
//! zero is dropped, with the nodes a listing of it made that the kernel
//! never looked up. The kernel forgets a directory only after everything
//! below it, so a live node's parent is live. Looking a dropped name up
//! again makes a new node with a new number.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use super::MountOptions;
use super::catalog::{Catalog, Child, Dir, snapshot_dir_name};
use super::content::ChunkCache;
use super::lock;
use crate::chunkstore::ChunkStore;
use crate::chunkstore::index::ChunkIndex;
use crate::error::Result;
use crate::format::tree::{Entry, Metadata, Payload};
use crate::id::ChunkId;
use crate::repository::Repository;
use crate::repository::snapshots::list;
use crate::snapshot::tree::load_directory;

pub const ROOT: u64 = 1;

/// One name in a directory listing: its inode, node and name.
pub type Listed = (u64, Arc<Node>, Vec<u8>);

/// What an inode shows.
#[derive(Debug)]
pub enum NodeKind {
    /// A directory above the snapshots.
    Virtual(Dir),
    /// `latest`.
    Link(Vec<u8>),
    /// An entry of a snapshot's tree, or a snapshot's root (a directory
    /// entry made up for it, dated by the snapshot).
    Tree(Entry),
}

/// One inode.
#[derive(Debug)]
pub struct Node {
    pub parent: u64,
    pub name: Vec<u8>,
    /// The inode of the snapshot root this node is in (0 above them).
    snapshot: u64,
    pub kind: NodeKind,
    /// A tree directory's entries, once read.
    listing: OnceLock<Arc<Vec<Entry>>>,
}

/// Everything a request may need: the repository, the store, the catalog,
/// the inode table and the chunk cache.
pub struct View<'s> {
    pub repo: &'s Repository,
    pub index: &'s ChunkIndex,
    pub store: &'s ChunkStore<'s>,
    pub options: MountOptions,
    pub chunks: ChunkCache,
    catalog: Mutex<Arc<Catalog>>,
    table: Mutex<Table>,
    pub open_files: super::content::OpenFiles,
    /// Where readahead sends chunk lists; `None` once the mount ended.
    pub prefetch: Mutex<Option<mpsc::Sender<Vec<ChunkId>>>>,
}

/// What makes a node: its parent (or snapshot, for hard links), its name
/// and what it shows.
type Key = (u64, Vec<u8>, Vec<u8>);

/// The live nodes.
struct Table {
    nodes: HashMap<u64, Arc<Node>>,
    by_key: HashMap<Key, u64>,
    keys: HashMap<u64, Key>,
    /// Lookups answered and not yet forgotten; absent is zero.
    lookups: HashMap<u64, u64>,
    /// The nodes made below each node (by its listing or lookups).
    made_below: HashMap<u64, HashSet<u64>>,
    /// The next inode number (never reused).
    next: u64,
}

impl Table {
    /// A table holding only the mount's root directory.
    fn new() -> Self {
        let root = Arc::new(Node {
            parent: ROOT,
            name: Vec::new(),
            snapshot: 0,
            kind: NodeKind::Virtual(Dir::Root),
            listing: OnceLock::new(),
        });
        Self {
            nodes: HashMap::from([(ROOT, root)]),
            by_key: HashMap::new(),
            keys: HashMap::new(),
            lookups: HashMap::new(),
            made_below: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// Takes `n` lookups of `ino` back; at zero, drops it and the nodes
    /// made below it that the kernel holds no lookup of.
    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let left = self.lookups.get(&ino).map_or(0, |c| c.saturating_sub(n));
        if left > 0 {
            self.lookups.insert(ino, left);
            return;
        }
        self.lookups.remove(&ino);
        let mut dropping = vec![ino];
        while let Some(ino) = dropping.pop() {
            if let Some(node) = self.nodes.remove(&ino)
                && let Some(siblings) = self.made_below.get_mut(&node.parent)
            {
                siblings.remove(&ino);
            }
            if let Some(key) = self.keys.remove(&ino) {
                self.by_key.remove(&key);
            }
            let below = self.made_below.remove(&ino).unwrap_or_default();
            dropping.extend(below.into_iter().filter(|c| !self.lookups.contains_key(c)));
        }
    }
}

impl<'s> View<'s> {
    /// A view with the snapshot list read now.
    ///
    /// # Errors
    /// A failed snapshot listing.
    pub fn new(
        repo: &'s Repository,
        index: &'s ChunkIndex,
        store: &'s ChunkStore<'s>,
        options: &MountOptions,
    ) -> Result<Self> {
        let catalog = Catalog::new(list(repo)?, &options.filter);
        Ok(Self {
            repo,
            index,
            store,
            options: options.clone(),
            chunks: ChunkCache::new(options.cache_bytes),
            catalog: Mutex::new(Arc::new(catalog)),
            table: Mutex::new(Table::new()),
            open_files: super::content::OpenFiles::default(),
            prefetch: Mutex::new(None),
        })
    }

    /// The node of inode `ino`.
    pub fn node(&self, ino: u64) -> Option<Arc<Node>> {
        lock(&self.table).nodes.get(&ino).cloned()
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = lock(&self.table);
        t.forget(ino, n);
        tracing::debug!(
            "forgot {n} lookups of inode {ino}; {} nodes live",
            t.nodes.len()
        );
    }

    /// The path of inode `ino` below the mount point, for messages.
    pub fn path(&self, mut ino: u64) -> String {
        let mut names = Vec::new();
        while let Some(node) = self.node(ino).filter(|_| ino != ROOT) {
            names.push(String::from_utf8_lossy(&node.name).into_owned());
            ino = node.parent;
        }
        names.reverse();
        names.join("/")
    }

    /// The catalog; read again first if `fresh` and it is older than the
    /// refresh interval. A failed reading keeps the old one (warned).
    pub fn catalog(&self, fresh: bool) -> Arc<Catalog> {
        let current = Arc::clone(&lock(&self.catalog));
        if !fresh || current.read_at.elapsed() < self.options.refresh {
            return current;
        }
        let read = self
            .index
            .sync(self.repo)
            .and_then(|_| list(self.repo))
            .map(|l| Catalog::new(l, &self.options.filter));
        match read {
            Ok(c) => {
                let c = Arc::new(c);
                *lock(&self.catalog) = Arc::clone(&c);
                c
            }
            Err(e) => {
                tracing::warn!("snapshot list not refreshed: {e}");
                current
            }
        }
    }

    /// The entries of directory `ino` with their inodes, `.` and `..`
    /// first; `None` if it is not a directory.
    ///
    /// # Errors
    /// Missing or damaged tree blobs.
    pub fn list(&self, ino: u64) -> Result<Option<Vec<Listed>>> {
        let Some(node) = self.node(ino) else {
            return Ok(None);
        };
        let mut out = vec![
            (ino, Arc::clone(&node), b".".to_vec()),
            (
                node.parent,
                self.node(node.parent).unwrap_or_else(|| Arc::clone(&node)),
                b"..".to_vec(),
            ),
        ];
        match &node.kind {
            NodeKind::Virtual(dir) => {
                for (name, child) in self.catalog(true).list(dir) {
                    let (child_ino, n) = self.intern_child(ino, name.as_bytes(), child, false);
                    out.push((child_ino, n, name.into_bytes()));
                }
            }
            NodeKind::Tree(Entry {
                payload: Payload::Dir(_),
                ..
            }) => {
                for e in self.tree_listing(&node)?.iter() {
                    let (child_ino, n) = self.intern_entry(ino, &node, e, false);
                    out.push((child_ino, n, e.name.clone()));
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(out))
    }

    /// The entry `name` in directory `parent`, counted as a lookup the
    /// kernel holds until it forgets it.
    ///
    /// # Errors
    /// Missing or damaged tree blobs.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Arc<Node>)>> {
        let Some(node) = self.node(parent) else {
            return Ok(None);
        };
        match &node.kind {
            NodeKind::Virtual(dir) => {
                let Ok(text) = std::str::from_utf8(name) else {
                    return Ok(None);
                };
                let found = self.catalog(false).find(dir, text);
                let found = match found {
                    Some(c) => Some(c),
                    None => self.catalog(true).find(dir, text),
                };
                Ok(found.map(|child| self.intern_child(parent, name, child, true)))
            }
            NodeKind::Tree(Entry {
                payload: Payload::Dir(_),
                ..
            }) => Ok(self
                .tree_listing(&node)?
                .iter()
                .find(|e| e.name == name)
                .map(|e| self.intern_entry(parent, &node, e, true))),
            _ => Ok(None),
        }
    }

    /// The entries of a tree directory node, read once.
    fn tree_listing(&self, node: &Node) -> Result<Arc<Vec<Entry>>> {
        if let Some(l) = node.listing.get() {
            return Ok(Arc::clone(l));
        }
        let NodeKind::Tree(Entry {
            payload: Payload::Dir(id),
            ..
        }) = &node.kind
        else {
            return Ok(Arc::default());
        };
        let entries = Arc::new(load_directory(self.store, id)?);
        Ok(Arc::clone(node.listing.get_or_init(|| entries)))
    }

    fn intern_child(
        &self,
        parent: u64,
        name: &[u8],
        child: Child,
        counted: bool,
    ) -> (u64, Arc<Node>) {
        let key = |shows: &[u8]| (parent, name.to_vec(), shows.to_vec());
        let (key, kind) = match child {
            Child::Dir(d) => (key(&[]), NodeKind::Virtual(d)),
            Child::Link(target) => (key(&target), NodeKind::Link(target)),
            Child::Snapshot { id, tree, time } => {
                let root = snapshot_root(snapshot_dir_name(&id, time), tree, time);
                (key(id.as_bytes()), NodeKind::Tree(root))
            }
        };
        self.intern(key, parent, name, None, counted, || kind)
    }

    /// The inode of entry `e` of tree directory `parent`; hard-linked
    /// files of one snapshot share one.
    fn intern_entry(
        &self,
        parent: u64,
        parent_node: &Node,
        e: &Entry,
        counted: bool,
    ) -> (u64, Arc<Node>) {
        let snapshot = parent_node.snapshot;
        let key = if matches!(e.payload, Payload::File(_)) && e.meta.nlink > 1 {
            let link = [e.meta.dev.to_le_bytes(), e.meta.ino.to_le_bytes()].concat();
            (snapshot, b"\0hard link".to_vec(), link)
        } else {
            (parent, e.name.clone(), Vec::new())
        };
        self.intern(key, parent, &e.name, Some(snapshot), counted, || {
            NodeKind::Tree(e.clone())
        })
    }

    /// The inode known by `key`, made with `kind` if new; `snapshot` is
    /// the root it is below (`None`: it is a root itself, or above them).
    /// A `counted` call is a lookup the kernel will be answered.
    fn intern(
        &self,
        key: Key,
        parent: u64,
        name: &[u8],
        snapshot: Option<u64>,
        counted: bool,
        kind: impl FnOnce() -> NodeKind,
    ) -> (u64, Arc<Node>) {
        let mut t = lock(&self.table);
        let known = t.by_key.get(&key).copied();
        let (ino, node) = match known {
            Some(ino) => (ino, Arc::clone(&t.nodes[&ino])),
            None => t.make(key, parent, name, snapshot, kind()),
        };
        if counted {
            *t.lookups.entry(ino).or_default() += 1;
        }
        (ino, node)
    }
}

impl Table {
    /// A new node for `key`, with the next number.
    fn make(
        &mut self,
        key: Key,
        parent: u64,
        name: &[u8],
        snapshot: Option<u64>,
        kind: NodeKind,
    ) -> (u64, Arc<Node>) {
        let own = self.next;
        self.next += 1;
        let root = matches!(kind, NodeKind::Tree(_)).then_some(own);
        let node = Arc::new(Node {
            parent,
            name: name.to_vec(),
            snapshot: snapshot.or(root).unwrap_or(0),
            kind,
            listing: OnceLock::new(),
        });
        self.nodes.insert(own, Arc::clone(&node));
        self.keys.insert(own, key.clone());
        self.by_key.insert(key, own);
        self.made_below.entry(parent).or_default().insert(own);
        (own, node)
    }
}

/// The directory entry a snapshot's root is shown as.
fn snapshot_root(name: String, tree: ChunkId, time: i64) -> Entry {
    let secs = (
        time.div_euclid(1_000_000_000),
        time.rem_euclid(1_000_000_000) as u32,
    );
    Entry {
        name: name.into_bytes(),
        meta: Metadata {
            mode: 0o555,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mtime: secs,
            ctime: secs,
            nlink: 2,
            ..Metadata::default()
        },
        payload: Payload::Dir(tree),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node made under `parent` (`counted` lookups of it answered).
    fn made(t: &mut Table, parent: u64, name: &[u8], counted: u64) -> u64 {
        let key = (parent, name.to_vec(), Vec::new());
        let (ino, _) = t.make(key, parent, name, None, NodeKind::Link(b"x".to_vec()));
        if counted > 0 {
            t.lookups.insert(ino, counted);
        }
        ino
    }

    #[test]
    fn a_forgotten_node_goes_with_what_only_its_listing_made() {
        let mut t = Table::new();
        let dir = made(&mut t, ROOT, b"d", 2);
        let listed = made(&mut t, dir, b"only-listed", 0);
        let held = made(&mut t, dir, b"held", 1);
        let below_listed = made(&mut t, listed, b"deeper", 0);
        t.forget(dir, 1);
        assert!(t.nodes.contains_key(&dir), "one lookup is still held");
        t.forget(dir, 1);
        for gone in [dir, listed, below_listed] {
            assert!(!t.nodes.contains_key(&gone), "{gone}");
            assert!(!t.keys.contains_key(&gone), "{gone}");
        }
        assert!(t.nodes.contains_key(&held), "the kernel still holds it");
        assert_eq!(t.by_key.len(), 1);
        t.forget(held, 1);
        assert_eq!(t.nodes.len(), 1, "only the root is left");
        assert!(t.by_key.is_empty() && t.lookups.is_empty());
        assert!(t.made_below.values().all(HashSet::is_empty));
        // Made again, a name gets a new number.
        assert!(made(&mut t, ROOT, b"d", 1) > below_listed);
        t.forget(ROOT, 5);
        assert!(t.nodes.contains_key(&ROOT), "the root is never forgotten");
    }
}
