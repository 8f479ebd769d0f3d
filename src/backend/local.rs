//! Local filesystem backend. Writes go to a hidden temp file in the target
//! directory, are fsynced, then hard-linked to the final name (which fails
//! if the name exists, so nothing is ever overwritten), and the directory is
//! fsynced. Hidden names (starting with '.') are never listed.
//!
//! Owned invariant: what this backend creates is private to the user who
//! runs kura, whatever the umask: every file (objects and their temporary
//! files) is created 0600 and every directory it makes (the repository
//! root on `init`, `data/xx/` on demand) 0700. Key slots are sealed by a
//! password, but a readable slot lets any local user guess that password
//! offline. A root directory that already exists keeps its mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, ObjectInfo, check_path, check_range, oversized, within_limit};
use crate::error::{Error, ErrorKind, Result};

/// Mode of every file this backend creates (before the umask, which can
/// only take bits away).
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory this backend creates.
pub const DIR_MODE: u32 = 0o700;

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet: the first
    /// write creates it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn list_into(&self, dir: &Path, rel: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => return Ok(()),
            Err(e) => return Err(storage_io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| storage_io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted between the directory read and this stat (a
                // prune sweeping a record): not listed, as if read after.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage_io(format!("stat {name}"), e)),
            };
            let child = format!("{rel}/{name}");
            if meta.is_dir() && !super::is_object_name(name) {
                self.list_into(&entry.path(), &child, out)?;
            } else {
                // A FIFO, socket, device or directory at an object's name
                // is listed (size 0) so that readers meet it and report it
                // as damage to that object instead of never seeing it.
                out.push(ObjectInfo {
                    path: child,
                    size: if meta.is_file() { meta.len() } else { 0 },
                });
            }
        }
        Ok(())
    }
}

/// Opens an object for reading without ever blocking on what is not a
/// regular file: `O_NONBLOCK` (a FIFO would block the open until a writer
/// came), then `fstat` on the descriptor. Anything but a regular file at an
/// object's name is damage to that object.
fn open_regular(full: &Path) -> Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(full)
        .map_err(|e| storage_io(full.display().to_string(), e))?;
    let meta = file
        .metadata()
        .map_err(|e| storage_io(full.display().to_string(), e))?;
    if !meta.is_file() {
        return Err(Error::corrupt(format!(
            "{} is not a regular file",
            full.display()
        )));
    }
    Ok(file)
}

/// Fsyncs a directory so a new name in it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        if !self.root.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{}: no such directory", self.root.display()),
            ));
        }
        let mut out = Vec::new();
        self.list_into(&self.full(dir), dir, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let full = self.full(path);
        let ctx = || full.display().to_string();
        let mut file = open_regular(&full)?;
        let Some(range) = range else {
            // Sized from the start: one allocation, no regrowth copies.
            let len = file.metadata().map_err(|e| storage_io(ctx(), e))?.len();
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut out)
                .map_err(|e| storage_io(ctx(), e))?;
            return Ok(out);
        };
        let len = file.metadata().map_err(|e| storage_io(ctx(), e))?.len();
        check_range(path, &range, len)?;
        file.seek(SeekFrom::Start(range.start))
            .map_err(|e| storage_io(ctx(), e))?;
        let mut out = vec![0u8; usize::try_from(range.end - range.start).unwrap_or(usize::MAX)];
        file.read_exact(&mut out)
            .map_err(|e| storage_io(ctx(), e))?;
        Ok(out)
    }

    /// `fstat` on the open descriptor first; the read then stops at
    /// `limit + 1` bytes whatever the file grew to meanwhile.
    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let full = self.full(path);
        let ctx = || full.display().to_string();
        let file = open_regular(&full)?;
        let len = file.metadata().map_err(|e| storage_io(ctx(), e))?.len();
        if len > limit {
            return Err(oversized(path, Some(len), limit));
        }
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| storage_io(ctx(), e))?;
        within_limit(path, out, limit)
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        check_path(path)?;
        let full = self.full(path);
        let dir = full
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        let name = full
            .file_name()
            .and_then(|n| n.to_str())
            .expect("checked path");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| storage_io(format!("creating {}", dir.display()), e))?;
        let temp = dir.join(format!(
            ".{name}.tmp-{}",
            hex::encode(crate::algorithms::crypto::random_array::<8>())
        ));
        let result = write_temp(&temp, data).and_then(|()| publish(&temp, &full));
        let _ = fs::remove_file(&temp);
        result.map_err(|e| storage_io(format!("writing {}", full.display()), e))?;
        sync_dir(&dir).map_err(|e| storage_io(format!("syncing {}", dir.display()), e))
    }

    fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path);
        match fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_io(format!("deleting {}", full.display()), e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = 0;
        remove_temporaries(&self.root, cutoff, &mut removed)?;
        Ok(removed)
    }
}

/// Removes this backend's temporary files (`.NAME.tmp-HEX`) last modified
/// before `cutoff`, below `dir`.
fn remove_temporaries(dir: &Path, cutoff: std::time::SystemTime, removed: &mut u64) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage_io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| storage_io(format!("listing {}", dir.display()), e))?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(storage_io(format!("stat {}", entry.path().display()), e)),
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if meta.is_dir() && !name.starts_with('.') {
            remove_temporaries(&entry.path(), cutoff, removed)?;
        } else if meta.is_file()
            && name.starts_with('.')
            && name.contains(".tmp-")
            && meta.modified().is_ok_and(|m| m < cutoff)
        {
            match fs::remove_file(entry.path()) {
                Ok(()) => *removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(storage_io(
                        format!("removing {}", entry.path().display()),
                        e,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Bytes written to a file per system call.
const WRITE_BUFFER: usize = 1 << 20;

fn write_temp(temp: &Path, data: &mut dyn Read) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(temp)?;
    // Through a 1 MiB buffer: `io::copy` from a `dyn Read` alone writes
    // 8 KiB at a time, a thousand system calls for a pack.
    io::copy(
        &mut io::BufReader::with_capacity(WRITE_BUFFER, data),
        &mut file,
    )?;
    file.flush()?;
    file.sync_all()
}

/// Gives the temp file its final name without ever replacing an object: a
/// hard link fails if the name exists. Filesystems without hard links fall
/// back to check-then-rename, which is create-only only without racing
/// writers (documented in format-spec/07-layout-and-writes.md).
fn publish(temp: &Path, full: &Path) -> io::Result<()> {
    match fs::hard_link(temp, full) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if full.exists() => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Err(_) => fs::rename(temp, full),
    }
}

/// [`Error::io`] for the repository's own files: a permission the file
/// system refuses is [`ErrorKind::AccessDenied`] (exit 17), as a refusal
/// of remote storage is, not a plain I/O error.
fn storage_io(context: impl Into<String>, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        Error::with_source(ErrorKind::AccessDenied, context, err)
    } else {
        Error::io(context, err)
    }
}
