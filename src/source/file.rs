//! Source layer: a regular file's content, read for a backup. Only the
//! data ranges are read (`SEEK_DATA`/`SEEK_HOLE`); holes between them are
//! recorded, not read. Each range goes to a [`ContentSink`].
//!
//! Owned invariant: content handed back is what was read, never more than
//! the size at open, and a file that shrank, grew or was modified
//! meanwhile (size or mtime changed, or fewer bytes than expected) comes
//! back with what was read and a "changed while read" reason, never stored
//! half old and half new without a word. Only a file that cannot be opened
//! or read is refused (the caller may keep an older version), and one no
//! longer the file that was found: opened without following a symlink,
//! and only if its device and inode are those of its `lstat`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Result;

use crate::source::{ContentSink, data_ranges, whole_range};

/// What was read of a regular file (its content went to the sink).
#[derive(Debug)]
pub struct FileRead {
    /// The bytes the sink was given, holes included: the size stored.
    pub size: u64,
    /// Why the content may not be one version of the file: it changed
    /// while it was read. `None` if size and mtime held throughout.
    pub changed: Option<String>,
}

/// The content of regular file `path` (whose `lstat` is `lstat`), its
/// data put into `sink`: up to the size at open, or up to where a file
/// that shrank ended. The inner error is a file that could not be opened
/// or read (a warning for the caller), the outer one the sink's (fatal).
///
/// # Errors
/// The sink's errors that are not the file's read errors.
pub fn read_file(
    path: &Path,
    lstat: &fs::Metadata,
    sink: &mut dyn ContentSink,
) -> Result<std::result::Result<FileRead, String>> {
    let mut file = match open_found(path, lstat) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let size = lstat.len();
    // A dense file needs no SEEK_DATA/SEEK_HOLE. `at_pos`: the file's
    // position is `pos` (a search for holes leaves it anywhere); a seek
    // is made only when it is not.
    let (ranges, mut at_pos) = if dense(lstat) {
        (whole_range(size), true)
    } else {
        (data_ranges(&file, size), false)
    };
    let mut pos = 0u64;
    for (offset, len) in ranges {
        if offset > pos {
            sink.hole(offset - pos)?;
        }
        let got = match read_range(&mut file, offset, len, !at_pos || offset != pos, sink)? {
            Ok(got) => got,
            Err(problem) => return Ok(Err(problem)),
        };
        at_pos = true;
        pos = offset + got;
        if got != len {
            return Ok(Ok(FileRead {
                size: pos,
                changed: Some(SHRANK.into()),
            }));
        }
    }
    if pos < size {
        sink.hole(size - pos)?;
        pos = size;
    }
    Ok(match unchanged_since(&file, lstat) {
        Ok(changed) => Ok(FileRead { size: pos, changed }),
        Err(e) => Err(e),
    })
}

/// Why a file that ended before its size at open is stored as read.
const SHRANK: &str = "changed while it was read (shrank)";

/// Whether a file's blocks cover its size: it has no hole to find (or one
/// too small to matter, read as zeros).
fn dense(lstat: &fs::Metadata) -> bool {
    lstat.blocks().saturating_mul(512) >= lstat.len()
}

/// Regular file `path` (whose `lstat` is `lstat`) read whole into memory,
/// for a caller that reads several files at once and puts each in order
/// later; `None` if it is not such a file: larger than `limit`, or with
/// fewer blocks than its size (it may have holes, which [`read_file`]
/// finds). The same rules as [`read_file`]: up to the size at open, and
/// a file that changed meanwhile comes back with a reason. The error is
/// a file that could not be opened or read.
pub fn read_whole(
    path: &Path,
    lstat: &fs::Metadata,
    limit: u64,
) -> Option<std::result::Result<(Vec<u8>, FileRead), String>> {
    let size = lstat.len();
    if size > limit || !dense(lstat) {
        return None;
    }
    Some(read_into_memory(path, lstat))
}

fn read_into_memory(
    path: &Path,
    lstat: &fs::Metadata,
) -> std::result::Result<(Vec<u8>, FileRead), String> {
    let file = open_found(path, lstat)?;
    let size = lstat.len();
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    (&file)
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    let got = data.len() as u64;
    if got < size {
        let changed = Some(SHRANK.into());
        return Ok((data, FileRead { size: got, changed }));
    }
    let changed = unchanged_since(&file, lstat)?;
    Ok((data, FileRead { size, changed }))
}

/// Puts `len` bytes of `file` from `offset` into `sink` (seeking there
/// first if `seek`: the file is elsewhere); the inner error is the
/// file's, the outer one the sink's.
fn read_range(
    file: &mut File,
    offset: u64,
    len: u64,
    seek: bool,
    sink: &mut dyn ContentSink,
) -> Result<std::result::Result<u64, String>> {
    if seek {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            return Ok(Err(e.to_string()));
        }
    }
    let mut reader = WatchedReader {
        inner: file.take(len),
        error: None,
    };
    match sink.data(&mut reader) {
        Ok(data) => Ok(Ok(data)),
        Err(_) if reader.error.is_some() => Ok(Err(reader.error.unwrap_or_default())),
        Err(e) => Err(e),
    }
}

/// Opens `path` without following a symlink, and only if it is still the
/// file `lstat` describes (same device and inode): a file replaced since
/// it was found (by a symlink to a file elsewhere, say) is not read.
fn open_found(path: &Path, lstat: &fs::Metadata) -> std::result::Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let md = file.metadata().map_err(|e| e.to_string())?;
    if md.dev() != lstat.dev() || md.ino() != lstat.ino() {
        return Err("replaced after it was found; not read".into());
    }
    Ok(file)
}

/// Why open `file` no longer has the size and mtime of `before`, if it
/// does not; the error is a failed `fstat`.
fn unchanged_since(
    file: &File,
    before: &fs::Metadata,
) -> std::result::Result<Option<String>, String> {
    match file.metadata() {
        Ok(after)
            if after.len() == before.len()
                && after.mtime() == before.mtime()
                && after.mtime_nsec() == before.mtime_nsec() =>
        {
            Ok(None)
        }
        Ok(after) if after.len() > before.len() => Ok(Some(format!(
            "changed while it was read (grew to {} bytes; the first {} stored)",
            after.len(),
            before.len()
        ))),
        Ok(_) => Ok(Some("changed while it was read".into())),
        Err(e) => Err(e.to_string()),
    }
}

/// A reader that remembers its own failure, so a failed source can be told
/// apart from a failed repository write.
struct WatchedReader<R> {
    inner: R,
    error: Option<String>,
}

impl<R: Read> Read for WatchedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| self.error = Some(e.to_string()))
    }
}
