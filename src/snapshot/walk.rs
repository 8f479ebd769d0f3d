//! Snapshot layer (4): the one tree walker. `ls`, `find`, `tar` and
//! `check` walk snapshot trees through it (and prune's marking can: see
//! [`TreeWalk::once_per_tree`]), as restic's `internal/walker` serves its
//! find, ls, stats and prune.
//!
//! It owns the order of a walk and the paths it hands out: a directory's
//! entries in the order they are stored (name order), each directory
//! followed by what is below it (depth first); paths are absolute,
//! `/`-separated raw bytes (`/a/b`; the snapshot root is the empty path).
//! Open directories are kept on an explicit stack, so a deep tree costs
//! heap, not Rust call stack.
//!
//! Two ways to drive it: [`TreeWalk::next_step`] pulls one [`Step`] at a
//! time (`ls` streams with it and stops when its reader goes away), and
//! [`TreeWalk::run`] hands the steps to a [`Visitor`]. A directory entry
//! is entered on the next step unless the caller skips it. A directory that
//! cannot be read is a step of its own, so the caller decides: stop with
//! the error (ls, find, tar) or record it and go on (check).
//!
//! `diff` walks two trees side by side, which one visitor cannot express:
//! the walker gives it [`merge_listings`] (two listings paired in name
//! order) and diff keeps its own stack of paired directories, reading them
//! with `tree::load_directory`; what only one side has below a path it
//! walks with [`TreeWalk`].

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::tree::{Entry, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree::{TreeSource, read_directory};

/// One thing a walk met.
#[derive(Debug)]
pub enum Step {
    /// An entry at `path`. If it is a directory, the next step enters it
    /// unless the walk is told to skip it.
    Entry { path: Vec<u8>, entry: Entry },
    /// Directory `tree` at `path` was read: its entries follow. `parts`
    /// are the blobs of a large directory (empty for a plain one).
    Enter {
        path: Vec<u8>,
        tree: ChunkId,
        parts: Vec<ChunkId>,
    },
    /// Every entry of directory `tree` at `path`, and what is below them,
    /// has been handed out.
    Leave { path: Vec<u8>, tree: ChunkId },
    /// Directory `tree` at `path` could not be read (missing or damaged
    /// blobs, I/O). The walk goes on after it if it is asked for more.
    Unreadable {
        path: Vec<u8>,
        tree: ChunkId,
        error: Error,
    },
}

/// Whether a visitor wants what is below a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    Descend,
    /// Leave the subtree out (the directory is neither read nor left).
    Skip,
}

/// What [`TreeWalk::run`] calls. Paths are those of [`Step`].
pub trait Visitor {
    /// An entry; for a directory, whether to walk into it (the answer
    /// does not matter for other entries).
    ///
    /// # Errors
    /// Whatever the visitor fails with; it stops the walk.
    fn entry(&mut self, path: &[u8], entry: &Entry) -> Result<Visit>;

    /// A directory was read; its entries follow.
    ///
    /// # Errors
    /// Whatever the visitor fails with; it stops the walk.
    fn enter_dir(&mut self, _path: &[u8], _tree: &ChunkId, _parts: &[ChunkId]) -> Result<()> {
        Ok(())
    }

    /// A directory's entries are done.
    ///
    /// # Errors
    /// Whatever the visitor fails with; it stops the walk.
    fn leave_dir(&mut self, _path: &[u8], _tree: &ChunkId) -> Result<()> {
        Ok(())
    }

    /// A directory could not be read. By default the walk stops with the
    /// error; `Ok` goes on with what follows the directory.
    ///
    /// # Errors
    /// `error`, or whatever the visitor makes of it.
    fn unreadable(&mut self, _path: &[u8], _tree: &ChunkId, error: Error) -> Result<()> {
        Err(error)
    }
}

/// A directory being walked.
struct Frame {
    path: Vec<u8>,
    /// `None` for the frame holding a single starting entry.
    tree: Option<ChunkId>,
    entries: std::vec::IntoIter<Entry>,
}

/// A walk over one or more trees read from `S`. A walk that failed (a
/// visitor's error) should be dropped, not continued.
pub struct TreeWalk<'s, S: TreeSource + ?Sized> {
    source: &'s S,
    stack: Vec<Frame>,
    /// The directory the next step enters: a root, or the directory entry
    /// just handed out.
    next_dir: Option<(ChunkId, Vec<u8>)>,
    /// Trees entered so far, when each is walked once.
    seen: Option<HashSet<ChunkId>>,
}

impl<'s, S: TreeSource + ?Sized> TreeWalk<'s, S> {
    /// A walk with nothing to walk yet: start it with [`Self::start_tree`]
    /// or [`Self::start_entry`].
    pub fn new(source: &'s S) -> Self {
        Self {
            source,
            stack: Vec::new(),
            next_dir: None,
            seen: None,
        }
    }

    /// Walks each tree id once, over every tree this walk is started on:
    /// a directory already entered is skipped (no `Enter`, entries or
    /// `Leave`) wherever it appears again. This is what marking every
    /// chunk reachable from many snapshots wants, since unchanged
    /// directories are shared between them.
    #[must_use]
    pub fn once_per_tree(mut self) -> Self {
        self.seen = Some(HashSet::new());
        self
    }

    /// The number of distinct trees entered (with [`Self::once_per_tree`]).
    pub fn trees_seen(&self) -> usize {
        self.seen.as_ref().map_or(0, HashSet::len)
    }

    /// Walks the directory tree `root` at `path` (empty for a snapshot's
    /// root): `Enter`, its entries at `path/name`, `Leave`. Meant for a
    /// walk that is done (or new); the trees seen are kept.
    pub fn start_tree(&mut self, root: ChunkId, path: Vec<u8>) {
        debug_assert!(self.stack.is_empty() && self.next_dir.is_none());
        self.next_dir = Some((root, path));
    }

    /// Walks one entry found in the directory at `parent` (so at
    /// `parent/name`), and what is below it if it is a directory.
    pub fn start_entry(&mut self, parent: Vec<u8>, entry: Entry) {
        debug_assert!(self.stack.is_empty() && self.next_dir.is_none());
        self.stack.push(Frame {
            path: parent,
            tree: None,
            entries: vec![entry].into_iter(),
        });
    }

    /// Leaves out what is below the directory entry just handed out.
    pub fn skip_subtree(&mut self) {
        self.next_dir = None;
    }

    /// The next step, or `None` when the walk is done.
    pub fn next_step(&mut self) -> Option<Step> {
        if let Some((tree, path)) = self.next_dir.take()
            && let Some(step) = self.enter(tree, path)
        {
            return Some(step);
        }
        loop {
            let top = self.stack.last_mut()?;
            if let Some(entry) = top.entries.next() {
                let path = child_path(&top.path, &entry.name);
                if let Payload::Dir(id) = &entry.payload {
                    self.next_dir = Some((*id, path.clone()));
                }
                return Some(Step::Entry { path, entry });
            }
            let done = self.stack.pop().expect("a frame");
            if let Some(tree) = done.tree {
                return Some(Step::Leave {
                    path: done.path,
                    tree,
                });
            }
        }
    }

    /// Reads directory `tree` and opens it; `None` if it was seen before.
    fn enter(&mut self, tree: ChunkId, path: Vec<u8>) -> Option<Step> {
        if let Some(seen) = &mut self.seen
            && !seen.insert(tree)
        {
            return None;
        }
        match read_directory(self.source, &tree) {
            Ok(listing) => {
                self.stack.push(Frame {
                    path: path.clone(),
                    tree: Some(tree),
                    entries: listing.entries.into_iter(),
                });
                Some(Step::Enter {
                    path,
                    tree,
                    parts: listing.parts,
                })
            }
            Err(error) => Some(Step::Unreadable { path, tree, error }),
        }
    }

    /// Hands every step to `visitor` until the walk is done.
    ///
    /// # Errors
    /// The first error `visitor` returns (by default, that of the first
    /// directory that cannot be read).
    pub fn run<V: Visitor + ?Sized>(&mut self, visitor: &mut V) -> Result<()> {
        while let Some(step) = self.next_step() {
            match step {
                Step::Entry { path, entry } => {
                    if visitor.entry(&path, &entry)? == Visit::Skip {
                        self.skip_subtree();
                    }
                }
                Step::Enter { path, tree, parts } => visitor.enter_dir(&path, &tree, &parts)?,
                Step::Leave { path, tree } => visitor.leave_dir(&path, &tree)?,
                Step::Unreadable { path, tree, error } => {
                    visitor.unreadable(&path, &tree, error)?;
                }
            }
        }
        Ok(())
    }
}

/// Walks the snapshot root tree `root` (paths `/name`...) with `visitor`.
///
/// # Errors
/// As [`TreeWalk::run`].
pub fn walk<S, V>(source: &S, root: &ChunkId, visitor: &mut V) -> Result<()>
where
    S: TreeSource + ?Sized,
    V: Visitor + ?Sized,
{
    let mut w = TreeWalk::new(source);
    w.start_tree(*root, Vec::new());
    w.run(visitor)
}

/// The absolute path of `names` (from the root): `/a/b`, or empty for none.
pub fn path_of(names: &[Vec<u8>]) -> Vec<u8> {
    names
        .iter()
        .flat_map(|n| [&b"/"[..], n])
        .flatten()
        .copied()
        .collect()
}

/// The path of entry `name` in the directory at `dir`.
pub fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    [dir, b"/", name].concat()
}

/// An entry of one or both of two listings compared by name.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // handed out and taken apart at once
pub enum Paired {
    /// Only the old listing has the name.
    Old(Entry),
    /// Only the new listing has the name.
    New(Entry),
    Both(Entry, Entry),
}

/// Two listings in name order (as directories are stored), paired by name.
pub struct MergedListings {
    old: std::iter::Peekable<std::vec::IntoIter<Entry>>,
    new: std::iter::Peekable<std::vec::IntoIter<Entry>>,
}

/// Pairs the entries of two directories' listings, in name order.
pub fn merge_listings(old: Vec<Entry>, new: Vec<Entry>) -> MergedListings {
    MergedListings {
        old: old.into_iter().peekable(),
        new: new.into_iter().peekable(),
    }
}

impl Iterator for MergedListings {
    type Item = Paired;

    fn next(&mut self) -> Option<Paired> {
        use std::cmp::Ordering;
        let order = match (self.old.peek(), self.new.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        let old = match order {
            Ordering::Greater => None,
            _ => self.old.next(),
        };
        let new = match order {
            Ordering::Less => None,
            _ => self.new.next(),
        };
        match (old, new) {
            (Some(a), Some(b)) => Some(Paired::Both(a, b)),
            (Some(a), None) => Some(Paired::Old(a)),
            (None, Some(b)) => Some(Paired::New(b)),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;
    use crate::error::ErrorKind;
    use crate::format::tree::{Metadata, TreeBlob};

    /// Tree blobs in memory; counts reads.
    #[derive(Default)]
    struct Blobs {
        trees: HashMap<ChunkId, TreeBlob>,
        reads: Cell<usize>,
    }

    impl TreeSource for Blobs {
        fn tree_blob(&self, id: &ChunkId) -> Result<TreeBlob> {
            self.reads.set(self.reads.get() + 1);
            self.trees
                .get(id)
                .cloned()
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("tree {id}")))
        }
    }

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn file(name: &str) -> Entry {
        Entry {
            name: name.into(),
            meta: Metadata::default(),
            payload: Payload::Fifo,
        }
    }

    fn dir(name: &str, tree: u8) -> Entry {
        Entry {
            name: name.into(),
            meta: Metadata::default(),
            payload: Payload::Dir(id(tree)),
        }
    }

    /// root(1): a/ (2: x, s/ (3: y)), b, c/ (3: y), d/ (9: missing)
    fn sample() -> Blobs {
        let mut b = Blobs::default();
        let dirs = [
            (1, vec![dir("a", 2), file("b"), dir("c", 3), dir("d", 9)]),
            (2, vec![file("x"), dir("s", 3)]),
            (3, vec![file("y")]),
        ];
        for (n, entries) in dirs {
            b.trees.insert(id(n), TreeBlob::Directory(entries));
        }
        b
    }

    /// Records every call as a line; skips directories named in `skip`;
    /// goes on past unreadable directories.
    #[derive(Default)]
    struct Log {
        lines: Vec<String>,
        skip: Vec<&'static str>,
    }

    fn text(path: &[u8]) -> String {
        String::from_utf8_lossy(path).into_owned()
    }

    impl Visitor for Log {
        fn entry(&mut self, path: &[u8], entry: &Entry) -> Result<Visit> {
            self.lines.push(text(path));
            let skip = self.skip.iter().any(|s| s.as_bytes() == &entry.name[..]);
            Ok(if skip { Visit::Skip } else { Visit::Descend })
        }

        fn enter_dir(&mut self, path: &[u8], tree: &ChunkId, _: &[ChunkId]) -> Result<()> {
            self.lines
                .push(format!("enter {} {}", text(path), tree.0[0]));
            Ok(())
        }

        fn leave_dir(&mut self, path: &[u8], tree: &ChunkId) -> Result<()> {
            self.lines
                .push(format!("leave {} {}", text(path), tree.0[0]));
            Ok(())
        }

        fn unreadable(&mut self, path: &[u8], tree: &ChunkId, e: Error) -> Result<()> {
            assert_eq!(e.kind(), ErrorKind::NotFound);
            self.lines
                .push(format!("unreadable {} {}", text(path), tree.0[0]));
            Ok(())
        }
    }

    #[test]
    fn depth_first_in_stored_order_with_paths() {
        let blobs = sample();
        let mut log = Log {
            skip: vec!["c"],
            ..Log::default()
        };
        walk(&blobs, &id(1), &mut log).unwrap();
        let want = [
            "enter  1",
            "/a",
            "enter /a 2",
            "/a/x",
            "/a/s",
            "enter /a/s 3",
            "/a/s/y",
            "leave /a/s 3",
            "leave /a 2",
            "/b",
            "/c",
            "/d",
            "unreadable /d 9",
            "leave  1",
        ];
        assert_eq!(log.lines, want);
    }

    #[test]
    fn an_unreadable_directory_stops_the_walk_by_default() {
        struct Stop(usize);
        impl Visitor for Stop {
            fn entry(&mut self, _: &[u8], _: &Entry) -> Result<Visit> {
                self.0 += 1;
                Ok(Visit::Descend)
            }
        }
        let blobs = sample();
        let mut v = Stop(0);
        let e = walk(&blobs, &id(1), &mut v).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(v.0, 8, "every entry before /d's listing was visited");
    }

    #[test]
    fn once_per_tree_enters_a_shared_tree_once_across_roots() {
        let blobs = sample();
        let mut w = TreeWalk::new(&blobs).once_per_tree();
        let mut log = Log::default();
        w.start_tree(id(1), Vec::new());
        w.run(&mut log).unwrap();
        let entered = |log: &Log| log.lines.iter().filter(|l| l.starts_with("enter")).count();
        // Tree 3 is below /a/s and /c: entered once; /d's tree is tried once.
        assert_eq!(entered(&log), 3);
        assert!(log.lines.contains(&"/c".to_owned()) && !log.lines.contains(&"/c/y".into()));
        let reads = blobs.reads.get();
        w.start_tree(id(1), Vec::new());
        w.run(&mut log).unwrap();
        assert_eq!(
            blobs.reads.get(),
            reads,
            "a root seen before is not read again"
        );
        assert_eq!(w.trees_seen(), 4);
    }

    #[test]
    fn a_starting_entry_is_walked_with_what_is_below_it() {
        let blobs = sample();
        let mut w = TreeWalk::new(&blobs);
        w.start_entry(b"/a".to_vec(), dir("s", 3));
        let mut paths = Vec::new();
        while let Some(step) = w.next_step() {
            if let Step::Entry { path, .. } = step {
                paths.push(text(&path));
            }
        }
        assert_eq!(paths, ["/a/s", "/a/s/y"]);
    }

    #[test]
    fn large_directories_read_as_one_listing_with_their_parts() {
        let mut blobs = Blobs::default();
        let parts = vec![id(5), id(6)];
        blobs
            .trees
            .insert(id(1), TreeBlob::LargeDirectory(parts.clone()));
        // Two tiny parts are not the canonical split: the walk says so.
        blobs
            .trees
            .insert(id(5), TreeBlob::Directory(vec![file("a")]));
        blobs
            .trees
            .insert(id(6), TreeBlob::Directory(vec![file("b")]));
        let mut w = TreeWalk::new(&blobs);
        w.start_tree(id(1), Vec::new());
        assert!(matches!(
            w.next_step(),
            Some(Step::Unreadable { error, .. }) if error.kind() == ErrorKind::Corrupt
        ));
        // About 1.2 MiB of entries: more than one part holds.
        let all: Vec<Entry> = (0..6000)
            .map(|i| Entry {
                name: format!("{i:0>200}").into_bytes(),
                ..file("")
            })
            .collect();
        let split = crate::format::tree::plan_directory(all.clone());
        assert!(split.len() > 1, "the test needs a large directory");
        let parts: Vec<ChunkId> = (10..).take(split.len()).map(id).collect();
        for (p, entries) in parts.iter().zip(split) {
            blobs.trees.insert(*p, TreeBlob::Directory(entries));
        }
        blobs
            .trees
            .insert(id(1), TreeBlob::LargeDirectory(parts.clone()));
        let mut w = TreeWalk::new(&blobs);
        w.start_tree(id(1), Vec::new());
        let Some(Step::Enter { parts: got, .. }) = w.next_step() else {
            panic!("the large directory is entered");
        };
        assert_eq!(got, parts);
        let names: Vec<Vec<u8>> = std::iter::from_fn(|| w.next_step())
            .filter_map(|s| match s {
                Step::Entry { entry, .. } => Some(entry.name),
                _ => None,
            })
            .collect();
        assert_eq!(names, all.into_iter().map(|e| e.name).collect::<Vec<_>>());
    }

    #[test]
    fn a_deep_tree_needs_no_deep_call_stack() {
        const DEPTH: u32 = 5_000;
        struct Deepest(usize);
        impl Visitor for Deepest {
            fn entry(&mut self, path: &[u8], _: &Entry) -> Result<Visit> {
                self.0 = self.0.max(path.len());
                Ok(Visit::Descend)
            }
        }
        let tree = |n: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&n.to_le_bytes());
            ChunkId(b)
        };
        let mut blobs = Blobs::default();
        for n in 0..DEPTH {
            let below = Entry {
                payload: Payload::Dir(tree(n + 1)),
                ..file("d")
            };
            blobs
                .trees
                .insert(tree(n), TreeBlob::Directory(vec![below]));
        }
        blobs
            .trees
            .insert(tree(DEPTH), TreeBlob::Directory(Vec::new()));
        let mut v = Deepest(0);
        walk(&blobs, &tree(0), &mut v).unwrap();
        assert_eq!(v.0, 2 * DEPTH as usize);
    }

    #[test]
    fn listings_pair_by_name() {
        let got: Vec<String> = merge_listings(
            vec![file("a"), file("c"), file("d")],
            vec![file("b"), file("c"), file("e")],
        )
        .map(|p| match p {
            Paired::Old(e) => format!("-{}", text(&e.name)),
            Paired::New(e) => format!("+{}", text(&e.name)),
            Paired::Both(a, b) => format!("={}{}", text(&a.name), text(&b.name)),
        })
        .collect();
        assert_eq!(got, ["-a", "+b", "=cc", "-d", "+e"]);
    }

    #[test]
    fn paths_are_absolute_raw_bytes() {
        assert_eq!(path_of(&[]), b"");
        assert_eq!(path_of(&[b"a".to_vec(), b"\xff".to_vec()]), b"/a/\xff");
        assert_eq!(child_path(b"", b"a"), b"/a");
    }
}
