//! Source layer: the one file-system walker. The backup and the size scan
//! both walk through [`Walker`], so they agree on what is left out.
//!
//! Owned invariant: below a path given to [`Walker::walk`], every path is
//! visited at most once, the children of a directory in byte order of
//! their names; a path matching an exclude pattern is not visited, a
//! directory holding an exclude marker file is left out (the given path
//! too), and with `one_file_system` a directory on another file system
//! than the given path is handed back without its children (the mount
//! point stays, empty). What the walk reads is `lstat` and directory
//! listings; what a path becomes is the [`Visitor`]'s business.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::source::exclude::{ExcludeOptions, Excluder};

/// A path the walk reached, with its `lstat`.
pub struct Found<'a> {
    pub path: &'a Path,
    /// The last component of `path`, as bytes.
    pub name: &'a [u8],
    pub lstat: &'a fs::Metadata,
}

/// What a walk does with the paths it reaches. An error returned by a
/// method ends the walk with that error.
pub trait Visitor {
    /// What a visited path becomes (for a backup, a tree entry).
    type Entry;
    /// What is known of a path before it is visited (for a backup, its
    /// entry in the parent snapshot).
    type Known;
    /// What the visitor keeps of a directory while its children are walked.
    type Dir;

    /// `path` (below a given one) could not be read; it is left out.
    fn unreadable(&mut self, path: &Path, error: &io::Error);

    /// A path that is not a directory; `None` leaves it out.
    ///
    /// # Errors
    /// Whatever ends the walk.
    fn leaf(
        &mut self,
        found: &Found<'_>,
        known: Option<&Self::Known>,
    ) -> Result<Option<Self::Entry>>;

    /// A directory (not excluded), before its children are listed.
    ///
    /// # Errors
    /// Whatever ends the walk.
    fn enter(&mut self, found: &Found<'_>, known: Option<&Self::Known>) -> Result<Self::Dir>;

    /// What is known of the children of directory `path`, by name; asked
    /// once its listing was read.
    ///
    /// # Errors
    /// Whatever ends the walk.
    fn known_children(
        &mut self,
        path: &Path,
        dir: &Self::Dir,
    ) -> Result<HashMap<Vec<u8>, Self::Known>>;

    /// The names of the children of directory `path` about to be visited,
    /// in order (excluded ones left out): a visitor may start reading them
    /// ahead. Called once the listing was read, after
    /// [`Self::known_children`]; each child is `lstat`ed when visited.
    fn upcoming(
        &mut self,
        _path: &Path,
        _dir: &mut Self::Dir,
        _names: &[Vec<u8>],
        _known: &HashMap<Vec<u8>, Self::Known>,
    ) {
    }

    /// A directory after its children (none if it is a mount point left
    /// out by `one_file_system`).
    ///
    /// # Errors
    /// Whatever ends the walk.
    fn leave(
        &mut self,
        found: &Found<'_>,
        dir: Self::Dir,
        children: Vec<Self::Entry>,
    ) -> Result<Self::Entry>;
}

/// Walks paths given by the user, applying the excludes.
pub struct Walker {
    excluder: Excluder,
    one_file_system: bool,
    /// The file system of the path being walked.
    device: u64,
}

impl Walker {
    /// A walker applying `excludes`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] for a pattern that is not a glob.
    pub fn new(excludes: &ExcludeOptions) -> Result<Self> {
        Ok(Self {
            excluder: Excluder::new(excludes)?,
            one_file_system: excludes.one_file_system,
            device: 0,
        })
    }

    /// Walks `path`, given whole (not matched against exclude patterns),
    /// whose `lstat` is `lstat`; `known` is what the visitor knows of it.
    ///
    /// # Errors
    /// The visitor's.
    pub fn walk<V: Visitor>(
        &mut self,
        visitor: &mut V,
        path: &Path,
        lstat: &fs::Metadata,
        known: Option<&V::Known>,
    ) -> Result<Option<V::Entry>> {
        self.device = lstat.dev();
        let name = path.file_name().map_or(&[][..], OsStrExt::as_bytes);
        self.visit(visitor, path, name, lstat, known)
    }

    fn visit<V: Visitor>(
        &self,
        visitor: &mut V,
        path: &Path,
        name: &[u8],
        lstat: &fs::Metadata,
        known: Option<&V::Known>,
    ) -> Result<Option<V::Entry>> {
        let found = Found { path, name, lstat };
        if !lstat.is_dir() {
            return visitor.leaf(&found, known);
        }
        if self.excluder.marked(path) {
            return Ok(None);
        }
        let mut dir = visitor.enter(&found, known)?;
        if self.one_file_system && lstat.dev() != self.device {
            return visitor.leave(&found, dir, Vec::new()).map(Some);
        }
        let names = match sorted_names(path) {
            Ok(names) => names,
            Err(e) => {
                visitor.unreadable(path, &e);
                return Ok(None);
            }
        };
        let known = visitor.known_children(path, &dir)?;
        let names: Vec<Vec<u8>> = names
            .into_iter()
            .filter(|name| !self.excluder.excludes(&path.join(OsStr::from_bytes(name))))
            .collect();
        visitor.upcoming(path, &mut dir, &names, &known);
        let children = self.children(visitor, path, names, &known)?;
        visitor.leave(&found, dir, children).map(Some)
    }

    /// Visits the children `names` of directory `path` (not excluded), in
    /// that order.
    fn children<V: Visitor>(
        &self,
        visitor: &mut V,
        path: &Path,
        names: Vec<Vec<u8>>,
        known: &HashMap<Vec<u8>, V::Known>,
    ) -> Result<Vec<V::Entry>> {
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(OsStr::from_bytes(&name));
            let md = match fs::symlink_metadata(&child) {
                Ok(md) => md,
                Err(e) => {
                    visitor.unreadable(&child, &e);
                    continue;
                }
            };
            if let Some(entry) = self.visit(visitor, &child, &name, &md, known.get(&name))? {
                children.push(entry);
            }
        }
        Ok(children)
    }
}

/// The names in directory `path`, in byte order.
fn sorted_names(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let listing = fs::read_dir(path)?.collect::<io::Result<Vec<_>>>()?;
    let mut names: Vec<Vec<u8>> = listing
        .iter()
        .map(|d| d.file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    Ok(names)
}

/// Makes `path` absolute and lexically clean (no `.` or `..`).
///
/// # Errors
/// [`crate::ErrorKind::Io`] if the working directory cannot be read.
pub fn clean_absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The components of an absolute, clean path, as bytes.
pub fn components(path: &Path) -> Vec<Vec<u8>> {
    path.components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_absolute_drops_dots() {
        let p = clean_absolute(Path::new("/a/./b/../c")).unwrap();
        assert_eq!(p, PathBuf::from("/a/c"));
        assert_eq!(components(&p), vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(
            clean_absolute(Path::new("/..")).unwrap(),
            PathBuf::from("/")
        );
    }
}
