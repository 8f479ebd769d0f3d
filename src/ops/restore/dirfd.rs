//! Layer 5, part of `restore`: the target's directories as file
//! descriptors. Owns the rule that restore never resolves a path of more
//! than one component below the target and never follows a symlink there:
//! every directory is opened with `openat(parent, name, O_DIRECTORY |
//! O_NOFOLLOW)` from the target's own descriptor down, and every name is
//! created, inspected or removed relative to its directory's descriptor.
//! A directory that was swapped for a symlink (or anything else) after it
//! was made is an error for what is below it, never followed.
//!
//! The number of open descriptors is bounded: a [`DirChain`] keeps the
//! descriptors of the deepest [`OPEN_WINDOW`] directories of the chain it
//! is in and reopens an ancestor from its parent when it climbs back up.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, mkdirat, openat, statat, unlinkat};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::format::tree::Entry;

/// The deepest directory a restore makes below its target: as deep as a
/// path of `PATH_MAX` (4096) bytes of one-byte names can reach.
pub const MAX_DEPTH: usize = 2048;

/// Directory descriptors a [`DirChain`] keeps open at most.
const OPEN_WINDOW: usize = 16;

/// How a directory below the target is opened.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// One directory of the restore, by its parent and name.
pub(super) struct DirNode {
    parent: usize,
    name: Vec<u8>,
    depth: usize,
    /// Made by this restore (empty when made, so nothing can be in the way).
    pub fresh: bool,
    /// Its entry in the snapshot, whose metadata is set last; `None` for
    /// the target and for directories made only to reach an include.
    pub entry: Option<Entry>,
}

/// Every directory of a restore; index 0 is the target.
pub(super) struct Dirs {
    target: PathBuf,
    pub nodes: Vec<DirNode>,
}

impl Dirs {
    pub fn new(target: PathBuf) -> Self {
        let root = DirNode {
            parent: 0,
            name: Vec::new(),
            depth: 0,
            fresh: false,
            entry: None,
        };
        Self {
            target,
            nodes: vec![root],
        }
    }

    /// Adds `name` below `parent`; refuses a directory deeper than
    /// [`MAX_DEPTH`].
    pub fn add(
        &mut self,
        parent: usize,
        name: &[u8],
        fresh: bool,
        entry: Option<Entry>,
    ) -> Result<usize> {
        let depth = self.nodes[parent].depth + 1;
        if depth > MAX_DEPTH {
            return Err(Error::new(
                crate::ErrorKind::InvalidInput,
                format!(
                    "{}: the snapshot's tree is deeper than {MAX_DEPTH} directories; nothing below is restored",
                    self.shown(parent, Some(name))
                ),
            ));
        }
        self.nodes.push(DirNode {
            parent,
            name: name.to_vec(),
            depth,
            fresh,
            entry,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The path of `dir` (and `name` in it) for messages.
    pub fn shown(&self, dir: usize, name: Option<&[u8]>) -> String {
        let mut names: Vec<&[u8]> = name.into_iter().collect();
        let mut d = dir;
        while d != 0 {
            names.push(&self.nodes[d].name);
            d = self.nodes[d].parent;
        }
        let mut path = self.target.clone();
        path.extend(names.iter().rev().map(|n| OsStr::from_bytes(n)));
        path.display().to_string()
    }

    /// The directories from the target's child down to `dir`.
    fn lineage(&self, dir: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes[dir].depth);
        let mut d = dir;
        while d != 0 {
            out.push(d);
            d = self.nodes[d].parent;
        }
        out.reverse();
        out
    }
}

/// Open descriptors of one chain of directories below the target.
pub(super) struct DirChain<'f> {
    root: BorrowedFd<'f>,
    open: Vec<(usize, Option<OwnedFd>)>,
}

impl<'f> DirChain<'f> {
    pub fn new(root: BorrowedFd<'f>) -> Self {
        Self {
            root,
            open: Vec::new(),
        }
    }

    /// The descriptor of directory `dir`, opening what it must from the
    /// nearest open ancestor (never through a symlink).
    ///
    /// # Errors
    /// A directory of the chain that is no longer one (swapped for a
    /// symlink or a file during the restore), or any open error.
    pub fn enter(&mut self, dirs: &Dirs, dir: usize) -> Result<BorrowedFd<'_>> {
        if dir == 0 {
            return Ok(self.root);
        }
        if self
            .open
            .last()
            .is_none_or(|(d, fd)| *d != dir || fd.is_none())
        {
            self.open_lineage(dirs, dir)?;
        }
        let (_, fd) = self.open.last().expect("entered a directory");
        Ok(fd.as_ref().expect("the entered directory is open").as_fd())
    }

    fn open_lineage(&mut self, dirs: &Dirs, dir: usize) -> Result<()> {
        let want = dirs.lineage(dir);
        let common = self
            .open
            .iter()
            .zip(&want)
            .take_while(|((d, _), w)| d == *w)
            .count();
        self.open.truncate(common);
        let from = self
            .open
            .iter()
            .rposition(|(_, fd)| fd.is_some())
            .map_or(0, |p| p + 1);
        for k in from..common {
            let fd = self.open_child(dirs, k, self.open[k].0)?;
            self.open[k].1 = Some(fd);
        }
        for &d in &want[common..] {
            let fd = self.open_child(dirs, self.open.len(), d)?;
            self.open.push((d, Some(fd)));
        }
        let keep_from = self.open.len().saturating_sub(OPEN_WINDOW);
        for (_, fd) in &mut self.open[..keep_from] {
            *fd = None;
        }
        Ok(())
    }

    /// Opens directory `dir`, the `k`-th of the chain, from the `k-1`-th.
    fn open_child(&self, dirs: &Dirs, k: usize, dir: usize) -> Result<OwnedFd> {
        let parent = match k {
            0 => self.root,
            _ => self.open[k - 1]
                .1
                .as_ref()
                .expect("parent reopened first")
                .as_fd(),
        };
        openat(parent, OsStr::from_bytes(&dirs.nodes[dir].name), DIR_FLAGS, Mode::empty()).map_err(|e| {
            let shown = dirs.shown(dir, None);
            if e == Errno::LOOP || e == Errno::NOTDIR {
                Error::io(format!("{shown}: no longer a directory (replaced during the restore?), not followed"), e.into())
            } else {
                Error::io(shown, e.into())
            }
        })
    }
}

/// The type and inode of `name` in `dir`, not following a symlink;
/// `None` when there is nothing.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub(super) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Makes directory `name` in `dir` (mode 0700 until its metadata is set),
/// or keeps the directory already there; anything else at the name is
/// removed first. Returns whether it was made (so it is empty).
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let mk = || mkdirat(dir, OsStr::from_bytes(name), Mode::RWXU);
    match mk() {
        Ok(()) => return Ok(true),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    if stat_at(dir, name)?.is_some_and(|st| is_dir(&st)) {
        return Ok(false);
    }
    remove_at(dir, name)?;
    mk()?;
    Ok(true)
}

/// Runs `create`; if the name is taken, removes what is there (never
/// following it) and runs `create` once more.
pub(super) fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    create: impl Fn() -> rustix::io::Result<T>,
) -> io::Result<T> {
    match create() {
        Err(Errno::EXIST) => {
            remove_at(dir, name)?;
            Ok(create()?)
        }
        other => Ok(other?),
    }
}

/// Creates the regular file `name` in `dir`, mode 0600, for writing;
/// whatever was at the name is removed first.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = replacing(dir, name, || {
        openat(dir, OsStr::from_bytes(name), flags, Mode::RUSR | Mode::WUSR)
    })?;
    Ok(fd.into())
}

/// Opens the regular file `name` in `dir` for reading, if that is what is
/// there (never a symlink, and never opening a device or a FIFO).
pub(super) fn open_regular(dir: BorrowedFd<'_>, name: &[u8]) -> Option<(std::fs::File, Stat)> {
    let before = stat_at(dir, name).ok()??;
    if !is_regular(&before) {
        return None;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = openat(dir, OsStr::from_bytes(name), flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (is_regular(&st) && st.st_ino == before.st_ino).then(|| (fd.into(), st))
}

/// Removes whatever is at `name` in `dir`: a directory with everything
/// in it, anything else by unlinking the name. Nothing there is fine.
pub(super) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match stat_at(dir, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => remove_tree(dir, name, 0),
        Some(_) => Ok(unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty())?),
    }
}

fn remove_tree(parent: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "more than {MAX_DEPTH} directories deep"
        )));
    }
    let fd = openat(parent, OsStr::from_bytes(name), DIR_FLAGS, Mode::empty())?;
    let mut names = Vec::new();
    for entry in Dir::read_from(&fd)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), entry.file_type()));
        }
    }
    for (n, kind) in names {
        match kind {
            FileType::Directory => remove_tree(fd.as_fd(), &n, depth + 1)?,
            FileType::Unknown => remove_at(fd.as_fd(), &n)?,
            _ => unlinkat(&fd, OsStr::from_bytes(&n), AtFlags::empty())?,
        }
    }
    Ok(unlinkat(
        parent,
        OsStr::from_bytes(name),
        AtFlags::REMOVEDIR,
    )?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A chain `d0/d1/.../d{n-1}` below `root`, in `dirs` and on disk,
    /// with a sibling `s` next to each; the index of each `d`.
    fn nested(root: &std::path::Path, dirs: &mut Dirs, n: usize) -> Vec<usize> {
        let (mut parent, mut path, mut out) = (0, root.to_path_buf(), Vec::new());
        for i in 0..n {
            std::fs::create_dir(path.join("s")).unwrap();
            path.push(format!("d{i}"));
            std::fs::create_dir(&path).unwrap();
            parent = dirs
                .add(parent, format!("d{i}").as_bytes(), false, None)
                .unwrap();
            out.push(parent);
        }
        out
    }

    fn ino_of(fd: BorrowedFd<'_>) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn a_chain_deeper_than_its_window_reopens_ancestors_and_finds_the_same_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Dirs::new(tmp.path().to_path_buf());
        let chain_dirs = nested(tmp.path(), &mut dirs, 3 * OPEN_WINDOW);
        let root = rustix::fs::open(tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let mut chain = DirChain::new(root.as_fd());
        let path_of = |k: usize| {
            let mut p = tmp.path().to_path_buf();
            p.extend((0..=k).map(|i| format!("d{i}")));
            p
        };
        // Down to the bottom, up to the top, and down again, in jumps.
        for k in [
            3 * OPEN_WINDOW - 1,
            0,
            2 * OPEN_WINDOW,
            OPEN_WINDOW + 1,
            5,
            3 * OPEN_WINDOW - 2,
        ] {
            let fd = chain.enter(&dirs, chain_dirs[k]).unwrap();
            assert_eq!(
                ino_of(fd),
                std::fs::metadata(path_of(k)).unwrap().ino(),
                "d{k}"
            );
            let open = chain.open.iter().filter(|(_, fd)| fd.is_some()).count();
            assert!(open <= OPEN_WINDOW, "{open} descriptors open");
        }
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_an_error_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Dirs::new(tmp.path().to_path_buf());
        let chain_dirs = nested(tmp.path(), &mut dirs, 2);
        std::fs::rename(tmp.path().join("d0"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("moved"), tmp.path().join("d0")).unwrap();
        let root = rustix::fs::open(tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let err = DirChain::new(root.as_fd())
            .enter(&dirs, chain_dirs[1])
            .unwrap_err();
        assert!(err.to_string().contains("no longer a directory"), "{err}");
    }

    #[test]
    fn make_dir_replaces_a_symlink_and_remove_at_removes_a_tree_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir_all(target.join("tree/a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("tree/a/link")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("x")).unwrap();
        let root = rustix::fs::open(&target, DIR_FLAGS, Mode::empty()).unwrap();
        assert!(make_dir(root.as_fd(), b"x").unwrap(), "made anew");
        assert!(!make_dir(root.as_fd(), b"x").unwrap(), "kept");
        remove_at(root.as_fd(), b"tree").unwrap();
        assert!(!target.join("tree").exists());
        assert!(
            outside.join("keep").is_dir(),
            "nothing removed through the link"
        );
        assert!(target.join("x").symlink_metadata().unwrap().is_dir());
    }
}
