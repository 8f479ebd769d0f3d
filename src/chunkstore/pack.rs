//! Pack layer: the packer that groups sealed blobs into pack files, and the
//! reader of pack headers. Owns the invariants that a pack holds one kind of
//! blob, that blobs are spread at random over several open packs (so a
//! pack's order of chunk lengths does not follow the file), and that a pack
//! is padded (format-spec/05-packs.md).

use rayon::prelude::*;

use crate::algorithms::crypto::random_below;
use crate::error::{Error, Result};
use crate::format::pack::{self, PackEntry, PackHeader, PackKind};
use crate::id::{ChunkId, PackId};
use crate::repository::sealer::Sealer;

/// How packs are built (not part of the format).
#[derive(Debug, Clone, Copy)]
pub struct PackerOptions {
    /// A pack is finished once its blobs reach this many bytes (at most
    /// [`pack::MAX_PACK_TARGET`]).
    pub target_size: usize,
    /// How many packs are open at once per kind (at least 2).
    pub open_packs: usize,
}

impl Default for PackerOptions {
    fn default() -> Self {
        Self {
            target_size: 8 << 20,
            open_packs: 2,
        }
    }
}

/// A pack ready to upload.
pub struct FinishedPack {
    pub id: PackId,
    pub kind: PackKind,
    pub entries: Vec<PackEntry>,
    pub bytes: Vec<u8>,
}

struct OpenPack {
    id: PackId,
    blobs: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl OpenPack {
    /// Reserves (without touching) room for a full pack plus its last
    /// blob, padding and header, so the buffer never doubles while filling.
    fn new(target_size: usize) -> Self {
        Self {
            id: PackId::random(),
            blobs: Vec::with_capacity(target_size + (2 << 20)),
            entries: Vec::new(),
        }
    }
}

/// Builds packs of one kind from sealed blobs.
pub struct Packer {
    kind: PackKind,
    options: PackerOptions,
    open: Vec<OpenPack>,
}

impl Packer {
    /// A target above [`pack::MAX_PACK_TARGET`] is lowered to it, so that
    /// no pack exceeds what readers accept.
    pub fn new(kind: PackKind, mut options: PackerOptions) -> Self {
        options.target_size = options.target_size.min(pack::MAX_PACK_TARGET);
        let n = options.open_packs.max(2);
        Self {
            kind,
            options,
            open: (0..n).map(|_| OpenPack::new(options.target_size)).collect(),
        }
    }

    /// Adds a sealed group holding `chunks` (id and raw length, in order)
    /// to an open pack chosen at random; returns that pack if it is now
    /// full.
    pub fn add_group(
        &mut self,
        sealer: &Sealer,
        chunks: &[(ChunkId, u32)],
        sealed: &[u8],
    ) -> Option<FinishedPack> {
        let slot = random_below(self.open.len());
        let pack = &mut self.open[slot];
        let offset = u32::try_from(pack.blobs.len()).expect("packs stay below 4 GiB");
        let stored_len = u32::try_from(sealed.len()).expect("blobs stay below 4 GiB");
        pack.blobs.extend_from_slice(sealed);
        let mut raw_offset = 0u32;
        for &(id, raw_len) in chunks {
            pack.entries.push(PackEntry {
                id,
                offset,
                stored_len,
                raw_offset,
                raw_len,
            });
            raw_offset += raw_len;
        }
        if pack.blobs.len() >= self.options.target_size {
            let full = std::mem::replace(pack, OpenPack::new(self.options.target_size));
            return Some(self.finish(sealer, full));
        }
        None
    }

    /// Finishes every non-empty open pack.
    pub fn finish_all(&mut self, sealer: &Sealer) -> Vec<FinishedPack> {
        let open = std::mem::take(&mut self.open);
        self.open = (0..open.len())
            .map(|_| OpenPack::new(self.options.target_size))
            .collect();
        open.into_iter()
            .filter(|p| !p.entries.is_empty())
            .map(|p| self.finish(sealer, p))
            .collect()
    }

    /// The sealed group holding `id`, and `id`'s entry, if it sits in an
    /// open pack.
    pub fn find(&self, id: &ChunkId) -> Option<(&[u8], PackEntry)> {
        self.open.iter().find_map(|p| {
            let e = p.entries.iter().find(|e| e.id == *id)?;
            let start = e.offset as usize;
            Some((&p.blobs[start..start + e.stored_len as usize], *e))
        })
    }

    fn finish(&self, sealer: &Sealer, p: OpenPack) -> FinishedPack {
        let header = PackHeader {
            kind: self.kind,
            entries: p.entries,
        };
        let bytes = pack::assemble(p.blobs, &header, sealer.keys(), &p.id, sealer.repo());
        FinishedPack {
            id: p.id,
            kind: self.kind,
            entries: header.entries,
            bytes,
        }
    }
}

/// Verifies a whole pack read from storage: trailer, header, layout and
/// padding, and every group (authenticated, decompressed, each chunk's id
/// recomputed).
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for the first damage found.
pub fn verify_pack(sealer: &Sealer, id: &PackId, bytes: &[u8]) -> Result<PackHeader> {
    let header = verify_pack_frame(sealer, id, bytes)?;
    for group in pack::groups(&header.entries) {
        if let Some((_, e)) = verify_group(sealer, id, header.kind, group, bytes)
            .into_iter()
            .next()
        {
            return Err(e);
        }
    }
    Ok(header)
}

/// [`verify_pack`] that goes on past damaged groups: the header, and each
/// chunk that fails with its error, so that the sound chunks of a damaged
/// pack can still be told apart.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when the trailer, header, layout or
/// padding is damaged: then no chunk can be vouched for.
pub fn verify_pack_blobs(
    sealer: &Sealer,
    id: &PackId,
    bytes: &[u8],
) -> Result<(PackHeader, Vec<(ChunkId, Error)>)> {
    let header = verify_pack_frame(sealer, id, bytes)?;
    // Groups are verified in parallel: a pack holds hundreds, and packs
    // alone are too few to keep every core busy to the end.
    let groups: Vec<&[PackEntry]> = pack::groups(&header.entries).collect();
    let damaged = groups
        .par_iter()
        .flat_map_iter(|group| verify_group(sealer, id, header.kind, group, bytes))
        .collect();
    Ok((header, damaged))
}

fn verify_pack_frame(sealer: &Sealer, id: &PackId, bytes: &[u8]) -> Result<PackHeader> {
    let header = pack::open_whole(&sealer.keys().shared, id, sealer.repo(), bytes)?;
    pack::check_layout(sealer.keys(), id, &header, bytes)?;
    Ok(header)
}

/// The damaged chunks of one group of a pack whose layout `check_layout`
/// proved (the groups lie back to back inside it): all of them if the
/// group does not open or is not exactly as long as its chunks, else
/// those whose bytes do not match their ids.
fn verify_group(
    sealer: &Sealer,
    id: &PackId,
    kind: PackKind,
    group: &[PackEntry],
    bytes: &[u8],
) -> Vec<(ChunkId, Error)> {
    let first = &group[0];
    let start = first.offset as usize;
    let blob = &bytes[start..start + first.stored_len as usize];
    // Every chunk of a group that does not open is damaged alike.
    let all = |e: &Error| {
        group
            .iter()
            .map(|c| (c.id, Error::new(e.kind(), e.to_string())))
            .collect()
    };
    let plain = match sealer.open_group(kind, blob) {
        Ok(plain) if plain.len() as u64 == pack::group_raw_len(group) => plain,
        Ok(_) => {
            return all(&Error::corrupt(format!(
                "the group at offset {} of pack {id} has the wrong length",
                first.offset
            )));
        }
        Err(e) => return all(&e),
    };
    group
        .iter()
        .filter_map(|c| {
            sealer
                .chunk_in(&c.id, &plain, c.raw_offset, c.raw_len)
                .err()
                .map(|e| (c.id, e.context(format!("pack {id}"))))
        })
        .collect()
}
