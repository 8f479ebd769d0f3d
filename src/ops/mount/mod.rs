//! Operations layer: `mount`, the repository as a read-only file system
//! (FUSE), so any program can browse every point in time. Owns the layout
//! and the rules of that view:
//!
//! - Layout. `snapshots/<time>_<id>/` (time in UTC, `2026-12-04T03:00:00Z`,
//!   and the first 8 hex digits of the id), `hosts/<host>/<time>/`,
//!   `tags/<tag>/<time>/` (two snapshots of the same second get `_<id>`),
//!   `latest` (a symlink to the newest snapshot's directory) and
//!   `by-date/YYYY-MM-DD/`: the snapshot in effect at the end of that UTC
//!   day ([`crate::snapshot::select::newest_in`]), listed for every day from
//!   the oldest snapshot's to the newest's; a later date is looked up too.
//!   Only the snapshots the [`Filter`] accepts appear.
//! - New snapshots appear without remounting: the snapshot list (and the
//!   index, so their data is found) is read again when a directory above
//!   the snapshots is listed, or a name there is not found, and the last
//!   reading is older than [`MountOptions::refresh`].
//! - Metadata as stored: mode, owner, times, symlink targets, device
//!   numbers, hard link counts (`nlink` as stored; each name has its own
//!   inode), extended attributes. Synthesized directories are mode 0555,
//!   owned by the mounting user, dated by their snapshot.
//! - Read-only: the mount is `ro,nodev,nosuid`; every write operation is
//!   EROFS; nothing in the repository is written (tree blobs read go into
//!   the local tree cache, as for every reader). Device nodes are listed
//!   with their type and number; opening one fails with EACCES (`nodev`).
//! - Reads are lazy ([`content`]): a file's extents are resolved at open,
//!   or, for a file of several extent lists, one list at a time as reads
//!   and seeks reach them ([`spans`]: a span table and a few decoded lists
//!   per open file, whatever its size); chunks fetched with the chunk store's batched ranged reads, kept in a
//!   bounded decrypted-chunk cache (LRU), and read ahead while reads are
//!   sequential. Holes read as zeros and are found by `SEEK_HOLE` /
//!   `SEEK_DATA`.
//! - Damage stays local: a chunk that cannot be read (a missing or damaged
//!   pack) fails that read with EIO and a warning naming the file, the
//!   chunk and its pack; every other file reads.
//! - Mount points: one that is missing, not a directory, not empty or
//!   already a mount point is refused with [`ErrorKind::InvalidInput`]
//!   before anything is mounted. The mount ends when the caller's
//!   [`Unmount`] is called (the CLI does on SIGINT/SIGTERM) or someone
//!   unmounts it (`fusermount -u`); [`mount`] then returns.

mod catalog;
mod content;
mod fuse;
mod inodes;
mod spans;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use crate::chunkstore::index::ChunkIndex;
use crate::chunkstore::{ChunkStore, ChunkStoreOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ChunkId;
use crate::repository::Repository;
use crate::snapshot::select::Filter;

pub use catalog::{day_name, snapshot_dir_name};
use fuse::{Job, KuraFs};
use inodes::View;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Which snapshots appear.
    pub filter: Filter,
    /// Let other users than the mounting one in (`allow_other`; for a
    /// user other than root, `/etc/fuse.conf` must say `user_allow_other`).
    pub allow_other: bool,
    /// Bytes of decrypted chunks kept in memory.
    pub cache_bytes: usize,
    /// Bytes read ahead of a sequential reader.
    pub readahead_bytes: u64,
    /// How old the snapshot list may get before a listing reads it again;
    /// zero reads it at every listing.
    pub refresh: Duration,
    /// Threads answering requests (reads of different files run at once).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            allow_other: false,
            cache_bytes: 256 << 20,
            readahead_bytes: 16 << 20,
            refresh: Duration::from_secs(5),
            threads: 4,
        }
    }
}

/// Ends a mount from another thread: [`mount`] returns soon after.
pub struct Unmount(fuser::SessionUnmounter);

impl Unmount {
    /// Unmounts (once; later calls do nothing).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the kernel refuses (the mount is busy).
    pub fn unmount(&mut self) -> Result<()> {
        self.0
            .unmount()
            .map_err(|e| Error::io("unmounting the repository", e))
    }
}

/// Checks that `mountpoint` can take a mount: an empty directory that is
/// not a mount point already.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming what is wrong.
pub fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("mount point {}: {why}", mountpoint.display()),
        )
    };
    let meta = std::fs::metadata(mountpoint).map_err(|e| bad(&e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory"));
    }
    let absolute = std::fs::canonicalize(mountpoint).map_err(|e| bad(&e.to_string()))?;
    if is_mount_point(&absolute, meta.dev()) {
        return Err(bad("already a mount point (busy)"));
    }
    let mut entries = std::fs::read_dir(mountpoint).map_err(|e| bad(&e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad("not empty"));
    }
    Ok(())
}

/// Whether `dir` (absolute) is the root of a mount: in `/proc/self/mounts`,
/// or on another device than its parent.
fn is_mount_point(dir: &Path, dev: u64) -> bool {
    let listed = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .any(|m| unescape_mount_path(m) == dir)
    });
    let parent_dev = dir
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    listed || parent_dev.is_some_and(|p| p != dev)
}

/// A mount point as `/proc/self/mounts` writes it (space, tab, newline and
/// backslash as octal escapes).
fn unescape_mount_path(text: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Mounts `repo` at `mountpoint` and serves it until it is unmounted.
/// `on_mounted` gets the handle that ends the mount once it is in place.
/// Reads go through a chunk store over `index` (synced by the caller;
/// synced again when the snapshot list is refreshed).
///
/// # Errors
/// As [`check_mountpoint`]; [`ErrorKind::Io`] if the kernel or
/// `fusermount` refuses the mount; a failed first snapshot listing.
pub fn mount(
    repo: &Repository,
    index: &ChunkIndex,
    mountpoint: &Path,
    options: &MountOptions,
    on_mounted: impl FnOnce(Unmount),
) -> Result<()> {
    check_mountpoint(mountpoint)?;
    let store = ChunkStore::new(repo, index, ChunkStoreOptions::default());
    let view = View::new(repo, index, &store, options)?;
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Mutex::new(queue);
    let (prefetch, prefetches) = mpsc::channel::<Vec<ChunkId>>();
    let prefetches = Mutex::new(prefetches);
    *lock(&view.prefetch) = Some(prefetch);
    std::thread::scope(|s| {
        for _ in 0..options.threads.max(1) {
            s.spawn(|| serve_queue(&queue, |job: Job| job(&view)));
        }
        for _ in 0..PREFETCH_THREADS {
            s.spawn(|| serve_queue(&prefetches, |ids: Vec<ChunkId>| view.prefetch(&ids)));
        }
        let served = serve(jobs, mountpoint, options, on_mounted);
        // The session held the only job sender; this is the last prefetch
        // one: the threads end with the queues.
        lock(&view.prefetch).take();
        served
    })
}

/// Threads fetching readahead windows (decryption in parallel with the
/// reader; reads never wait behind this work in the request queue).
const PREFETCH_THREADS: usize = 2;

/// Mounts and answers requests by queuing them as `jobs` until unmounted.
fn serve(
    jobs: mpsc::Sender<Job>,
    mountpoint: &Path,
    options: &MountOptions,
    on_mounted: impl FnOnce(Unmount),
) -> Result<()> {
    let fs = KuraFs::new(jobs);
    let mut session = fuser::Session::new(fs, mountpoint, &fuse::config(options))
        .map_err(|e| Error::io(format!("mounting at {}", mountpoint.display()), e))?;
    on_mounted(Unmount(session.unmount_callable()));
    session.run().map_err(|e| Error::io("serving the mount", e))
}

/// Runs `work` on each item of `queue` until the queue closes. A panic
/// in one item (its request answers EIO) does not end the thread.
fn serve_queue<T>(queue: &Mutex<mpsc::Receiver<T>>, work: impl Fn(T)) {
    loop {
        let item = lock(queue).recv();
        let Ok(item) = item else {
            return;
        };
        let run = std::panic::AssertUnwindSafe(|| work(item));
        if std::panic::catch_unwind(run).is_err() {
            tracing::warn!("a mount request failed (a bug): answered EIO");
        }
    }
}

/// Shared by the modules below: a poisoned lock still holds a usable value
/// (a panicking request must not stop the mount).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_point_paths_are_unescaped_as_the_kernel_escapes_them() {
        assert_eq!(
            unescape_mount_path("/tmp/a\\040b\\011c\\134d"),
            PathBuf::from("/tmp/a b\tc\\d")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn a_mount_point_must_be_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        check_mountpoint(dir.path()).unwrap();
        let missing = dir.path().join("missing");
        let e = check_mountpoint(&missing).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let e = check_mountpoint(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let e = check_mountpoint(&dir.path().join("f")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = check_mountpoint(Path::new("/proc")).unwrap_err();
        assert!(e.to_string().contains("mount point"), "{e}");
    }
}
