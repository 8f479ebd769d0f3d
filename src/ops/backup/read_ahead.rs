//! Operations layer, part of `backup`: small files read, cut and hashed
//! several at once, ahead of the walk.
//!
//! The walk visits files one after another; for each small file it would
//! open, read, cut and hash it on its own thread while the pool seals
//! what came before. Here, once a directory is listed, its small files
//! (at most [`AHEAD_FILE_MAX`] bytes, no holes) are handed to worker
//! threads in walk order. A worker `lstat`s the file, skips it if it
//! looks unchanged (size, times and inode as the parent snapshot or the
//! files cache has them: the walk reuses those without reading), else
//! reads it whole ([`read_whole`]) and cuts and hashes it
//! ([`ChunkStore::prepare`]). Nothing is stored by a worker: the walk
//! takes each prepared file in its own order and puts it
//! ([`ChunkStore::put_prepared`]), so the snapshot, the chunks' packing
//! and the compression groups are those of a walk without workers.
//!
//! What the walk takes is used only if the worker's `lstat` agrees with
//! the walk's own (size, times, inode); otherwise the walk reads the file
//! itself, as it does any file a worker has not reached. Work ahead is
//! bounded by [`AHEAD_BYTES`] of prepared bytes and [`AHEAD_FILES`]
//! files not yet taken, and the plan by [`PLAN_MAX`] names a directory;
//! a directory's leftovers are dropped when the walk leaves it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::chunkstore::{ChunkStore, Prepared};
use crate::format::tree::Metadata;
use crate::snapshot::files_cache::CachedFile;
use crate::source::file::{FileRead, read_whole};

/// Files larger than this are read by the walk itself (their chunks are
/// searched and hashed in parallel there).
pub const AHEAD_FILE_MAX: u64 = 1 << 20;
/// Prepared bytes not yet taken by the walk, at most.
pub const AHEAD_BYTES: usize = 4 << 20;
/// Files prepared and not yet taken, at most.
pub const AHEAD_FILES: usize = 1024;
/// Names of one directory planned at most, the first in walk order (the
/// rest are read by the walk): a directory of a million files costs this
/// many candidates' memory, not a million.
pub const PLAN_MAX: usize = 4096;

/// What identifies one version of a file, as the walk's reuse rules see
/// it: size, mtime, ctime and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
}

impl Stamp {
    /// A tree entry's (what the parent snapshot recorded).
    pub fn of_entry(meta: &Metadata) -> Self {
        Self {
            size: meta.size,
            mtime: meta.mtime,
            ctime: meta.ctime,
            ino: meta.ino,
        }
    }

    /// A files cache record's.
    pub fn of_cached(c: &CachedFile) -> Self {
        Self {
            size: c.size,
            mtime: c.mtime,
            ctime: c.ctime,
            ino: c.ino,
        }
    }

    /// An `lstat`'s, as `source::read_metadata` records it.
    pub fn of(md: &fs::Metadata) -> Self {
        let nsec = |n: i64| u32::try_from(n).unwrap_or(0);
        Self {
            size: md.len(),
            mtime: (md.mtime(), nsec(md.mtime_nsec())),
            ctime: (md.ctime(), nsec(md.ctime_nsec())),
            ino: md.ino(),
        }
    }
}

/// A file of a listed directory, for a worker.
pub struct Candidate {
    pub path: PathBuf,
    /// The version the walk would reuse without reading, if it knows one.
    pub known: Option<Stamp>,
}

/// A file read by a worker: its content cut and hashed, or why it could
/// not be read.
pub type Read = std::result::Result<(Prepared, FileRead), String>;

/// A candidate a worker read, as `stamp` says it was when the worker
/// found it.
struct Done(Stamp, Read);

impl Done {
    /// Bytes it holds.
    fn bytes(&self) -> usize {
        self.1.as_ref().map_or(0, |(prepared, _)| prepared.len())
    }
}

#[derive(Default)]
struct State {
    /// Not started, in the order the walk will want them, each with the
    /// directory it came from.
    queue: VecDeque<(u64, Candidate)>,
    /// Being read.
    running: HashSet<PathBuf>,
    /// Done and not yet taken.
    done: HashMap<PathBuf, (u64, Done)>,
    /// Bytes prepared in `done`.
    done_bytes: usize,
    /// Directories whose files are still wanted.
    live: HashSet<u64>,
    /// Workers waiting for a candidate or for room.
    idle: usize,
    /// The walk waits for a file being read.
    walk_waits: bool,
    next_dir: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Workers wait here for a candidate and for room.
    work: Condvar,
    /// The walk waits here for a file being read.
    done: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The walk's side of the read-ahead; its workers run while [`run`]'s
/// closure does.
#[derive(Clone)]
pub struct ReadAhead {
    shared: Arc<Shared>,
}

/// Runs `walk` with a [`ReadAhead`] served by `workers` threads preparing
/// files for `store` (none: a read-ahead that never reads ahead).
pub fn run<T>(store: &ChunkStore<'_>, workers: usize, walk: impl FnOnce(&ReadAhead) -> T) -> T {
    let ahead = ReadAhead {
        shared: Arc::new(Shared {
            state: Mutex::new(State {
                closed: workers == 0,
                ..State::default()
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }),
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let shared = Arc::clone(&ahead.shared);
            scope.spawn(move || work(store, &shared));
        }
        let out = walk(&ahead);
        lock(&ahead.shared.state).closed = true;
        ahead.shared.work.notify_all();
        out
    })
}

/// A worker: prepares candidates until the read-ahead closes.
fn work(store: &ChunkStore<'_>, shared: &Shared) {
    loop {
        let (dir, candidate) = {
            let mut state = lock(&shared.state);
            loop {
                if state.closed {
                    return;
                }
                let room = state.done_bytes < AHEAD_BYTES
                    && state.done.len() + state.running.len() < AHEAD_FILES;
                if room && let Some(next) = state.queue.pop_front() {
                    state.running.insert(next.1.path.clone());
                    break next;
                }
                state.idle += 1;
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.idle -= 1;
            }
        };
        // A worker that panicked would leave the walk waiting for its
        // file: the walk reads that file itself instead (and meets the
        // same panic on its own thread, where it ends the backup).
        let done =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(store, &candidate)))
                .unwrap_or(None);
        let mut state = lock(&shared.state);
        state.running.remove(&candidate.path);
        // A file not read is not kept: the walk, finding nothing, reads
        // it itself if it must.
        if let Some(done) = done.filter(|_| state.live.contains(&dir)) {
            state.done_bytes += done.bytes();
            state.done.insert(candidate.path, (dir, done));
        }
        // Wake-ups cost more than small files: only a waiting walk is woken.
        if state.walk_waits {
            shared.done.notify_one();
        }
    }
}

/// Reads and prepares a candidate, unless it is not a small regular file
/// or looks unchanged.
fn prepare(store: &ChunkStore<'_>, candidate: &Candidate) -> Option<Done> {
    let md = fs::symlink_metadata(&candidate.path).ok()?;
    let stamp = Stamp::of(&md);
    if !md.is_file() || candidate.known == Some(stamp) {
        return None;
    }
    let read = read_whole(&candidate.path, &md, AHEAD_FILE_MAX)?;
    Some(Done(
        stamp,
        read.map(|(data, file)| (store.prepare(data), file)),
    ))
}

impl ReadAhead {
    /// Queues the files of one directory, in the order the walk will visit
    /// them, before whatever was queued (the walk finishes this directory
    /// before it returns to the one above); returns the directory's
    /// number for [`Self::forget`]. `None` when nothing reads ahead.
    pub fn plan(&self, files: Vec<Candidate>) -> Option<u64> {
        let mut state = lock(&self.shared.state);
        if state.closed || files.is_empty() {
            return None;
        }
        let dir = state.next_dir;
        state.next_dir += 1;
        state.live.insert(dir);
        for c in files.into_iter().rev() {
            state.queue.push_front((dir, c));
        }
        let idle = state.idle > 0;
        drop(state);
        if idle {
            self.shared.work.notify_all();
        }
        Some(dir)
    }

    /// What a worker read of `path`, if one did and found the version the
    /// walk found (`stamp`); `None`: the walk reads it itself. Waits for a
    /// worker reading it now.
    pub fn take(&self, path: &Path, stamp: Stamp) -> Option<Read> {
        let mut state = lock(&self.shared.state);
        loop {
            if let Some((_, done)) = state.done.remove(path) {
                state.done_bytes -= done.bytes();
                // A worker may be waiting for the room this made.
                let idle = state.idle > 0 && !state.queue.is_empty();
                drop(state);
                if idle {
                    self.shared.work.notify_one();
                }
                let Done(found, read) = done;
                return (found == stamp).then_some(read);
            }
            if !state.running.contains(path) {
                // Not reached yet: the walk reads it; no worker will.
                if let Some(at) = state.queue.iter().position(|(_, c)| c.path == path) {
                    state.queue.remove(at);
                }
                return None;
            }
            state.walk_waits = true;
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.walk_waits = false;
        }
    }

    /// Drops what is left of directory `dir` (files the walk did not take:
    /// unchanged ones, or gone).
    pub fn forget(&self, dir: u64) {
        let mut state = lock(&self.shared.state);
        state.live.remove(&dir);
        state.queue.retain(|(d, _)| *d != dir);
        let mut freed = 0;
        state.done.retain(|_, (d, done)| {
            let keep = *d != dir;
            if !keep {
                freed += done.bytes();
            }
            keep
        });
        state.done_bytes -= freed;
        let idle = state.idle > 0;
        drop(state);
        if idle {
            self.shared.work.notify_all();
        }
    }
}
