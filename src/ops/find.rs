//! `find`: the entries of some snapshots whose name or path matches a glob.
//! Patterns follow the exclude rules of `source::exclude`: one without a
//! `/` matches the name at any depth, one with a `/` the whole absolute
//! path (a relative one at any depth, as if it began with `**/`). The
//! matches below a directory are memoized by its tree id, as paths
//! relative to it, so a subtree that many snapshots share is walked once.
//! Trees are walked with `snapshot::walk`; a directory whose matches are
//! known is skipped there.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use crate::source::exclude::PathGlobs;

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Entry, EntryType, Metadata, Payload};
use crate::id::{ChunkId, SnapshotId};
use crate::snapshot::walk::{Visit, Visitor, walk};

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Globs (`*`, `?`, `[..]`, `**`); an entry matching any is listed.
    pub patterns: Vec<String>,
}

/// One matching entry of one snapshot.
#[derive(Debug, Clone)]
pub struct FindMatch {
    pub snapshot: SnapshotId,
    /// The snapshot's start time, ns since the epoch.
    pub time: i64,
    /// Absolute path in the snapshot, `/`-separated bytes.
    pub path: Vec<u8>,
    pub entry_type: EntryType,
    pub meta: Metadata,
}

/// `{"snapshot", "time", "path", "path_hex" (only for a name that is not
/// UTF-8), "type", "size", "mode", "mtime"}`: the entry's name, exactly,
/// its type and the metadata a listing shows.
impl serde::Serialize for FindMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("FindMatch", 8)?;
        out.serialize_field("snapshot", &self.snapshot)?;
        out.serialize_field("time", &self.time)?;
        super::serialize_entry_path(&mut out, &self.path)?;
        out.serialize_field("type", self.entry_type.name())?;
        out.serialize_field("size", &self.meta.size)?;
        out.serialize_field("mode", &self.meta.mode)?;
        out.serialize_field("mtime", &self.meta.mtime.0)?;
        out.end()
    }
}

/// What a search found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FindReport {
    /// By snapshot in the order given, then in name order.
    pub matches: Vec<FindMatch>,
    /// Directory trees loaded, and trees whose matches were memoized.
    pub trees_loaded: u64,
    pub trees_reused: u64,
}

/// Searches `snapshots` (in the order given).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for no pattern or one that is not a glob;
/// missing or damaged tree blobs.
pub fn find(
    store: &ChunkStore<'_>,
    snapshots: &[(SnapshotId, Snapshot)],
    options: &FindOptions,
) -> Result<FindReport> {
    let mut finder = Finder {
        matcher: Matcher::new(&options.patterns)?,
        memo: HashMap::new(),
        open: Vec::new(),
        report: FindReport::default(),
    };
    for (id, snap) in snapshots {
        for hit in finder.below_root(store, &snap.tree_id()?)?.iter() {
            finder.report.matches.push(FindMatch {
                snapshot: *id,
                time: snap.time,
                path: [b"/", &hit.rel[..]].concat(),
                entry_type: hit.entry_type,
                meta: hit.meta.clone(),
            });
        }
    }
    Ok(finder.report)
}

/// Compiled patterns (the rules of excludes, `source::exclude::PathGlobs`).
struct Matcher(PathGlobs);

impl Matcher {
    fn new(patterns: &[String]) -> Result<Self> {
        if patterns.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "no pattern to find"));
        }
        PathGlobs::new(patterns, "pattern").map(Self)
    }

    fn is_match(&self, path: &[u8], name: &[u8]) -> bool {
        self.0
            .is_match(Path::new(OsStr::from_bytes(path)), OsStr::from_bytes(name))
    }

    /// Whether a match depends on where a tree is, not only on what it is.
    fn uses_paths(&self) -> bool {
        self.0.uses_paths()
    }
}

/// A match below a directory, relative to it.
struct Hit {
    rel: Vec<u8>,
    entry_type: EntryType,
    meta: Metadata,
}

/// A directory tree id, with its absolute path when path patterns make
/// the matches below it depend on where it is.
type MemoKey = (ChunkId, Option<Vec<u8>>);

/// A visitor gathering the matches below each directory, relative to it,
/// and memoizing them by [`MemoKey`]: a directory whose matches are known
/// is skipped.
struct Finder {
    matcher: Matcher,
    memo: HashMap<MemoKey, Rc<Vec<Hit>>>,
    /// The directories being walked, innermost last, with the matches
    /// found below each so far.
    open: Vec<(MemoKey, Vec<Hit>)>,
    report: FindReport,
}

impl Finder {
    fn key(&self, id: &ChunkId, dir: &[u8]) -> MemoKey {
        (*id, self.matcher.uses_paths().then(|| dir.to_vec()))
    }

    /// The matches below the snapshot root tree `root`.
    fn below_root(&mut self, store: &ChunkStore<'_>, root: &ChunkId) -> Result<Rc<Vec<Hit>>> {
        let key = self.key(root, b"");
        if let Some(hits) = self.memo.get(&key) {
            self.report.trees_reused += 1;
            return Ok(Rc::clone(hits));
        }
        self.report.trees_loaded += 1;
        walk(store, root, self)?;
        Ok(Rc::clone(&self.memo[&key]))
    }

    /// Adds the matches below directory `name` to the directory holding it.
    fn add_below(&mut self, name: &[u8], below: &[Hit]) {
        let Some((_, hits)) = self.open.last_mut() else {
            return;
        };
        for h in below {
            hits.push(Hit {
                rel: [name, b"/", &h.rel[..]].concat(),
                entry_type: h.entry_type,
                meta: h.meta.clone(),
            });
        }
    }
}

impl Visitor for Finder {
    fn entry(&mut self, path: &[u8], e: &Entry) -> Result<Visit> {
        if self.matcher.is_match(path, &e.name) {
            let (_, hits) = self.open.last_mut().expect("inside a directory");
            hits.push(Hit {
                rel: e.name.clone(),
                entry_type: e.payload.entry_type(),
                meta: e.meta.clone(),
            });
        }
        let Payload::Dir(sub) = &e.payload else {
            return Ok(Visit::Skip);
        };
        if let Some(hits) = self.memo.get(&self.key(sub, path)).map(Rc::clone) {
            self.report.trees_reused += 1;
            self.add_below(&e.name, &hits);
            return Ok(Visit::Skip);
        }
        self.report.trees_loaded += 1;
        Ok(Visit::Descend)
    }

    fn enter_dir(&mut self, path: &[u8], tree: &ChunkId, _: &[ChunkId]) -> Result<()> {
        self.open.push((self.key(tree, path), Vec::new()));
        Ok(())
    }

    fn leave_dir(&mut self, path: &[u8], _: &ChunkId) -> Result<()> {
        let (key, hits) = self.open.pop().expect("an open directory");
        let hits = Rc::new(hits);
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        self.add_below(name, &hits);
        self.memo.insert(key, hits);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Matcher;

    #[test]
    fn names_and_paths() {
        let m = Matcher::new(&["report.txt".into(), "*.LOG".into()]).unwrap();
        assert!(m.is_match(b"/srv/a/report.txt", b"report.txt"));
        assert!(!m.is_match(b"/srv/report.txt/x", b"x"));
        assert!(m.is_match(b"/a.LOG", b"a.LOG"));
        let m = Matcher::new(&["*/sub/*.log".into()]).unwrap();
        assert!(m.is_match(b"/tmp/x/src/sub/a.log", b"a.log"));
        assert!(m.is_match(b"/src/sub/a.log", b"a.log"));
        assert!(!m.is_match(b"/src/sub/deeper/a.log", b"a.log"));
        let m = Matcher::new(&["/srv/**/*.php".into()]).unwrap();
        assert!(m.is_match(b"/srv/www/x/index.php", b"index.php"));
        assert!(!m.is_match(b"/home/srv/index.php", b"index.php"));
        assert!(Matcher::new(&["[".into()]).is_err());
        assert!(Matcher::new(&[]).is_err());
    }
}
