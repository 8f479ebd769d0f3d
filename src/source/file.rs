//! Source layer: a regular file's content, read for a backup. Only the
//! data ranges are read (`SEEK_DATA`/`SEEK_HOLE`); holes between them are
//! recorded, not read. Each range goes to a [`ContentSink`].
//!
//! Owned invariant: content handed back is what the file held from start
//! to end of the read, or the read is refused with a reason: a file that
//! shrank, grew or was modified meanwhile (size or mtime changed) is
//! reported as changed, never stored half old and half new without a word.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Result;
use crate::format::tree::Extent;
use crate::source::{ContentSink, data_ranges};

/// The extents of regular file `path` (whose `lstat` is `lstat`), its
/// data put into `sink`. The inner error is a problem with the file (a
/// warning for the caller: it could not be read, or changed while read),
/// the outer one the sink's (fatal).
///
/// # Errors
/// The sink's errors that are not the file's read errors.
pub fn read_file(
    path: &Path,
    lstat: &fs::Metadata,
    sink: &mut dyn ContentSink,
) -> Result<std::result::Result<Vec<Extent>, String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let size = lstat.len();
    let mut extents = Vec::new();
    let mut pos = 0u64;
    for (offset, len) in data_ranges(&file, size) {
        if offset > pos {
            extents.push(Extent::Hole { len: offset - pos });
            sink.hole(offset - pos);
        }
        let data = match read_range(&mut file, offset, len, sink)? {
            Ok(data) => data,
            Err(problem) => return Ok(Err(problem)),
        };
        let got: u64 = data.iter().map(Extent::len).sum();
        extents.extend(data);
        pos = offset + got;
        if got != len {
            return Ok(Err("changed while it was read (shrank)".into()));
        }
    }
    if pos < size {
        extents.push(Extent::Hole { len: size - pos });
        sink.hole(size - pos);
    }
    Ok(unchanged_since(&file, lstat).map(|()| extents))
}

/// Puts `len` bytes of `file` from `offset` into `sink`; the inner error
/// is the file's, the outer one the sink's.
fn read_range(
    file: &mut File,
    offset: u64,
    len: u64,
    sink: &mut dyn ContentSink,
) -> Result<std::result::Result<Vec<Extent>, String>> {
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        return Ok(Err(e.to_string()));
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

/// Whether open `file` still has the size and mtime of `before`.
fn unchanged_since(file: &File, before: &fs::Metadata) -> std::result::Result<(), String> {
    match file.metadata() {
        Ok(after)
            if after.len() == before.len()
                && after.mtime() == before.mtime()
                && after.mtime_nsec() == before.mtime_nsec() =>
        {
            Ok(())
        }
        Ok(_) => Err("changed while it was read".into()),
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
