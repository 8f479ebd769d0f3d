//! Pack files (format-spec/05-packs.md).
//!
//! ```text
//! blob_0 | ... | blob_n-1 | random padding | header envelope | header_len u32 | "KPK1"
//! header plaintext: version u8 | kind u8 | count u32 | count x entry | zero padding
//! entry (49 bytes): blob type u8 | chunk id [32] | offset u32 | stored_len u32
//!                   | raw_offset u32 | raw_len u32
//! ```
//! A blob is a compression group: the sealed frame of one or more chunks
//! back to back. The entries of one group share `offset` and `stored_len`
//! and say where each chunk lies in the group's plaintext. The header
//! plaintext is padded to `padme(6 + 49 * count)` bytes and the whole pack
//! to `padme(unpadded length)`.

use crate::algorithms::crypto::{AeadKey, NONCE_LEN, Subkeys, random_array};
use crate::error::{Error, Result};
use crate::format::envelope::{self, ObjectType};
use crate::format::{ByteReader, padme, unsupported};
use crate::id::{ChunkId, PackId, RepoId};

pub const HEADER_VERSION: u8 = 2;
pub const TRAILER_MAGIC: &[u8; 4] = b"KPK1";
pub const TRAILER_LEN: usize = 8;
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4 + 4;
/// The object id in a group's envelope AAD: none (format-spec/03, 05).
pub const GROUP_OBJECT_ID: [u8; 32] = [0; 32];
/// Largest raw length of a group of more than one chunk (format-spec/05).
pub const MAX_GROUP_RAW: u32 = 4 << 20;
pub const HEADER_FIXED_LEN: usize = 6;
/// Largest header envelope a reader accepts (room for ~230 000 entries).
pub const MAX_HEADER_LEN: usize = 16 << 20;
/// Largest stored pack a reader accepts (format-spec/05, 07 "Size
/// limits"): a writer's target (at most [`MAX_PACK_TARGET`]) plus one
/// largest blob, a largest header and the padding stay below it.
pub const MAX_PACK_LEN: u64 = 128 << 20;
/// Largest pack target a writer may use, so that its packs stay below
/// [`MAX_PACK_LEN`].
pub const MAX_PACK_TARGET: usize = 64 << 20;

/// Whether a pack holds file data or tree (metadata) blobs; never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PackKind {
    Data = 1,
    Tree = 2,
}

impl PackKind {
    pub fn from_u8(value: u8) -> Result<Self> {
        match value {
            1 => Ok(Self::Data),
            2 => Ok(Self::Tree),
            other => Err(Error::corrupt(format!("unknown pack kind {other}"))),
        }
    }

    /// The blob type every entry of such a pack has.
    pub fn blob_type(self) -> ObjectType {
        match self {
            Self::Data => ObjectType::DataBlob,
            Self::Tree => ObjectType::TreeBlob,
        }
    }
}

/// Where one chunk lies in a pack: its group's envelope, and its place in
/// the group's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Offset of the group's envelope from the start of the pack.
    pub offset: u32,
    /// Length of the group's envelope as stored.
    pub stored_len: u32,
    /// Where the chunk starts in the group's plaintext.
    pub raw_offset: u32,
    /// Length of the chunk's plaintext.
    pub raw_len: u32,
}

impl PackEntry {
    /// Where the chunk ends in its group's plaintext.
    pub fn raw_end(&self) -> u64 {
        u64::from(self.raw_offset) + u64::from(self.raw_len)
    }
}

/// The groups of `entries` (of one pack, in order): runs of entries that
/// share one envelope.
pub fn groups(entries: &[PackEntry]) -> impl Iterator<Item = &[PackEntry]> {
    entries.chunk_by(|a, b| a.offset == b.offset)
}

/// A group's raw length: where its last chunk ends.
pub fn group_raw_len(group: &[PackEntry]) -> u64 {
    group.last().map_or(0, PackEntry::raw_end)
}

/// The decoded header of one pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackHeader {
    pub kind: PackKind,
    pub entries: Vec<PackEntry>,
}

impl PackHeader {
    /// The padded header plaintext.
    pub fn encode_plaintext(&self) -> Vec<u8> {
        let unpadded = HEADER_FIXED_LEN + ENTRY_LEN * self.entries.len();
        let padded = usize::try_from(padme(unpadded as u64)).expect("header fits in memory");
        let mut out = Vec::with_capacity(padded);
        out.push(HEADER_VERSION);
        out.push(self.kind as u8);
        write_entries(&mut out, self.kind, &self.entries);
        out.resize(padded, 0);
        out
    }

    /// Decodes and validates a header plaintext; `blobs_end` is the offset
    /// where blob data must end (the start of the padding region at most).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if the header is malformed, its
    /// padding is not zero or of the wrong length, or entries overlap,
    /// are out of order or reach past `blobs_end`.
    pub fn decode_plaintext(bytes: &[u8], blobs_end: u64) -> Result<Self> {
        let mut r = ByteReader::new(bytes, "pack header");
        let version = r.u8()?;
        if version != HEADER_VERSION {
            return Err(unsupported("pack header version", version));
        }
        let kind = PackKind::from_u8(r.u8()?)?;
        let entries =
            read_entries(&mut r, kind, blobs_end).map_err(|e| e.context("pack header"))?;
        let used = r.position();
        if bytes.len() as u64 != padme(used as u64) || r.remaining().iter().any(|&b| b != 0) {
            return Err(Error::corrupt("pack header padding is malformed"));
        }
        Ok(Self { kind, entries })
    }
}

/// The `len` padding bytes of pack `pack_id`: BLAKE3 keyed XOF (key
/// `K_pad`, input the pack id). They look random to an observer and can be
/// checked by a reader.
pub fn padding(key: &[u8; 32], pack_id: &PackId, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_keyed(key)
        .update(pack_id.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Appends `entries` (49 bytes each) of a pack of `kind`, after their count.
/// Shared by pack headers and index files, which store entries alike.
pub(crate) fn write_entries(out: &mut Vec<u8>, kind: PackKind, entries: &[PackEntry]) {
    let count = u32::try_from(entries.len()).expect("pack entry count fits u32");
    out.extend_from_slice(&count.to_le_bytes());
    let blob_type = kind.blob_type() as u8;
    for e in entries {
        out.push(blob_type);
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_offset.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
}

/// Reads a count and that many entries of a pack of `kind`, checking that
/// each has the pack's blob type, that they form groups (format-spec/05,
/// rules 9 and 10: sorted, disjoint, chunks back to back in a group of at
/// most [`MAX_GROUP_RAW`], one chunk a group in a tree pack), and that
/// none reaches past `end`.
pub(crate) fn read_entries(
    r: &mut ByteReader<'_>,
    kind: PackKind,
    end: u64,
) -> Result<Vec<PackEntry>> {
    let count = r.count(ENTRY_LEN)?;
    let mut entries: Vec<PackEntry> = Vec::with_capacity(count);
    let mut next_free = 0u64;
    for _ in 0..count {
        if ObjectType::blob_from_u8(r.u8()?)? != kind.blob_type() {
            return Err(Error::corrupt(
                "an entry has the wrong blob type for its pack",
            ));
        }
        let e = PackEntry {
            id: ChunkId(r.id()?),
            offset: r.u32()?,
            stored_len: r.u32()?,
            raw_offset: r.u32()?,
            raw_len: r.u32()?,
        };
        match entries.last() {
            Some(prev) if prev.offset == e.offset => {
                if prev.stored_len != e.stored_len
                    || u64::from(e.raw_offset) != prev.raw_end()
                    || e.raw_end() > u64::from(MAX_GROUP_RAW)
                    || kind == PackKind::Tree
                {
                    return Err(Error::corrupt(
                        "the chunks of a group do not lie back to back within its limit",
                    ));
                }
            }
            _ => {
                let e_end = u64::from(e.offset) + u64::from(e.stored_len);
                if u64::from(e.offset) < next_free || e_end > end || e.raw_offset != 0 {
                    return Err(Error::corrupt("entries overlap or lie outside the pack"));
                }
                next_free = e_end;
            }
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Assembles a finished pack from its concatenated blob envelopes: adds
/// the padding, the sealed header and the trailer.
pub fn assemble(
    blobs: Vec<u8>,
    header: &PackHeader,
    keys: &Subkeys,
    pack_id: &PackId,
    repo: &RepoId,
) -> Vec<u8> {
    assemble_with_nonce(blobs, header, keys, pack_id, repo, &random_array())
}

/// [`assemble`] with a chosen header nonce; only for test vectors.
pub fn assemble_with_nonce(
    mut blobs: Vec<u8>,
    header: &PackHeader,
    keys: &Subkeys,
    pack_id: &PackId,
    repo: &RepoId,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let sealed = envelope::seal_with_nonce(
        &keys.shared,
        nonce,
        ObjectType::PackHeader,
        pack_id.as_bytes(),
        repo,
        &header.encode_plaintext(),
    );
    let unpadded = (blobs.len() + sealed.len() + TRAILER_LEN) as u64;
    let pad = usize::try_from(padme(unpadded) - unpadded).expect("padding fits in memory");
    blobs.extend_from_slice(&padding(&keys.padding, pack_id, pad));
    blobs.extend_from_slice(&sealed);
    let sealed_len = u32::try_from(sealed.len()).expect("header envelope fits u32");
    blobs.extend_from_slice(&sealed_len.to_le_bytes());
    blobs.extend_from_slice(TRAILER_MAGIC);
    blobs
}

/// Reads the trailer (the last [`TRAILER_LEN`] bytes of a pack of
/// `pack_len` bytes) and returns the header envelope's length.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a pack over [`MAX_PACK_LEN`], a bad
/// magic or an impossible length.
pub fn decode_trailer(trailer: &[u8], pack_len: u64) -> Result<u32> {
    if pack_len > MAX_PACK_LEN {
        return Err(Error::corrupt(format!(
            "pack is {pack_len} bytes, over the limit of {MAX_PACK_LEN} bytes for a pack"
        )));
    }
    if trailer.len() != TRAILER_LEN || &trailer[4..] != TRAILER_MAGIC {
        return Err(Error::corrupt("pack trailer is missing or damaged"));
    }
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if len as usize > MAX_HEADER_LEN || u64::from(len) + TRAILER_LEN as u64 > pack_len {
        return Err(Error::corrupt(format!(
            "pack header length {len} is impossible"
        )));
    }
    Ok(len)
}

/// Opens the sealed header of pack `pack_id` (`pack_len` bytes long).
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] if authentication or validation fails.
pub fn open_header(
    key: &AeadKey,
    pack_id: &PackId,
    repo: &RepoId,
    sealed: &[u8],
    pack_len: u64,
) -> Result<PackHeader> {
    let plain = envelope::open(
        key,
        ObjectType::PackHeader,
        pack_id.as_bytes(),
        repo,
        sealed,
    )?;
    let blobs_end = pack_len.saturating_sub((sealed.len() + TRAILER_LEN) as u64);
    PackHeader::decode_plaintext(&plain, blobs_end)
        .map_err(|e| e.context(format!("pack {pack_id}")))
}

/// Parses a whole pack held in memory: trailer, then header.
///
/// # Errors
/// As [`decode_trailer`] and [`open_header`].
pub fn open_whole(
    key: &AeadKey,
    pack_id: &PackId,
    repo: &RepoId,
    pack: &[u8],
) -> Result<PackHeader> {
    let len = pack.len() as u64;
    let trailer_at = pack
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or_else(|| Error::corrupt("pack is truncated"))?;
    let header_len = decode_trailer(&pack[trailer_at..], len)? as usize;
    open_header(
        key,
        pack_id,
        repo,
        &pack[trailer_at - header_len..trailer_at],
        len,
    )
}

/// Checks the parts of a whole pack that no envelope covers: blobs lie
/// back to back from offset 0, the padding is exactly the keyed padding,
/// and the pack's length is the Padmé length.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] naming what differs.
pub fn check_layout(
    keys: &Subkeys,
    pack_id: &PackId,
    header: &PackHeader,
    pack: &[u8],
) -> Result<()> {
    let mut next = 0u64;
    for group in groups(&header.entries) {
        let e = &group[0];
        if u64::from(e.offset) != next {
            return Err(Error::corrupt(format!(
                "pack {pack_id} has a gap before offset {}",
                e.offset
            )));
        }
        next += u64::from(e.stored_len);
    }
    let trailer_at = pack.len() - TRAILER_LEN;
    let header_len = u32::from_le_bytes(
        pack[trailer_at..trailer_at + 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let pad_start = usize::try_from(next).unwrap_or(usize::MAX);
    let pad_end = trailer_at - header_len;
    let expected = padding(&keys.padding, pack_id, pad_end.saturating_sub(pad_start));
    if pad_start > pad_end
        || pack[pad_start..pad_end] != expected[..]
        || padme(pack.len() as u64) != pack.len() as u64
    {
        return Err(Error::corrupt(format!(
            "pack {pack_id} has damaged padding"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(n: usize) -> PackHeader {
        PackHeader {
            kind: PackKind::Data,
            entries: (0..n)
                .map(|i| PackEntry {
                    id: ChunkId([i as u8; 32]),
                    offset: (i * 100) as u32,
                    stored_len: 100,
                    raw_offset: 0,
                    raw_len: 150,
                })
                .collect(),
        }
    }

    #[test]
    fn header_length_does_not_reveal_small_count_changes() {
        let a = header(100).encode_plaintext().len();
        let b = header(101).encode_plaintext().len();
        assert_eq!(a, b);
    }

    #[test]
    fn whole_pack_round_trip_and_padding() {
        let keys = crate::algorithms::crypto::MasterSecret::from_bytes([3; 32]).subkeys();
        let key = &keys.shared;
        let (id, repo) = (PackId([4; 32]), RepoId([5; 32]));
        let h = header(10);
        let pack = assemble(vec![7u8; 1000], &h, &keys, &id, &repo);
        assert_eq!(pack.len() as u64, padme(pack.len() as u64));
        assert_eq!(open_whole(key, &id, &repo, &pack).unwrap(), h);
        check_layout(&keys, &id, &h, &pack).unwrap();
        let mut bad_pad = pack.clone();
        bad_pad[1000] ^= 1;
        assert!(check_layout(&keys, &id, &h, &bad_pad).is_err());
        assert!(open_whole(key, &PackId([6; 32]), &repo, &pack).is_err());
        let mut tail_cut = pack.clone();
        tail_cut.truncate(pack.len() - 1);
        assert!(open_whole(key, &id, &repo, &tail_cut).is_err());
    }

    #[test]
    fn overlapping_entries_are_rejected() {
        let mut h = header(3);
        h.entries[1].offset = 50;
        assert!(PackHeader::decode_plaintext(&h.encode_plaintext(), 10_000).is_err());
        let h = header(3);
        assert!(PackHeader::decode_plaintext(&h.encode_plaintext(), 299).is_err());
        assert!(PackHeader::decode_plaintext(&h.encode_plaintext(), 300).is_ok());
    }

    /// Entries of groups of `sizes` chunks each (150 bytes a chunk).
    fn grouped(sizes: &[usize]) -> PackHeader {
        let mut entries = Vec::new();
        for (g, &n) in sizes.iter().enumerate() {
            for i in 0..n {
                entries.push(PackEntry {
                    id: ChunkId([(entries.len() % 251) as u8; 32]),
                    offset: (g * 100) as u32,
                    stored_len: 100,
                    raw_offset: (i * 150) as u32,
                    raw_len: 150,
                });
            }
        }
        PackHeader {
            kind: PackKind::Data,
            entries,
        }
    }

    #[test]
    fn groups_round_trip_and_their_rules_are_enforced() {
        let h = grouped(&[3, 1, 2]);
        let decode = |h: &PackHeader| PackHeader::decode_plaintext(&h.encode_plaintext(), 10_000);
        assert_eq!(decode(&h).unwrap(), h);
        assert_eq!(
            groups(&h.entries).map(<[_]>::len).collect::<Vec<_>>(),
            [3, 1, 2]
        );
        assert_eq!(group_raw_len(&h.entries[..3]), 450);
        let broken: [fn(&mut PackHeader); 5] = [
            |h| h.entries[1].raw_offset = 100, // a gap in the group
            |h| h.entries[1].raw_offset = 0,   // chunks overlap
            |h| h.entries[1].stored_len = 99,  // one group, two lengths
            |h| h.entries[3].raw_offset = 5,   // a group starts inside
            |h| h.kind = PackKind::Tree,       // trees are one a group
        ];
        for (i, b) in broken.iter().enumerate() {
            let mut bad = h.clone();
            b(&mut bad);
            assert!(decode(&bad).is_err(), "case {i}");
        }
        let mut big = grouped(&[2]);
        big.entries[1].raw_len = MAX_GROUP_RAW - 149;
        assert!(decode(&big).is_err(), "over the group limit");
        big.entries[1].raw_len = MAX_GROUP_RAW - 150;
        assert!(decode(&big).is_ok(), "at the group limit");
    }

    proptest! {
        #[test]
        fn header_round_trip(n in 0usize..300) {
            let h = header(n);
            prop_assert_eq!(PackHeader::decode_plaintext(&h.encode_plaintext(), 1 << 30).unwrap(), h);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = PackHeader::decode_plaintext(&data, 1 << 20);
            let _ = decode_trailer(&data[..data.len().min(8)], 1 << 20);
        }
    }
}
