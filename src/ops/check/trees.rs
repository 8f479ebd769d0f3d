//! Part of `check` (layer 5): step 4, the walk of every snapshot's trees.
//! Trees are walked once per id (what is wrong below each is memoized with
//! paths relative to it), an unreadable tree is a problem, not an error,
//! and a blob found only in an unindexed pack is a note unless
//! `--read-data` found it damaged there.

use std::collections::HashMap;
use std::rc::Rc;

use super::{FailedBlobs, is_damage};
use crate::chunkstore::ChunkStore;
use crate::chunkstore::index::ChunkIndex;
use crate::error::{Error, Result};
use crate::format::tree::Payload;
use crate::id::{ChunkId, PackId};
use crate::snapshot::tree;
use crate::snapshot::walk::{Visit, Visitor, walk};

/// A problem below a tree, relative to it.
pub(super) struct Problem {
    pub(super) path: Vec<u8>,
    pub(super) object: String,
    pub(super) what: String,
    /// Not damage: a blob read from this unindexed pack's header.
    pub(super) unindexed: Option<PackId>,
}

/// Step 4: a visitor of `snapshot::walk` that walks trees once per id,
/// remembering what is wrong below each (paths relative to it): a
/// directory whose problems are known is skipped, and an unreadable one is
/// a problem, not an error.
pub(super) struct TreeChecker<'a, 'r> {
    pub(super) store: &'a ChunkStore<'r>,
    pub(super) index: &'a ChunkIndex,
    pub(super) bad_blobs: &'a HashMap<ChunkId, PackId>,
    /// Packs `--read-data` found damaged, indexed or not.
    pub(super) damaged: &'a HashMap<PackId, FailedBlobs>,
    pub(super) memo: HashMap<ChunkId, Rc<Vec<Problem>>>,
    /// The directories being walked, innermost last, with the problems
    /// found below each so far.
    pub(super) open: Vec<Vec<Problem>>,
}

impl Visitor for TreeChecker<'_, '_> {
    fn entry(&mut self, _: &[u8], e: &crate::format::tree::Entry) -> Result<Visit> {
        match &e.payload {
            Payload::Dir(sub) => {
                let Some(done) = self.memo.get(sub).map(Rc::clone) else {
                    return Ok(Visit::Descend);
                };
                self.add_below(&e.name, &done);
            }
            Payload::File(content) => {
                let problems = self.file(content, e.meta.size)?;
                self.add_below(&e.name, &problems);
            }
            _ => {}
        }
        Ok(Visit::Skip)
    }

    fn enter_dir(&mut self, _: &[u8], _: &ChunkId, _: &[ChunkId]) -> Result<()> {
        self.open.push(Vec::new());
        Ok(())
    }

    fn leave_dir(&mut self, path: &[u8], tree: &ChunkId) -> Result<()> {
        let problems = self.open.pop().expect("an open directory");
        self.finish(path, tree, problems);
        Ok(())
    }

    fn unreadable(&mut self, path: &[u8], tree: &ChunkId, e: Error) -> Result<()> {
        if !is_damage(&e) {
            return Err(e);
        }
        let problem = Problem {
            path: Vec::new(),
            object: format!("tree {tree}"),
            what: e.to_string(),
            unindexed: None,
        };
        self.finish(path, tree, vec![problem]);
        Ok(())
    }
}

impl TreeChecker<'_, '_> {
    /// Whether `--read-data` found blob `id` of `pack` damaged.
    fn fails_in(&self, pack: PackId, id: &ChunkId) -> bool {
        match self.damaged.get(&pack) {
            None => false,
            Some(None) => true,
            Some(Some(bad)) => bad.contains(id),
        }
    }

    /// The problems below the snapshot root tree `root`.
    pub(super) fn walk(&mut self, root: &ChunkId) -> Result<Rc<Vec<Problem>>> {
        if !self.memo.contains_key(root) {
            let store = self.store;
            walk(store, root, self)?;
        }
        Ok(Rc::clone(&self.memo[root]))
    }

    /// Remembers the problems below directory `tree` at `path`, and adds
    /// them to the directory holding it.
    fn finish(&mut self, path: &[u8], tree: &ChunkId, problems: Vec<Problem>) {
        let problems = Rc::new(problems);
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        self.add_below(name, &problems);
        self.memo.insert(*tree, problems);
    }

    /// Adds problems below entry `name` to the directory holding it.
    fn add_below(&mut self, name: &[u8], below: &[Problem]) {
        let Some(problems) = self.open.last_mut() else {
            return;
        };
        for p in below {
            let mut path = name.to_vec();
            if !p.path.is_empty() {
                path.push(b'/');
                path.extend_from_slice(&p.path);
            }
            problems.push(Problem {
                path,
                object: p.object.clone(),
                what: p.what.clone(),
                unindexed: p.unindexed,
            });
        }
    }

    /// Problems of one file's content (relative path empty).
    fn file(&self, content: &crate::format::tree::Content, size: u64) -> Result<Vec<Problem>> {
        let mut out = Vec::new();
        // One extent list at a time: a disk image of millions of chunks
        // holds one list (and its lookups) in memory.
        for list in tree::extent_lists(self.store, content, size) {
            let list = match list {
                Ok(x) => x,
                Err(e) if is_damage(&e) => {
                    out.push(Problem {
                        path: Vec::new(),
                        object: "extent list".into(),
                        what: e.to_string(),
                        unindexed: None,
                    });
                    break;
                }
                Err(e) => return Err(e),
            };
            self.chunks(&tree::data_ids(&list), &mut out)?;
        }
        Ok(out)
    }

    /// Problems of the data chunks `ids` of one file.
    fn chunks(&self, ids: &[ChunkId], out: &mut Vec<Problem>) -> Result<()> {
        for (id, loc) in ids.iter().zip(self.index.lookup_many(ids)?) {
            let (problem, unindexed) = match (loc, self.bad_blobs.get(id)) {
                (None, _) => match self.store.unindexed_location(id)? {
                    Some(l) if self.fails_in(l.pack, id) => {
                        (format!("is in damaged pack {}", l.pack), None)
                    }
                    Some(l) => (String::new(), Some(l.pack)),
                    None => ("is in no index file and no pack".to_owned(), None),
                },
                (Some(_), Some(pack)) => (format!("is in damaged pack {pack}"), None),
                (Some(_), None) => continue,
            };
            out.push(Problem {
                path: Vec::new(),
                object: format!("blob {id}"),
                what: problem,
                unindexed,
            });
        }
        Ok(())
    }
}
