//! `dump` as tar: a directory of a snapshot, or the whole snapshot, as a
//! POSIX.1-2001 (pax) tar stream. The ustar header carries what fits; pax
//! records carry long or non-UTF-8 paths and link targets, large ids, sizes
//! and times, long owner names, and xattrs as `SCHILY.xattr.NAME` (as GNU
//! tar and bsdtar read them). Paths are the snapshot's own without the
//! leading `/`, so extracting gives the layout `restore` gives. Every chunk
//! is authenticated before its bytes are written; holes are written as
//! zeros. A second path of a multiply linked file becomes a hard link entry.
//! Sockets have no tar form and are left out (reported). The tree is walked
//! with `snapshot::walk`: each entry is written when the walk reaches it, a
//! directory before what is below it.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use tar::{Builder, EntryType, Header};

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Content, Entry, Extent, Metadata, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree;
use crate::snapshot::walk::{TreeWalk, Visit, Visitor, path_of};

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct TarOptions {
    /// The directory (or file) to dump, as names from the snapshot's root;
    /// empty for the whole snapshot.
    pub path: Vec<Vec<u8>>,
}

/// What a dump wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TarReport {
    pub files: u64,
    pub dirs: u64,
    /// Second and later paths of multiply linked files.
    pub hard_links: u64,
    /// Symlinks, devices and FIFOs.
    pub others: u64,
    /// File content written, holes included.
    pub bytes: u64,
    /// Paths (without the leading `/`) of entries tar cannot hold: sockets.
    #[serde(serialize_with = "crate::ops::serialize_paths")]
    pub skipped: Vec<Vec<u8>>,
}

/// Writes the tar stream of `options.path` below the snapshot root tree
/// `root` to `out`. On error the stream is left without its end-of-archive
/// blocks, so a reader sees it truncated rather than complete.
///
/// # Errors
/// [`ErrorKind::NotFound`] if the path is not in the snapshot; missing or
/// damaged blobs; `out`'s error (a broken pipe included, as an I/O error
/// whose source is the `io::Error`).
pub fn dump_tar(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &TarOptions,
    out: &mut dyn Write,
) -> Result<TarReport> {
    let mut w = TarWriter {
        store,
        builder: Builder::new(out),
        first_links: HashMap::new(),
        report: TarReport::default(),
    };
    let walked = w.walk(root, &options.path);
    let TarWriter {
        builder, report, ..
    } = w;
    match walked {
        Ok(()) => {
            builder.into_inner().map_err(write_err)?;
            Ok(report)
        }
        Err(e) => {
            // Dropping the builder would write the end-of-archive blocks.
            std::mem::forget(builder);
            Err(e)
        }
    }
}

fn write_err(e: io::Error) -> Error {
    Error::io("writing the tar stream", e)
}

/// Largest value of a ustar numeric field of `digits` octal digits.
const fn octal_max(digits: u32) -> u64 {
    (1 << (3 * digits)) - 1
}

/// pax extended header records (`"%d %s=%s\n"`, the length counting
/// itself). Values that are not UTF-8 are written as they are, as GNU tar
/// writes them (it warns about `hdrcharset`, which would declare them).
#[derive(Default)]
struct Pax(Vec<u8>);

impl Pax {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        record(&mut self.0, key, value);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base;
    loop {
        let next = base + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Copies as much of `bytes` as fits into a header field (NUL-padded).
fn put(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&bytes[..n]);
}

/// A ustar header with every numeric field set (readers may parse any).
fn new_header() -> Header {
    let mut h = Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    let u = ustar(&mut h);
    u.set_device_major(0);
    u.set_device_minor(0);
    h
}

fn ustar(h: &mut Header) -> &mut tar::UstarHeader {
    h.as_ustar_mut().expect("headers are created as ustar")
}

/// Puts a path or link target into its 100-byte field, and into a pax
/// record as well when it does not fit or is not UTF-8.
fn put_name(h: &mut Header, pax: &mut Pax, key: &[u8], value: &[u8], link: bool) {
    let field = if link {
        &mut ustar(h).linkname
    } else {
        &mut ustar(h).name
    };
    put(field, value);
    if value.len() > field.len() || std::str::from_utf8(value).is_err() {
        pax.push(key, value);
    }
}

/// Mode, owner and time, with pax records for what ustar cannot hold.
fn put_metadata(h: &mut Header, pax: &mut Pax, m: &Metadata) {
    h.set_mode(m.mode & 0o7777);
    for (key, id) in [(&b"uid"[..], m.uid), (b"gid", m.gid)] {
        if u64::from(id) > octal_max(7) {
            pax.push(key, id.to_string().as_bytes());
        }
    }
    h.set_uid(u64::from(m.uid));
    h.set_gid(u64::from(m.gid));
    for (key, name, user) in [(&b"uname"[..], &m.user, true), (b"gname", &m.group, false)] {
        let u = ustar(h);
        let field = if user { &mut u.uname } else { &mut u.gname };
        if name.len() < field.len() {
            put(field, name); // NUL-terminated, unlike the path fields
        } else {
            pax.push(key, name);
        }
    }
    let secs = m.mtime.0;
    match u64::try_from(secs) {
        Ok(s) if s <= octal_max(11) => h.set_mtime(s),
        _ => {
            h.set_mtime(u64::try_from(secs).unwrap_or(0));
            pax.push(b"mtime", secs.to_string().as_bytes());
        }
    }
    for x in &m.xattrs {
        pax.push(&[&b"SCHILY.xattr."[..], &x.name].concat(), &x.value);
    }
}

/// A file's content as a reader: chunks fetched (and authenticated) one at
/// a time, holes as zeros. A store error is kept for the caller, since the
/// tar builder only passes an `io::Error` through.
struct ContentReader<'a, 's> {
    store: &'a ChunkStore<'s>,
    /// The file's extent lists, read one at a time (checked as they come,
    /// the sizes adding up to the file's after the last).
    lists: tree::ExtentLists<'a, 's>,
    extents: std::vec::IntoIter<Extent>,
    chunk: Vec<u8>,
    pos: usize,
    hole: u64,
    failed: Option<Error>,
}

impl ContentReader<'_, '_> {
    fn next_extent(&mut self) -> Result<bool> {
        let next = match self.extents.next() {
            Some(e) => Some(e),
            None => match self.lists.next() {
                None => None,
                Some(list) => {
                    self.extents = list?.into_iter();
                    return Ok(true);
                }
            },
        };
        match next {
            None => return Ok(false),
            Some(Extent::Hole { len }) => self.hole = len,
            Some(Extent::Data { id, len }) => {
                let data = self.store.get(&id)?;
                if data.len() != len as usize {
                    return Err(Error::corrupt(format!(
                        "chunk {id} has another length than its tree says"
                    )));
                }
                self.chunk = data;
                self.pos = 0;
            }
        }
        Ok(true)
    }
}

impl Read for ContentReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.hole > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.hole).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                self.hole -= n as u64;
                return Ok(n);
            }
            if self.pos < self.chunk.len() {
                let n = buf.len().min(self.chunk.len() - self.pos);
                buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.next_extent() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.failed = Some(e);
                    return Err(io::Error::other("reading a chunk failed"));
                }
            }
        }
    }
}

struct TarWriter<'s, 'r, 'o> {
    store: &'s ChunkStore<'r>,
    builder: Builder<&'o mut dyn Write>,
    /// First path written of each multiply linked file, by (dev, ino).
    first_links: HashMap<(u64, u64), Vec<u8>>,
    report: TarReport,
}

impl Visitor for TarWriter<'_, '_, '_> {
    fn entry(&mut self, path: &[u8], e: &Entry) -> Result<Visit> {
        let rel = path.strip_prefix(b"/").unwrap_or(path);
        self.write_entry(e, rel.to_vec())?;
        Ok(Visit::Descend)
    }
}

impl TarWriter<'_, '_, '_> {
    fn walk(&mut self, root: &ChunkId, path: &[Vec<u8>]) -> Result<()> {
        let mut walk = TreeWalk::new(self.store);
        if let Some((_, parents)) = path.split_last() {
            let e = tree::lookup(self.store, *root, path)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such path in the snapshot"))?;
            walk.start_entry(path_of(parents), e);
        } else {
            walk.start_tree(*root, Vec::new());
        }
        walk.run(self)
    }

    /// Writes `e` at `path` (relative); a directory's entries follow.
    fn write_entry(&mut self, e: &Entry, path: Vec<u8>) -> Result<()> {
        let mut h = new_header();
        let mut pax = Pax::default();
        put_metadata(&mut h, &mut pax, &e.meta);
        match &e.payload {
            Payload::File(content) => return self.file(&e.meta, content, h, pax, &path),
            Payload::Dir(_) => {
                h.set_entry_type(EntryType::Directory);
                let mut dir = path;
                dir.push(b'/');
                self.append(h, pax, &dir, io::empty())?;
                self.report.dirs += 1;
                return Ok(());
            }
            Payload::Symlink(target) => {
                h.set_entry_type(EntryType::Symlink);
                put_name(&mut h, &mut pax, b"linkpath", target, true);
            }
            Payload::CharDevice(rdev) | Payload::BlockDevice(rdev) => {
                h.set_entry_type(if matches!(e.payload, Payload::CharDevice(_)) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let u = ustar(&mut h);
                u.set_device_major(nix::sys::stat::major(*rdev) as u32);
                u.set_device_minor(nix::sys::stat::minor(*rdev) as u32);
            }
            Payload::Fifo => h.set_entry_type(EntryType::Fifo),
            Payload::Socket => {
                tracing::warn!(
                    "{}: a socket has no tar form; left out",
                    String::from_utf8_lossy(&path)
                );
                self.report.skipped.push(path);
                return Ok(());
            }
        }
        self.report.others += 1;
        self.append(h, pax, &path, io::empty())
    }

    fn file(
        &mut self,
        m: &Metadata,
        content: &Content,
        mut h: Header,
        mut pax: Pax,
        path: &[u8],
    ) -> Result<()> {
        if m.nlink > 1 {
            if let Some(first) = self.first_links.get(&(m.dev, m.ino)).cloned() {
                h.set_entry_type(EntryType::Link);
                put_name(&mut h, &mut pax, b"linkpath", &first, true);
                self.report.hard_links += 1;
                return self.append(h, pax, path, io::empty());
            }
            self.first_links.insert((m.dev, m.ino), path.to_vec());
        }
        h.set_entry_type(EntryType::Regular);
        h.set_size(m.size);
        if m.size > octal_max(11) {
            pax.push(b"size", m.size.to_string().as_bytes());
        }
        let mut reader = ContentReader {
            store: self.store,
            lists: tree::extent_lists(self.store, content, m.size),
            extents: Vec::new().into_iter(),
            chunk: Vec::new(),
            pos: 0,
            hole: 0,
            failed: None,
        };
        let appended = self.append(h, pax, path, &mut reader);
        if let Some(e) = reader.failed.take() {
            return Err(e);
        }
        appended?;
        self.report.files += 1;
        self.report.bytes += m.size;
        Ok(())
    }

    /// Writes the pax header (if any records), then the entry and its data.
    fn append(&mut self, mut h: Header, mut pax: Pax, path: &[u8], data: impl Read) -> Result<()> {
        put_name(&mut h, &mut pax, b"path", path, false);
        if !pax.is_empty() {
            let mut x = new_header();
            x.set_entry_type(EntryType::XHeader);
            let base = path
                .strip_suffix(b"/")
                .unwrap_or(path)
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or_default();
            put(
                &mut ustar(&mut x).name,
                &[&b"PaxHeaders/"[..], base].concat(),
            );
            x.set_mtime(h.mtime().unwrap_or(0));
            x.set_size(pax.0.len() as u64);
            x.set_cksum();
            self.builder.append(&x, &pax.0[..]).map_err(write_err)?;
        }
        h.set_cksum();
        self.builder.append(&h, data).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::Pax;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let one = |value: &[u8]| {
            let mut p = Pax::default();
            p.push(b"path", value);
            p.0
        };
        assert_eq!(one(b"a"), b"9 path=a\n");
        assert_eq!(one(b"caf\xe9"), b"13 path=caf\xe9\n");
        // 4 + 88 + 3 = 95 bytes and two digits; 91 needs three digits.
        let r = one(&[b'x'; 88]);
        assert!(r.starts_with(b"97 ") && r.len() == 97);
        let r = one(&[b'x'; 91]);
        assert!(r.starts_with(b"101 ") && r.len() == 101);
    }
}
