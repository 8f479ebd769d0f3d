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

    /// Adds a sealed blob to an open pack chosen at random; returns that
    /// pack if it is now full.
    pub fn add(
        &mut self,
        sealer: &Sealer,
        id: ChunkId,
        sealed: &[u8],
        raw_len: u32,
    ) -> Option<FinishedPack> {
        let slot = random_below(self.open.len());
        let pack = &mut self.open[slot];
        let offset = u32::try_from(pack.blobs.len()).expect("packs stay below 4 GiB");
        let stored_len = u32::try_from(sealed.len()).expect("blobs stay below 4 GiB");
        pack.blobs.extend_from_slice(sealed);
        pack.entries.push(PackEntry {
            id,
            offset,
            stored_len,
            raw_len,
        });
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

    /// The sealed bytes of `id` if it sits in an open pack.
    pub fn find(&self, id: &ChunkId) -> Option<&[u8]> {
        self.open.iter().find_map(|p| {
            let e = p.entries.iter().find(|e| e.id == *id)?;
            let start = e.offset as usize;
            Some(&p.blobs[start..start + e.stored_len as usize])
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
/// padding, and every blob (authenticated, decompressed, id recomputed).
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for the first damage found.
pub fn verify_pack(sealer: &Sealer, id: &PackId, bytes: &[u8]) -> Result<PackHeader> {
    let header = verify_pack_frame(sealer, id, bytes)?;
    for e in &header.entries {
        verify_blob(sealer, id, &header, e, bytes)?;
    }
    Ok(header)
}

/// [`verify_pack`] that goes on past damaged blobs: the header, and each
/// blob that fails with its error, so that the sound blobs of a damaged
/// pack can still be told apart.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when the trailer, header, layout or
/// padding is damaged: then no blob can be vouched for.
pub fn verify_pack_blobs(
    sealer: &Sealer,
    id: &PackId,
    bytes: &[u8],
) -> Result<(PackHeader, Vec<(ChunkId, Error)>)> {
    let header = verify_pack_frame(sealer, id, bytes)?;
    // Blobs are verified in parallel: a pack holds hundreds, and packs
    // alone are too few to keep every core busy to the end.
    let damaged = header
        .entries
        .par_iter()
        .filter_map(|e| {
            verify_blob(sealer, id, &header, e, bytes)
                .err()
                .map(|err| (e.id, err))
        })
        .collect();
    Ok((header, damaged))
}

fn verify_pack_frame(sealer: &Sealer, id: &PackId, bytes: &[u8]) -> Result<PackHeader> {
    let header = pack::open_whole(&sealer.keys().shared, id, sealer.repo(), bytes)?;
    pack::check_layout(sealer.keys(), id, &header, bytes)?;
    Ok(header)
}

/// One blob of a pack whose layout `check_layout` proved (the entries lie
/// back to back inside it).
fn verify_blob(
    sealer: &Sealer,
    id: &PackId,
    header: &PackHeader,
    e: &PackEntry,
    bytes: &[u8],
) -> Result<()> {
    let start = e.offset as usize;
    let blob = &bytes[start..start + e.stored_len as usize];
    let plain = sealer.open_blob(header.kind, &e.id, blob)?;
    if plain.len() != e.raw_len as usize {
        return Err(Error::corrupt(format!(
            "blob {} in pack {id} has the wrong length",
            e.id
        )));
    }
    Ok(())
}
