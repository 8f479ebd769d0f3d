//! Tree blobs (format-spec/10-trees.md): directories with their entries'
//! metadata and file contents as extents, extent lists of large files, and
//! the part lists of large directories. The encoding is canonical: the
//! decoder refuses every byte string the encoder would not produce.

use crate::error::{Error, Result};
use crate::format::ByteReader;
use crate::id::ChunkId;

mod split;
pub use split::{ListCheck, check_lists, check_parts, plan_content, plan_directory};

pub const KIND_DIRECTORY: u8 = 1;
pub const KIND_EXTENT_LIST: u8 = 2;
pub const KIND_LARGE_DIRECTORY: u8 = 3;
/// Most extents a file's content holds inline.
pub const INLINE_MAX_EXTENTS: usize = 1024;
/// Extents per extent list (all lists of a file but the last are full).
pub const LIST_EXTENTS: usize = 16_384;
/// Largest encoding of a directory (part).
pub const DIR_PART_MAX: usize = 1 << 20;
pub const NAME_MAX: usize = 4096;
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 65_536;
pub const XATTR_TOTAL_MAX: usize = 262_144;
pub const SYMLINK_MAX: usize = 65_536;
const NSEC_PER_SEC: u32 = 1_000_000_000;

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// A piece of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// A data blob of `len` bytes.
    Data { id: ChunkId, len: u32 },
    /// `len` zero bytes, not stored.
    Hole { len: u64 },
}

impl Extent {
    pub fn len(&self) -> u64 {
        match *self {
            Self::Data { len, .. } => u64::from(len),
            Self::Hole { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Data { .. } => 1 + 32 + 4,
            Self::Hole { .. } => 1 + 8,
        }
    }
}

/// Where a file's content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// At most [`INLINE_MAX_EXTENTS`] extents, in the entry itself.
    Inline(Vec<Extent>),
    /// Ids of extent-list tree blobs, in order.
    Indirect(Vec<ChunkId>),
}

/// What an entry is, with what only that type has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    File(Content),
    /// The id of the subdirectory's tree blob (kind 1 or 3).
    Dir(ChunkId),
    Symlink(Vec<u8>),
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
    Socket,
}

impl Payload {
    fn type_byte(&self) -> u8 {
        match self {
            Self::File(_) => 1,
            Self::Dir(_) => 2,
            Self::Symlink(_) => 3,
            Self::CharDevice(_) => 4,
            Self::BlockDevice(_) => 5,
            Self::Fifo => 6,
            Self::Socket => 7,
        }
    }

    /// What the entry is, without the payload's data.
    pub fn entry_type(&self) -> EntryType {
        match self {
            Self::File(_) => EntryType::File,
            Self::Dir(_) => EntryType::Dir,
            Self::Symlink(_) => EntryType::Symlink,
            Self::CharDevice(_) => EntryType::CharDevice,
            Self::BlockDevice(_) => EntryType::BlockDevice,
            Self::Fifo => EntryType::Fifo,
            Self::Socket => EntryType::Socket,
        }
    }
}

/// The type of an entry, as a value to compare and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl EntryType {
    /// A stable lower-case name, as JSON output uses it.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::CharDevice => "chardev",
            Self::BlockDevice => "blockdev",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
        }
    }

    /// The type letter of `ls -l`.
    pub fn letter(self) -> char {
        match self {
            Self::File => '-',
            Self::Dir => 'd',
            Self::Symlink => 'l',
            Self::CharDevice => 'c',
            Self::BlockDevice => 'b',
            Self::Fifo => 'p',
            Self::Socket => 's',
        }
    }
}

/// Metadata common to every entry type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Vec<u8>,
    pub group: Vec<u8>,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub dev: u64,
    pub ino: u64,
    pub nlink: u32,
    /// File content length; 0 for other types.
    pub size: u64,
    pub xattrs: Vec<Xattr>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub meta: Metadata,
    pub payload: Payload,
}

/// A decoded tree blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeBlob {
    Directory(Vec<Entry>),
    ExtentList(Vec<Extent>),
    LargeDirectory(Vec<ChunkId>),
}

fn put_u16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(
        &u16::try_from(n)
            .expect("checked length fits u16")
            .to_le_bytes(),
    );
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(
        &u32::try_from(n)
            .expect("checked length fits u32")
            .to_le_bytes(),
    );
}

fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).expect("user and group names are below 256 bytes"));
    out.extend_from_slice(bytes);
}

/// Appends a counted list of extents as trees encode them.
pub(crate) fn put_extents(out: &mut Vec<u8>, extents: &[Extent]) {
    put_u32(out, extents.len());
    for e in extents {
        match *e {
            Extent::Data { id, len } => {
                out.push(0);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Extent::Hole { len } => {
                out.push(1);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
    }
}

impl Entry {
    /// The entry's encoded length, for splitting large directories.
    pub fn encoded_len(&self) -> usize {
        let m = &self.meta;
        let xattrs: usize = m
            .xattrs
            .iter()
            .map(|x| 2 + x.name.len() + 4 + x.value.len())
            .sum();
        let payload = match &self.payload {
            Payload::File(Content::Inline(ext)) => {
                1 + 4 + ext.iter().map(Extent::encoded_len).sum::<usize>()
            }
            Payload::File(Content::Indirect(ids)) => 1 + 4 + 32 * ids.len(),
            Payload::Dir(_) => 32,
            Payload::Symlink(t) => 4 + t.len(),
            Payload::CharDevice(_) | Payload::BlockDevice(_) => 8,
            Payload::Fifo | Payload::Socket => 0,
        };
        2 + self.name.len()
            + 1
            + 12
            + 2
            + m.user.len()
            + m.group.len()
            + 24
            + 20
            + 8
            + 2
            + xattrs
            + payload
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let m = &self.meta;
        put_u16(out, self.name.len());
        out.extend_from_slice(&self.name);
        out.push(self.payload.type_byte());
        for v in [m.mode, m.uid, m.gid] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_u8_len(out, &m.user);
        put_u8_len(out, &m.group);
        for (sec, nsec) in [m.mtime, m.ctime] {
            out.extend_from_slice(&sec.to_le_bytes());
            out.extend_from_slice(&nsec.to_le_bytes());
        }
        out.extend_from_slice(&m.dev.to_le_bytes());
        out.extend_from_slice(&m.ino.to_le_bytes());
        out.extend_from_slice(&m.nlink.to_le_bytes());
        out.extend_from_slice(&m.size.to_le_bytes());
        put_u16(out, m.xattrs.len());
        for x in &m.xattrs {
            put_u16(out, x.name.len());
            out.extend_from_slice(&x.name);
            put_u32(out, x.value.len());
            out.extend_from_slice(&x.value);
        }
        match &self.payload {
            Payload::File(Content::Inline(ext)) => {
                out.push(0);
                put_extents(out, ext);
            }
            Payload::File(Content::Indirect(ids)) => {
                out.push(1);
                put_u32(out, ids.len());
                for id in ids {
                    out.extend_from_slice(id.as_bytes());
                }
            }
            Payload::Dir(id) => out.extend_from_slice(id.as_bytes()),
            Payload::Symlink(target) => {
                put_u32(out, target.len());
                out.extend_from_slice(target);
            }
            Payload::CharDevice(rdev) | Payload::BlockDevice(rdev) => {
                out.extend_from_slice(&rdev.to_le_bytes());
            }
            Payload::Fifo | Payload::Socket => {}
        }
    }
}

impl TreeBlob {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Directory(entries) => {
                out.push(KIND_DIRECTORY);
                put_u32(&mut out, entries.len());
                for e in entries {
                    e.encode(&mut out);
                }
            }
            Self::ExtentList(extents) => {
                out.push(KIND_EXTENT_LIST);
                put_extents(&mut out, extents);
            }
            Self::LargeDirectory(parts) => {
                out.push(KIND_LARGE_DIRECTORY);
                put_u32(&mut out, parts.len());
                for id in parts {
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        out
    }

    /// Decodes a tree blob and checks every canonical-form rule that can be
    /// checked without other blobs.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] naming the broken rule.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = ByteReader::new(bytes, "tree blob");
        let blob = match r.u8()? {
            KIND_DIRECTORY => {
                if bytes.len() > DIR_PART_MAX {
                    return Err(Error::corrupt("directory tree blob exceeds DIR_PART_MAX"));
                }
                let n = r.count(48)?;
                let mut entries: Vec<Entry> = Vec::with_capacity(n);
                for _ in 0..n {
                    let e = decode_entry(&mut r)?;
                    if entries.last().is_some_and(|prev| prev.name >= e.name) {
                        return Err(Error::corrupt("tree entries are not sorted and unique"));
                    }
                    entries.push(e);
                }
                Self::Directory(entries)
            }
            KIND_EXTENT_LIST => {
                let extents = decode_extents(&mut r)?;
                if extents.is_empty() || extents.len() > LIST_EXTENTS {
                    return Err(Error::corrupt("extent list length out of range"));
                }
                Self::ExtentList(extents)
            }
            KIND_LARGE_DIRECTORY => {
                let n = r.count(32)?;
                if n < 2 {
                    return Err(Error::corrupt("large directory with fewer than two parts"));
                }
                Self::LargeDirectory((0..n).map(|_| r.id().map(ChunkId)).collect::<Result<_>>()?)
            }
            other => return Err(Error::corrupt(format!("unknown tree blob kind {other}"))),
        };
        r.finish()?;
        Ok(blob)
    }
}

/// Reads what [`put_extents`] wrote, with trees' canonical-form checks.
pub(crate) fn decode_extents(r: &mut ByteReader<'_>) -> Result<Vec<Extent>> {
    let n = r.count(9)?;
    let mut out: Vec<Extent> = Vec::with_capacity(n);
    for _ in 0..n {
        let e = match r.u8()? {
            0 => Extent::Data {
                id: ChunkId(r.id()?),
                len: r.u32()?,
            },
            1 => Extent::Hole { len: r.u64()? },
            other => return Err(Error::corrupt(format!("unknown extent tag {other}"))),
        };
        let adjacent_holes = matches!(
            (out.last(), e),
            (Some(Extent::Hole { .. }), Extent::Hole { .. })
        );
        if e.is_empty() || adjacent_holes {
            return Err(Error::corrupt("empty extent or adjacent holes"));
        }
        out.push(e);
    }
    Ok(out)
}

fn bytes_u16(r: &mut ByteReader<'_>, max: usize, what: &str) -> Result<Vec<u8>> {
    let n = r.u16()? as usize;
    if n == 0 || n > max {
        return Err(Error::corrupt(format!("{what} length {n} out of range")));
    }
    Ok(r.bytes(n)?.to_vec())
}

fn decode_name(r: &mut ByteReader<'_>) -> Result<Vec<u8>> {
    let name = bytes_u16(r, NAME_MAX, "entry name")?;
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return Err(Error::corrupt(format!(
            "entry name {:?} is not allowed",
            String::from_utf8_lossy(&name)
        )));
    }
    Ok(name)
}

fn decode_time(r: &mut ByteReader<'_>) -> Result<(i64, u32)> {
    let sec = i64::from_le_bytes(r.array()?);
    let nsec = r.u32()?;
    if nsec >= NSEC_PER_SEC {
        return Err(Error::corrupt("nanoseconds out of range"));
    }
    Ok((sec, nsec))
}

fn decode_xattrs(r: &mut ByteReader<'_>) -> Result<Vec<Xattr>> {
    let n = r.u16()? as usize;
    let mut out: Vec<Xattr> = Vec::with_capacity(n.min(64));
    let mut total = 0usize;
    for _ in 0..n {
        let name = bytes_u16(r, XATTR_NAME_MAX, "xattr name")?;
        let len = r.u32()? as usize;
        if len > XATTR_VALUE_MAX {
            return Err(Error::corrupt("xattr value too long"));
        }
        let value = r.bytes(len)?.to_vec();
        total += name.len() + value.len();
        if total > XATTR_TOTAL_MAX || out.last().is_some_and(|p| p.name >= name) {
            return Err(Error::corrupt("xattrs too large, unsorted or repeated"));
        }
        out.push(Xattr { name, value });
    }
    Ok(out)
}

fn decode_entry(r: &mut ByteReader<'_>) -> Result<Entry> {
    let name = decode_name(r)?;
    let type_byte = r.u8()?;
    let mode = r.u32()?;
    if mode > 0o7777 {
        return Err(Error::corrupt("mode has bits outside 0o7777"));
    }
    let (uid, gid) = (r.u32()?, r.u32()?);
    let user = {
        let n = r.u8()? as usize;
        r.bytes(n)?.to_vec()
    };
    let group = {
        let n = r.u8()? as usize;
        r.bytes(n)?.to_vec()
    };
    let meta = Metadata {
        mode,
        uid,
        gid,
        user,
        group,
        mtime: decode_time(r)?,
        ctime: decode_time(r)?,
        dev: r.u64()?,
        ino: r.u64()?,
        nlink: r.u32()?,
        size: r.u64()?,
        xattrs: decode_xattrs(r)?,
    };
    let payload = decode_payload(r, type_byte, meta.size)?;
    if !matches!(payload, Payload::File(_)) && meta.size != 0 {
        return Err(Error::corrupt("a non-file entry has a size"));
    }
    Ok(Entry {
        name,
        meta,
        payload,
    })
}

fn decode_payload(r: &mut ByteReader<'_>, type_byte: u8, size: u64) -> Result<Payload> {
    Ok(match type_byte {
        1 => Payload::File(match r.u8()? {
            0 => {
                let extents = decode_extents(r)?;
                let total = extents
                    .iter()
                    .try_fold(0u64, |acc, e| acc.checked_add(e.len()));
                if extents.len() > INLINE_MAX_EXTENTS || total != Some(size) {
                    return Err(Error::corrupt(
                        "inline content does not add up to the file size or is too long",
                    ));
                }
                Content::Inline(extents)
            }
            1 => {
                let n = r.count(32)?;
                if n == 0 {
                    return Err(Error::corrupt("indirect content without lists"));
                }
                Content::Indirect((0..n).map(|_| r.id().map(ChunkId)).collect::<Result<_>>()?)
            }
            other => return Err(Error::corrupt(format!("unknown content form {other}"))),
        }),
        2 => Payload::Dir(ChunkId(r.id()?)),
        3 => {
            let n = r.u32()? as usize;
            if n == 0 || n > SYMLINK_MAX {
                return Err(Error::corrupt("symlink target length out of range"));
            }
            Payload::Symlink(r.bytes(n)?.to_vec())
        }
        4 => Payload::CharDevice(r.u64()?),
        5 => Payload::BlockDevice(r.u64()?),
        6 => Payload::Fifo,
        7 => Payload::Socket,
        other => return Err(Error::corrupt(format!("unknown entry type {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(name: &str, extents: Vec<Extent>) -> Entry {
        let size = extents.iter().map(Extent::len).sum();
        Entry {
            name: name.as_bytes().to_vec(),
            meta: Metadata {
                mode: 0o644,
                size,
                nlink: 1,
                mtime: (1_764_115_200, 5),
                ..Metadata::default()
            },
            payload: Payload::File(Content::Inline(extents)),
        }
    }

    fn data(n: u8, len: u32) -> Extent {
        Extent::Data {
            id: ChunkId([n; 32]),
            len,
        }
    }

    fn arb_extents() -> impl Strategy<Value = Vec<Extent>> {
        proptest::collection::vec((any::<bool>(), 1u32..100_000, any::<u8>()), 0..20).prop_map(
            |v| {
                let mut out: Vec<Extent> = Vec::new();
                for (hole, len, n) in v {
                    let prev_hole = matches!(out.last(), Some(Extent::Hole { .. }));
                    out.push(if hole && !prev_hole {
                        Extent::Hole {
                            len: u64::from(len),
                        }
                    } else {
                        data(n, len)
                    });
                }
                out
            },
        )
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let name = proptest::collection::vec(1u8..=255, 1..40).prop_filter("valid name", |n| {
            !n.contains(&b'/') && n != b"." && n != b".."
        });
        let payload = prop_oneof![
            arb_extents().prop_map(|e| Payload::File(Content::Inline(e))),
            any::<[u8; 32]>().prop_map(|id| Payload::Dir(ChunkId(id))),
            proptest::collection::vec(any::<u8>(), 1..100).prop_map(Payload::Symlink),
            any::<u64>().prop_map(Payload::BlockDevice),
            Just(Payload::Fifo),
        ];
        let xattrs = proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..20),
            proptest::collection::vec(any::<u8>(), 0..50),
            0..4,
        );
        (
            name,
            payload,
            xattrs,
            any::<(u32, u32, i64, u64, u64)>(),
            0u32..0o7777,
        )
            .prop_map(|(name, payload, xattrs, (uid, gid, sec, dev, ino), mode)| {
                let size = match &payload {
                    Payload::File(Content::Inline(e)) => e.iter().map(Extent::len).sum(),
                    _ => 0,
                };
                Entry {
                    name,
                    meta: Metadata {
                        mode,
                        uid,
                        gid,
                        user: b"www-data".to_vec(),
                        group: vec![],
                        mtime: (sec, 999_999_999),
                        ctime: (sec / 2, 0),
                        dev,
                        ino,
                        nlink: 2,
                        size,
                        xattrs: xattrs
                            .into_iter()
                            .map(|(name, value)| Xattr { name, value })
                            .collect(),
                    },
                    payload,
                }
            })
    }

    proptest! {
        #[test]
        fn directory_round_trip(entries in proptest::collection::vec(arb_entry(), 0..12)) {
            let mut entries = entries;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            for e in &entries {
                let mut one = Vec::new();
                e.encode(&mut one);
                prop_assert_eq!(one.len(), e.encoded_len());
            }
            let blob = TreeBlob::Directory(entries);
            prop_assert_eq!(TreeBlob::decode(&blob.encode()).unwrap(), blob);
        }

        #[test]
        fn extent_list_round_trip(extents in arb_extents().prop_filter("non-empty", |e| !e.is_empty())) {
            let blob = TreeBlob::ExtentList(extents);
            prop_assert_eq!(TreeBlob::decode(&blob.encode()).unwrap(), blob);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = TreeBlob::decode(&data);
        }
    }

    #[test]
    fn non_canonical_directories_are_refused() {
        let ok = TreeBlob::Directory(vec![file("a", vec![data(1, 10)]), file("b", vec![])]);
        assert!(TreeBlob::decode(&ok.encode()).is_ok());
        let bad = [
            TreeBlob::Directory(vec![file("b", vec![]), file("a", vec![])]),
            TreeBlob::Directory(vec![file("a", vec![]), file("a", vec![])]),
            TreeBlob::Directory(vec![file("..", vec![])]),
            TreeBlob::Directory(vec![file("x/y", vec![])]),
            TreeBlob::Directory(vec![file(
                "h",
                vec![Extent::Hole { len: 5 }, Extent::Hole { len: 5 }],
            )]),
            TreeBlob::Directory(vec![file("z", vec![data(1, 0)])]),
            TreeBlob::ExtentList(vec![]),
        ];
        for blob in bad {
            assert!(TreeBlob::decode(&blob.encode()).is_err(), "{blob:?}");
        }
        let mut wrong_size = file("s", vec![data(1, 10)]);
        wrong_size.meta.size = 11;
        assert!(TreeBlob::decode(&TreeBlob::Directory(vec![wrong_size]).encode()).is_err());
        let mut late = file("t", vec![]);
        late.meta.mtime.1 = 1_000_000_000;
        assert!(TreeBlob::decode(&TreeBlob::Directory(vec![late]).encode()).is_err());
        let mut dir_with_size = file("d", vec![]);
        dir_with_size.payload = Payload::Dir(ChunkId([0; 32]));
        dir_with_size.meta.size = 1;
        assert!(TreeBlob::decode(&TreeBlob::Directory(vec![dir_with_size]).encode()).is_err());
    }

    #[test]
    fn large_contents_and_directories_split_canonically() {
        let extents: Vec<Extent> = (0..40_000u32).map(|i| data(i as u8, 1 + i)).collect();
        let size: u64 = extents.iter().map(Extent::len).sum();
        let lists = plan_content(extents.clone()).unwrap_err();
        assert_eq!(lists.len(), 3);
        assert_eq!(lists[0].len(), LIST_EXTENTS);
        check_lists(&lists, size).unwrap();
        assert!(check_lists(&lists, size + 1).is_err());
        // One list at a time: each gives where its span ends; lists that
        // already cover more than the size fail at that list.
        let mut check = ListCheck::new(lists.len(), size);
        let mut end = 0;
        for l in &lists {
            end += l.iter().map(Extent::len).sum::<u64>();
            assert_eq!(check.list(l).unwrap(), end);
        }
        check.finish().unwrap();
        let first: u64 = lists[0].iter().map(Extent::len).sum();
        assert!(
            ListCheck::new(lists.len(), first - 1)
                .list(&lists[0])
                .is_err()
        );
        assert!(
            check_lists(
                &[extents[..100].to_vec()],
                extents[..100].iter().map(Extent::len).sum()
            )
            .is_err()
        );
        assert!(plan_content(extents[..INLINE_MAX_EXTENTS].to_vec()).is_ok());

        let entries: Vec<Entry> = (0..30_000)
            .map(|i| file(&format!("f{i:06}"), vec![data(1, 10)]))
            .collect();
        let parts = plan_directory(entries.clone());
        assert!(parts.len() >= 2);
        check_parts(&parts).unwrap();
        for p in &parts {
            assert!(TreeBlob::Directory(p.clone()).encode().len() <= DIR_PART_MAX);
        }
        let mut uneven = parts.clone();
        let moved = uneven[0].pop().unwrap();
        uneven[1].insert(0, moved);
        assert!(check_parts(&uneven).is_err());
        assert_eq!(plan_directory(entries[..10].to_vec()).len(), 1);
    }
}
