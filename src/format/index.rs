//! Index files (format-spec/06-index.md): which pack holds each blob.
//!
//! ```text
//! version u8 | supersedes count u32 | supersedes ids [32]...
//! | pack count u32 | per pack: pack id [32] | kind u8 | pack size u64 | entry count u32
//!   | entries: blob type u8 | chunk id [32] | offset u32 | stored_len u32
//!     | raw_offset u32 | raw_len u32 (a pack header's entries, chunks of groups)
//! ```
//! An index file lists every entry of each pack it names.

use crate::error::Result;
use crate::format::pack::{PackEntry, PackKind, read_entries, write_entries};
use crate::format::{ByteReader, put_len, unsupported};
use crate::id::{ID_LEN, IndexId, PackId};

pub const VERSION: u8 = 2;
pub const ENTRY_LEN: usize = crate::format::pack::ENTRY_LEN;
const PACK_FIXED_LEN: usize = ID_LEN + 1 + 8 + 4;
/// Largest decoded index file a reader accepts.
pub const MAX_LEN: usize = 64 << 20;
/// Most packs a writer names in one index file: keeps each file far below
/// [`MAX_LEN`] however full its packs are.
pub const PACKS_PER_FILE: usize = 256;

/// One pack as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub kind: PackKind,
    /// The pack file's length in bytes.
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

/// A decoded index file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (written by prune; empty from backup).
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexedPack>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.packs.iter().map(|p| p.entries.len()).sum();
        let mut out = Vec::with_capacity(
            9 + ID_LEN * self.supersedes.len()
                + PACK_FIXED_LEN * self.packs.len()
                + ENTRY_LEN * entries,
        );
        out.push(VERSION);
        put_len(&mut out, self.supersedes.len());
        for id in &self.supersedes {
            out.extend_from_slice(id.as_bytes());
        }
        put_len(&mut out, self.packs.len());
        for pack in &self.packs {
            out.extend_from_slice(pack.id.as_bytes());
            out.push(pack.kind as u8);
            out.extend_from_slice(&pack.size.to_le_bytes());
            write_entries(&mut out, pack.kind, &pack.entries);
        }
        out
    }

    /// Decodes and validates an index file's plaintext.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if malformed, or if a pack's entries
    /// overlap, are unordered, or reach past the pack's size.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = ByteReader::new(bytes, "index file");
        let version = r.u8()?;
        if version != VERSION {
            return Err(unsupported("index file version", version));
        }
        let n = r.count(ID_LEN)?;
        let supersedes = (0..n).map(|_| r.id().map(IndexId)).collect::<Result<_>>()?;
        let n = r.count(PACK_FIXED_LEN)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            packs.push(decode_pack(&mut r)?);
        }
        r.finish()?;
        Ok(Self { supersedes, packs })
    }
}

fn decode_pack(r: &mut ByteReader<'_>) -> Result<IndexedPack> {
    let id = PackId(r.id()?);
    let kind = PackKind::from_u8(r.u8()?)?;
    let size = r.u64()?;
    let entries =
        read_entries(r, kind, size).map_err(|e| e.context(format!("index entry for pack {id}")))?;
    Ok(IndexedPack {
        id,
        kind,
        size,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
    use proptest::prelude::*;

    fn sample(packs: usize, entries: usize) -> IndexFile {
        IndexFile {
            supersedes: vec![IndexId([9; 32])],
            packs: (0..packs)
                .map(|p| IndexedPack {
                    id: PackId([p as u8; 32]),
                    kind: if p % 2 == 0 {
                        PackKind::Data
                    } else {
                        PackKind::Tree
                    },
                    size: 1 << 20,
                    entries: (0..entries)
                        .map(|i| PackEntry {
                            id: ChunkId([(i * 7 + p) as u8; 32]),
                            offset: (i * 50) as u32,
                            stored_len: 50,
                            raw_offset: 0,
                            raw_len: 80,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn round_trip(packs in 0usize..5, entries in 0usize..40) {
            let f = sample(packs, entries);
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode(&data);
        }
    }

    #[test]
    fn rejects_entries_beyond_pack() {
        let mut f = sample(1, 3);
        f.packs[0].size = 120;
        assert!(IndexFile::decode(&f.encode()).is_err());
    }
}
