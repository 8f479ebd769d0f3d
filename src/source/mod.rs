//! Sources layer (4, beside snapshot): reads what is backed up from the
//! local system: the one file-system walker ([`walk`]) with its excludes,
//! regular files by data range ([`file`]), disk images ([`image`]), a
//! command's output ([`command`]), the metadata of files (owners, modes,
//! times, xattrs) and where a sparse file's data lies. Nothing here writes:
//! content goes to a [`ContentSink`] the operation provides, so this layer
//! knows nothing of the chunk store or of snapshots.

pub mod command;
pub mod exclude;
pub mod file;
pub mod image;
pub mod scan;
pub mod walk;

use std::collections::HashMap;
use std::fs::{self, File, Metadata as FsMetadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User, Whence, lseek};

use crate::error::Result;
use crate::format::tree::{Metadata, Payload, Xattr};

/// Where the content a source reads goes (for a backup, the chunk store),
/// in order: data and holes as the file has them. The sink keeps the
/// extents (a source holds none, so a huge file or image costs no memory
/// per chunk here).
pub trait ContentSink {
    /// Stores what `data` yields up to its end, as the next data extents;
    /// returns the bytes stored.
    ///
    /// # Errors
    /// The store's, or `data`'s read errors.
    fn data(&mut self, data: &mut (dyn Read + Send)) -> Result<u64>;

    /// The next `len` bytes are zeros, recorded as a hole, not stored.
    ///
    /// # Errors
    /// The store's (recording may store a full extent list).
    fn hole(&mut self, len: u64) -> Result<()>;
}

/// Owner and group names by id, looked up once each.
#[derive(Default)]
pub struct NameCache {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Vec<u8> {
        cached_name(&mut self.users, uid, |id| {
            Some(User::from_uid(Uid::from_raw(id)).ok()??.name)
        })
    }

    fn group(&mut self, gid: u32) -> Vec<u8> {
        cached_name(&mut self.groups, gid, |id| {
            Some(Group::from_gid(Gid::from_raw(id)).ok()??.name)
        })
    }
}

/// The name of `id` from `cache`, looked up once with `lookup`; empty when
/// unknown or too long for a tree entry (255 bytes).
fn cached_name(
    cache: &mut HashMap<u32, Vec<u8>>,
    id: u32,
    lookup: impl FnOnce(u32) -> Option<String>,
) -> Vec<u8> {
    cache
        .entry(id)
        .or_insert_with(|| {
            lookup(id)
                .map(String::into_bytes)
                .filter(|n| n.len() < 256)
                .unwrap_or_default()
        })
        .clone()
}

/// The entry metadata of `path` (whose `lstat` is `md`). Extended attributes
/// that cannot be read are left out and reported in the error list.
pub fn read_metadata(
    path: &Path,
    md: &FsMetadata,
    names: &mut NameCache,
) -> (Metadata, Option<io::Error>) {
    let (xattrs, xattr_error) = match read_xattrs(path) {
        Ok(x) => (x, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let nsec = |n: i64| u32::try_from(n).unwrap_or(0);
    let meta = Metadata {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: names.user(md.uid()),
        group: names.group(md.gid()),
        mtime: (md.mtime(), nsec(md.mtime_nsec())),
        ctime: (md.ctime(), nsec(md.ctime_nsec())),
        dev: md.dev(),
        ino: md.ino(),
        nlink: u32::try_from(md.nlink()).unwrap_or(u32::MAX),
        size: if md.file_type().is_file() {
            md.len()
        } else {
            0
        },
        xattrs,
    };
    (meta, xattr_error)
}

/// The entry metadata of `path`, or the default if it cannot be read;
/// extended attributes that cannot be read are left out silently. For
/// the directories leading to a backed-up path.
pub fn lstat_metadata(path: &Path, names: &mut NameCache) -> Metadata {
    fs::symlink_metadata(path)
        .map(|md| read_metadata(path, &md, names).0)
        .unwrap_or_default()
}

/// The payload of a path that is neither a directory nor a regular file
/// (whose `lstat` is `lstat`): a symlink's target, a device's number, or
/// a fifo or socket.
///
/// # Errors
/// The symlink's target cannot be read.
pub fn special_payload(path: &Path, lstat: &FsMetadata) -> io::Result<Payload> {
    let ft = lstat.file_type();
    Ok(if ft.is_symlink() {
        Payload::Symlink(fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    } else if ft.is_char_device() {
        Payload::CharDevice(lstat.rdev())
    } else if ft.is_block_device() {
        Payload::BlockDevice(lstat.rdev())
    } else if ft.is_fifo() {
        Payload::Fifo
    } else {
        Payload::Socket
    })
}

/// Extended attributes of `path` itself (not of a symlink's target),
/// sorted by name. A filesystem without xattrs gives none.
///
/// # Errors
/// Reading a listed attribute fails.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A file of `size` bytes as one data range (none if it is empty).
pub fn whole_range(size: u64) -> Vec<(u64, u64)> {
    if size == 0 {
        Vec::new()
    } else {
        vec![(0, size)]
    }
}

/// The data ranges `(offset, length)` of a file of `size` bytes, from
/// `SEEK_DATA`/`SEEK_HOLE`; the whole file when the filesystem cannot say.
/// The search leaves the file's position anywhere.
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let whole = || whole_range(size);
    let Ok(end) = i64::try_from(size) else {
        return whole();
    };
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < end {
        let data = match lseek(file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(_) => return whole(),
        };
        let hole = match lseek(file, data, Whence::SeekHole) {
            Ok(h) => h.min(end),
            Err(_) => return whole(),
        };
        if hole > data {
            // Both are file offsets returned by lseek, so non-negative.
            out.push((data.unsigned_abs(), (hole - data).unsigned_abs()));
        }
        pos = hole.max(data + 1);
    }
    out
}
