//! Content-defined chunking (format-spec/04-chunking.md): FastCDC v2020 from
//! the `fastcdc` crate, driven with a gear table derived from the chunker
//! subkey so that cut points differ between repositories.
//!
//! The chunker owns one invariant: for a given key and parameters, the same
//! byte stream gives the same cut points however it is read.

use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

use crate::error::{Error, Result};

/// Chunker parameters as recorded in the config (format-spec/04; checked
/// and encoded by [`crate::format::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub normalization: u8,
}

/// The input of the gear table derivation (BLAKE3 keyed XOF).
pub const GEAR_DERIVATION_INPUT: &[u8] = b"kura v1 gear table";

/// A keyed FastCDC v2020 chunker.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

/// Derives the 256-entry gear table from the chunker subkey.
pub fn gear_table(key: &[u8; 32]) -> [u64; 256] {
    let mut bytes = [0u8; 256 * 8];
    blake3::Hasher::new_keyed(key)
        .update(GEAR_DERIVATION_INPUT)
        .finalize_xof()
        .fill(&mut bytes);
    let mut table = [0u64; 256];
    for (entry, word) in table.iter_mut().zip(bytes.chunks_exact(8)) {
        *entry = u64::from_le_bytes(word.try_into().expect("8 bytes"));
    }
    table
}

impl Chunker {
    /// A chunker for `params` (already checked by the config) and `key`.
    pub fn new(key: &[u8; 32], params: ChunkerParams) -> Self {
        let gear = gear_table(key);
        let gear_ls = gear.map(|g| g << 1);
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = select_masks(params.avg as usize, level);
        Self {
            params,
            gear: Box::new(gear),
            gear_ls: Box::new(gear_ls),
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. `data` must hold at least
    /// `max` bytes unless it is the end of the stream.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let p = self.params;
        let (_, len) = cut_gear(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len
    }

    /// Cuts a whole in-memory stream into chunk ranges.
    pub fn cut_all(&self, data: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let len = self.next_cut(&data[start..]);
            out.push(start..start + len);
            start += len;
        }
        out
    }
}

/// A batch of whole chunks read from a stream: one buffer and the ranges
/// of the chunks in it.
pub struct Batch {
    pub data: Vec<u8>,
    pub chunks: Vec<Range<usize>>,
}

/// Reads a stream in large segments and cuts it into batches of whole
/// chunks; memory is bounded by the segment size plus one maximum chunk.
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    carry: Vec<u8>,
    segment: usize,
    eof: bool,
}

impl<'c, R: Read> ChunkStream<'c, R> {
    /// `segment` is the amount read per batch (at least one max chunk).
    pub fn new(chunker: &'c Chunker, reader: R, segment: usize) -> Self {
        let segment = segment.max(chunker.params.max as usize * 2);
        Self {
            chunker,
            reader,
            carry: Vec::new(),
            segment,
            eof: false,
        }
    }

    /// Whether the stream is exhausted: the next batch is `None`.
    pub fn finished(&self) -> bool {
        self.eof && self.carry.is_empty()
    }

    /// The next batch, or `None` at the end of the stream.
    ///
    /// # Errors
    /// The reader's I/O error, with kind mapped by [`Error::io`].
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let mut data = std::mem::take(&mut self.carry);
        self.fill(&mut data)?;
        if data.is_empty() {
            return Ok(None);
        }
        let max = self.chunker.params.max as usize;
        let mut chunks = Vec::new();
        let mut start = 0;
        // Without EOF, only cut where at least `max` bytes are visible, so a
        // cut never depends on where a segment happened to end.
        while start < data.len() && (self.eof || data.len() - start >= max) {
            let len = self.chunker.next_cut(&data[start..]);
            chunks.push(start..start + len);
            start += len;
        }
        self.carry = data[start..].to_vec();
        data.truncate(start);
        Ok(Some(Batch { data, chunks }))
    }

    /// Appends up to one segment from the reader. `read_to_end` grows the
    /// buffer as data arrives, so a small file costs a small buffer rather
    /// than a zeroed segment.
    fn fill(&mut self, data: &mut Vec<u8>) -> Result<()> {
        if self.eof {
            return Ok(());
        }
        let want = self.segment as u64;
        let got = (&mut self.reader)
            .take(want)
            .read_to_end(data)
            .map_err(|e| Error::io("reading the input stream", e))?;
        if (got as u64) < want {
            self.eof = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: ChunkerParams = ChunkerParams {
        min: 2048,
        avg: 8192,
        max: 32768,
        normalization: 1,
    };

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A reader that returns at most `step` bytes per call.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streaming_matches_whole_buffer_cuts() {
        let data = pseudo_random(1 << 20, 1);
        let chunker = Chunker::new(&[1; 32], PARAMS);
        let whole: Vec<usize> = chunker
            .cut_all(&data)
            .iter()
            .map(std::iter::ExactSizeIterator::len)
            .collect();
        for (segment, step) in [(65_536, 1000), (100_000, 65_536), (1 << 22, 7)] {
            let mut stream = ChunkStream::new(&chunker, Dribble(&data, step), segment);
            let mut lens = Vec::new();
            while let Some(batch) = stream.next_batch().unwrap() {
                lens.extend(batch.chunks.iter().map(std::iter::ExactSizeIterator::len));
            }
            assert_eq!(lens, whole, "segment {segment} step {step}");
        }
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        assert!(whole.iter().all(|&l| l <= PARAMS.max as usize));
    }

    #[test]
    fn different_keys_cut_differently() {
        let data = pseudo_random(1 << 20, 2);
        let a = Chunker::new(&[1; 32], PARAMS).cut_all(&data);
        let b = Chunker::new(&[2; 32], PARAMS).cut_all(&data);
        assert_ne!(a, b);
    }
}
