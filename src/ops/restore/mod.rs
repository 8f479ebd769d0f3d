//! Layer 5: `restore` writes a snapshot's files, or some of them, below a
//! target directory, with their metadata. Every chunk is authenticated
//! before it is written (the chunk store checks it against its id).
//!
//! Nothing is resolved by path below the target. The target is opened
//! once; every directory below it is opened from its parent's descriptor
//! with `O_DIRECTORY | O_NOFOLLOW`, every name is one component (tree
//! names refuse `/`, `.` and `..`) created or removed relative to its
//! directory's descriptor, and metadata is set on open descriptors or,
//! for symlinks and special files, by name without following. So neither
//! a hostile snapshot nor a local user who swaps a directory inside the
//! target for a symlink while a root restore runs can make restore
//! create, change or remove anything outside the target: a directory
//! replaced mid-restore is an error for what is below it ([`dirfd`]).
//! Directories are made with mode 0700 and get their own metadata last,
//! after their contents. Trees deeper than [`MAX_DEPTH`] directories are
//! refused with an error.
//!
//! Privileges are restored only on request ([`metadata`]): setuid and
//! setgid bits of regular files and `security.capability` xattrs are
//! dropped and counted unless owners are restored by root and
//! `keep_setuid` is set; device nodes and FIFOs are skipped and counted
//! with `skip_devices`.
//!
//! A restore that is run again over its own, interrupted output does not
//! rewrite files already restored intact: a regular file of the right size
//! whose every data extent hashes to its chunk id (keyed BLAKE3 of the bytes
//! on disk) and whose holes read as zeros is kept, and only its metadata is
//! set. Anything else at a file's name is removed and written anew.
//! Names in directories this restore made are not looked up at all.
//!
//! Large files are written by several threads at once, in groups of
//! extents at their offsets; holes are skipped, so files stay sparse.

mod contents;
mod dirfd;
mod image;
mod metadata;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, linkat, mknodat, symlinkat};

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Entry, Payload};
use crate::id::ChunkId;
use crate::ops::progress::{NoProgress, Progress};
use crate::snapshot::tree;

use contents::{FileOutcome, Queued, Writer};
pub use dirfd::MAX_DEPTH;
use dirfd::{DirChain, Dirs};
pub use image::{ImageRestoreOptions, ImageRestoreReport, restore_image, write_image};
use metadata::{Applied, Policy};

/// Where and what to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these paths (absolute, as in the snapshot) and what is
    /// below them; empty means everything.
    pub include: Vec<PathBuf>,
    /// Set owners (needs root); otherwise files belong to the restoring user.
    pub owners: bool,
    /// Keep setuid/setgid bits of regular files and `security.capability`
    /// xattrs; honoured only with `owners` and when running as root.
    pub keep_setuid: bool,
    /// Do not create device nodes and FIFOs (they are counted instead).
    pub skip_devices: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    /// Files already present and intact (an earlier run wrote them).
    pub files_intact: u64,
    /// Regular files restored without their setuid/setgid bits.
    pub setuid_dropped: u64,
    /// Files restored without their `security.capability` xattr.
    pub capabilities_dropped: u64,
    /// Device nodes and FIFOs not created (`skip_devices`).
    pub devices_skipped: u64,
    /// Metadata that could not be set (owner, xattrs, times).
    pub warnings: Vec<String>,
}

impl RestoreReport {
    fn add(&mut self, applied: Applied) {
        self.setuid_dropped += u64::from(applied.setuid_dropped);
        self.capabilities_dropped += u64::from(applied.capability_dropped);
        self.warnings.extend(applied.warnings);
    }
}

/// A directory still being walked: its index and the entries left.
struct Frame {
    dir: usize,
    entries: std::vec::IntoIter<Entry>,
}

/// A name in a directory of the restore.
type Name = (usize, Vec<u8>);

struct Restorer<'s, 'r, 'f> {
    store: &'s ChunkStore<'r>,
    progress: &'s dyn Progress,
    root: BorrowedFd<'f>,
    policy: Policy,
    skip_devices: bool,
    include: Vec<Vec<Vec<u8>>>,
    dirs: Dirs,
    /// First restored name of each multiply linked inode, by (dev, ino).
    first_links: HashMap<(u64, u64), Name>,
    /// Files to write (in parallel, after the walk).
    files: Vec<Queued>,
    /// Hard links to make once their first name is written: (first, link).
    links: Vec<(Name, Name)>,
    report: RestoreReport,
}

impl Restorer<'_, '_, '_> {
    /// Whether `comps` is included, and whether something below it may be.
    fn wanted(&self, comps: &[Vec<u8>]) -> (bool, bool) {
        if self.include.is_empty() {
            return (true, true);
        }
        let whole = self.include.iter().any(|inc| comps.starts_with(inc));
        let partly = self.include.iter().any(|inc| inc.starts_with(comps));
        (whole, whole || partly)
    }

    /// Walks the tree depth first: makes directories, symlinks and special
    /// files, and queues regular files and hard links for [`Self::finish`].
    fn walk(&mut self, root: &ChunkId) -> Result<()> {
        let mut chain = DirChain::new(self.root);
        let mut stack = vec![Frame {
            dir: 0,
            entries: tree::load_directory(self.store, root)?.into_iter(),
        }];
        // The names from the target down to the directory being walked.
        let mut comps: Vec<Vec<u8>> = Vec::new();
        while let Some(frame) = stack.last_mut() {
            let dir = frame.dir;
            let Some(entry) = frame.entries.next() else {
                stack.pop();
                comps.pop();
                continue;
            };
            comps.push(entry.name.clone());
            let (whole, partly) = self.wanted(&comps);
            let sub = match &entry.payload {
                Payload::Dir(sub) if partly => Some(*sub),
                _ => None,
            };
            if whole || sub.is_some() {
                let fd = chain.enter(&self.dirs, dir)?;
                if let Some(sub) = sub {
                    let child = self.make_dir(fd, dir, entry, whole)?;
                    stack.push(Frame {
                        dir: child,
                        entries: tree::load_directory(self.store, &sub)?.into_iter(),
                    });
                    continue;
                }
                self.entry(fd, dir, entry)?;
            }
            comps.pop();
        }
        Ok(())
    }

    /// Makes (or keeps) the directory of `entry` in `dir`; its metadata is
    /// set in [`Self::finish`] if it is `whole`ly included.
    fn make_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        dir: usize,
        entry: Entry,
        whole: bool,
    ) -> Result<usize> {
        let fresh = dirfd::make_dir(fd, &entry.name)
            .map_err(|e| Error::io(self.dirs.shown(dir, Some(&entry.name)), e))?;
        self.report.dirs += u64::from(whole);
        let name = entry.name.clone();
        self.dirs.add(dir, &name, fresh, whole.then_some(entry))
    }

    /// Queues a regular file or hard link; makes a symlink or special file.
    fn entry(&mut self, fd: BorrowedFd<'_>, dir: usize, entry: Entry) -> Result<()> {
        let m = &entry.meta;
        if let Payload::File(_) = entry.payload {
            self.report.files += 1;
            if m.nlink > 1 {
                let key = (m.dev, m.ino);
                if let Some(first) = self.first_links.get(&key) {
                    self.links.push((first.clone(), (dir, entry.name)));
                    return Ok(());
                }
                self.first_links.insert(key, (dir, entry.name.clone()));
            }
            self.files.push((dir, entry));
            return Ok(());
        }
        let name = OsStr::from_bytes(&entry.name);
        let special = |kind, rdev| move || mknodat(fd, name, kind, Mode::RUSR | Mode::WUSR, rdev);
        let made = match &entry.payload {
            Payload::Symlink(target) => {
                let target = OsStr::from_bytes(target);
                dirfd::replacing(fd, &entry.name, || symlinkat(target, fd, name))
            }
            Payload::CharDevice(_) | Payload::BlockDevice(_) | Payload::Fifo
                if self.skip_devices =>
            {
                self.report.devices_skipped += 1;
                return Ok(());
            }
            Payload::CharDevice(r) => {
                dirfd::replacing(fd, &entry.name, special(FileType::CharacterDevice, *r))
            }
            Payload::BlockDevice(r) => {
                dirfd::replacing(fd, &entry.name, special(FileType::BlockDevice, *r))
            }
            Payload::Fifo => dirfd::replacing(fd, &entry.name, special(FileType::Fifo, 0)),
            Payload::Socket => dirfd::replacing(fd, &entry.name, special(FileType::Socket, 0)),
            Payload::File(_) | Payload::Dir(_) => unreachable!("handled above"),
        };
        self.report.others += 1;
        let shown = || self.dirs.shown(dir, Some(&entry.name));
        // A symlink that cannot be made fails the restore; a special file
        // (which needs privileges) is a warning.
        if let (Err(e), Payload::Symlink(_)) = (&made, &entry.payload) {
            return Err(Error::io(
                shown(),
                std::io::Error::new(e.kind(), e.to_string()),
            ));
        }
        if let Err(e) = made {
            let message = format!("{}: cannot create special file: {e}", shown());
            tracing::warn!("{message}");
            self.report.warnings.push(message);
            return Ok(());
        }
        let applied = metadata::at_name(fd, &entry.name, &entry, self.policy, &shown);
        self.report.add(applied);
        Ok(())
    }

    /// Writes the collected files in parallel, then the hard links, then
    /// the directories' metadata (after their contents, so their times stay).
    fn finish(&mut self) -> Result<()> {
        let files = std::mem::take(&mut self.files);
        let total = files.iter().map(|(_, e)| e.meta.size).sum();
        self.progress.set_total(files.len() as u64, total);
        let writer = Writer {
            store: self.store,
            progress: self.progress,
            dirs: &self.dirs,
            root: self.root,
            policy: self.policy,
        };
        // Small files go in batches of about SMALL_BATCH bytes whose chunks
        // are fetched together (neighbours in a pack with one read: a file
        // of one chunk would otherwise cost a request of its own); a large
        // file is a batch by itself, written by several threads.
        let results: Vec<Result<Vec<FileOutcome>>> = contents::batches(files)
            .into_par_iter()
            .map(|batch| writer.batch(batch))
            .collect();
        for (bytes, applied) in results
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
        {
            match bytes {
                Some(b) => self.report.bytes += b,
                None => self.report.files_intact += 1,
            }
            self.report.add(applied);
        }
        self.link()?;
        self.dir_metadata()
    }

    /// Makes the queued hard links, each to the first name of its inode.
    fn link(&mut self) -> Result<()> {
        let (mut from, mut to) = (DirChain::new(self.root), DirChain::new(self.root));
        for ((first_dir, first), (dir, name)) in std::mem::take(&mut self.links) {
            let a = from.enter(&self.dirs, first_dir)?;
            let b = to.enter(&self.dirs, dir)?;
            let inode = |fd, n| {
                dirfd::stat_at(fd, n)
                    .ok()
                    .flatten()
                    .map(|st| (st.st_dev, st.st_ino))
            };
            if inode(a, &first).is_some() && inode(a, &first) == inode(b, &name) {
                continue;
            }
            let first = OsStr::from_bytes(&first);
            dirfd::replacing(b, &name, || {
                linkat(a, first, b, OsStr::from_bytes(&name), AtFlags::empty())
            })
            .map_err(|e| Error::io(self.dirs.shown(dir, Some(&name)), e))?;
        }
        Ok(())
    }

    /// Sets each restored directory's metadata on its descriptor, children
    /// before parents.
    fn dir_metadata(&mut self) -> Result<()> {
        let mut chain = DirChain::new(self.root);
        for d in (1..self.dirs.nodes.len()).rev() {
            let Some(entry) = &self.dirs.nodes[d].entry else {
                continue;
            };
            let fd = chain.enter(&self.dirs, d)?;
            let shown = || self.dirs.shown(d, None);
            let applied = metadata::on_fd(fd, entry, self.policy, &shown);
            self.report.add(applied);
        }
        Ok(())
    }
}

/// Restores the tree `root` of a snapshot below `options.target`.
///
/// # Errors
/// A missing or damaged blob, a target that cannot be written, a directory
/// of the target replaced by something else during the restore, or a tree
/// deeper than [`MAX_DEPTH`] directories (`InvalidInput`).
pub fn restore(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    restore_with_progress(store, root, options, &NoProgress)
}

/// Opens the restore target (made if missing; the caller's path, so it
/// may be reached through symlinks).
fn open_target(target: &std::path::Path) -> Result<std::os::fd::OwnedFd> {
    // A file (or anything but a directory) at the target is the caller's
    // mistake, not a name clash in the repository (AlreadyExists, exit 16).
    if fs::symlink_metadata(target).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the restore target {} exists and is not a directory",
                target.display()
            ),
        ));
    }
    let err = |e| Error::io(target.display().to_string(), e);
    fs::create_dir_all(target).map_err(err)?;
    let flags =
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC;
    rustix::fs::open(target, flags, Mode::empty()).map_err(|e| err(e.into()))
}

/// [`restore`], reporting progress to `progress` (the total is set once
/// the tree has been walked, before contents are written).
///
/// # Errors
/// As [`restore`].
pub fn restore_with_progress(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let target = open_target(&options.target)?;
    let include = options
        .include
        .iter()
        .map(|p| {
            p.components()
                .skip(1)
                .map(|c| c.as_os_str().as_bytes().to_vec())
                .collect()
        })
        .collect();
    let mut r = Restorer {
        store,
        progress,
        root: target.as_fd(),
        policy: Policy::new(options.owners, options.keep_setuid),
        skip_devices: options.skip_devices,
        include,
        dirs: Dirs::new(options.target.clone()),
        first_links: HashMap::new(),
        files: Vec::new(),
        links: Vec::new(),
        report: RestoreReport::default(),
    };
    r.walk(root)?;
    // Files are written by more threads than cores when the repository
    // is remote: most of their time is waiting for reads.
    super::with_io_threads(store.read_concurrency(), || r.finish())?;
    let counted = r.report.files + r.report.dirs + r.report.others + r.report.devices_skipped;
    if counted == 0 && !options.include.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no path of the snapshot matches the includes",
        ));
    }
    Ok(r.report)
}
