//! Content-defined chunking (format-spec/04-chunking.md): FastCDC v2020 from
//! the `fastcdc` crate, driven with a gear table derived from the chunker
//! subkey so that cut points differ between repositories.
//!
//! The chunker owns one invariant: for a given key and parameters, the same
//! byte stream gives the same cut points however it is read, and however
//! many threads search for them.
//!
//! Parallel search ([`Chunker::cut_ends_parallel`]). A cut depends only on
//! where the chunk starts and on the bytes from there (at most `max` of
//! them), never on earlier bytes. So a buffer is split into regions, and
//! each region is cut on its own rayon job as if a chunk started at its
//! first byte. The first region's cuts are the true ones. For each later
//! region the true chain of cuts arrives at some position near the
//! region's start; from there the sequential chunker runs until it lands
//! on a position the region's own chain also reached. From that common
//! position on both chains are the same sequence, so the region's cuts are
//! taken as they are. Content-defined cuts usually meet within a few
//! chunks; where they never meet (long runs of one byte value, or data
//! whose cuts are periodic with a period that does not divide the offset)
//! the sequential run simply covers the region, which costs time but never
//! changes a cut. The result is the sequential cut list for every input
//! (a differential test checks it); memory stays the buffer plus one cut
//! list per region.

use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::{Normalization, cut_gear, select_masks};
use rayon::prelude::*;

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
        ranges(&self.cut_ends(data, 0, data.len()))
    }

    /// The ends of the chunks cut from position `from` of `data` as if a
    /// chunk started there, for every chunk that starts before `until`.
    /// Each cut sees all of `data` after the chunk's start, as a sequential
    /// cut of `data` would.
    pub fn cut_ends(&self, data: &[u8], from: usize, until: usize) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut start = from;
        while start < until {
            start += self.next_cut(&data[start..]);
            ends.push(start);
        }
        ends
    }

    /// [`Self::cut_ends`] from 0, searched in up to `regions` regions of
    /// `0..until` in parallel (see the module doc). The result is the same
    /// as the sequential search's for every input.
    pub fn cut_ends_parallel(&self, data: &[u8], until: usize, regions: usize) -> Vec<usize> {
        let regions = regions.clamp(1, until.max(1));
        if regions == 1 {
            return self.cut_ends(data, 0, until);
        }
        let bounds: Vec<usize> = (0..=regions)
            .map(|i| {
                if i == regions {
                    until
                } else {
                    until / regions * i
                }
            })
            .collect();
        let mut runs: Vec<Vec<usize>> = bounds
            .par_windows(2)
            .map(|w| self.cut_ends(data, w[0], w[1]))
            .collect();
        let mut ends = std::mem::take(&mut runs[0]);
        for (run, w) in runs.iter().zip(bounds.windows(2)).skip(1) {
            self.resynchronise(data, &mut ends, w[0], w[1], run);
        }
        ends
    }

    /// Extends the true chunk `ends` over the region `from..until`, whose
    /// own chain (starting at `from`) has the ends `run`: sequentially
    /// until the true chain reaches a position of the region's chain, then
    /// with the rest of `run`.
    fn resynchronise(
        &self,
        data: &[u8],
        ends: &mut Vec<usize>,
        from: usize,
        until: usize,
        run: &[usize],
    ) {
        let mut pos = ends.last().copied().unwrap_or(0);
        let mut next = 0; // first element of `run` not below `pos`
        while pos < until {
            while next < run.len() && run[next] < pos {
                next += 1;
            }
            if pos == from {
                ends.extend_from_slice(run);
                return;
            }
            if run.get(next) == Some(&pos) {
                ends.extend_from_slice(&run[next + 1..]);
                return;
            }
            pos += self.next_cut(&data[pos..]);
            ends.push(pos);
        }
    }
}

/// Chunk ranges from the ends of consecutive chunks starting at 0.
pub fn ranges(ends: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

/// A batch of whole chunks read from a stream: one buffer and the ranges
/// of the chunks in it.
pub struct Batch {
    pub data: Vec<u8>,
    pub chunks: Vec<Range<usize>>,
}

/// A region of a parallel cut search spans at least this many maximum
/// chunks, so that re-synchronising (usually a few chunks) stays small
/// beside the work the region saves.
pub const REGION_MIN_MAX_CHUNKS: usize = 4;

/// Bytes a stream's first read has room for before its buffer grows.
const SMALL_READ: usize = 128 << 10;

/// Reads a stream in large segments and cuts it into batches of whole
/// chunks; memory is bounded by the segment size plus one maximum chunk.
/// A segment is searched for cut points in up to one region per rayon
/// thread ([`Chunker::cut_ends_parallel`]; the same cuts as one thread).
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    carry: Vec<u8>,
    segment: usize,
    regions: usize,
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
            regions: rayon::current_num_threads(),
            eof: false,
        }
    }

    /// Searches each segment in at most `regions` regions at once (1: on
    /// the calling thread only). The default is the number of rayon
    /// threads, so with one thread (`--memory small`) it stays sequential.
    #[must_use]
    pub fn with_regions(mut self, regions: usize) -> Self {
        self.regions = regions.max(1);
        self
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
        // Without EOF, only cut where at least `max` bytes are visible, so a
        // cut never depends on where a segment happened to end.
        let until = if self.eof {
            data.len()
        } else {
            (data.len() + 1).saturating_sub(max)
        };
        let regions = self.regions.min(until / (REGION_MIN_MAX_CHUNKS * max));
        let ends = self.chunker.cut_ends_parallel(&data, until, regions);
        let start = ends.last().copied().unwrap_or(0);
        let chunks = ranges(&ends);
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
        // Room for a whole segment, or on a stream's first read (nothing
        // carried over) for a small file, in one read: `read_to_end` alone
        // starts small and grows, a read per doubling.
        let room = if data.is_empty() {
            SMALL_READ
        } else {
            self.segment
        };
        data.reserve(room.min(self.segment));
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

    const TINY: ChunkerParams = ChunkerParams {
        min: 64,
        avg: 256,
        max: 1024,
        normalization: 2,
    };

    /// Inputs of the differential tests: `kind` 0 random, 1 all zero,
    /// 2 a short random pattern repeated (cuts periodic or never), 3 random
    /// blocks of 5000 bytes each repeated, 4 generated log lines.
    fn input(kind: u8, len: usize, seed: u64) -> Vec<u8> {
        match kind {
            0 => pseudo_random(len, seed),
            1 => vec![0; len],
            2 => {
                let pattern = pseudo_random(1 + (seed % 97) as usize, seed);
                pattern.iter().copied().cycle().take(len).collect()
            }
            3 => pseudo_random(5000, seed)
                .into_iter()
                .cycle()
                .take(len)
                .collect(),
            _ => (0..)
                .flat_map(|i: u64| {
                    format!("{i} GET /a/{} 200\n", i.wrapping_mul(seed) % 1000).into_bytes()
                })
                .take(len)
                .collect(),
        }
    }

    /// The sequential cut ends that [`ChunkStream`] gives for a buffer,
    /// with or without the end of the stream in it.
    fn until(params: ChunkerParams, len: usize, eof: bool) -> usize {
        if eof {
            len
        } else {
            (len + 1).saturating_sub(params.max as usize)
        }
    }

    fn assert_parallel_matches(chunker: &Chunker, data: &[u8], eof: bool, regions: usize) {
        let until = until(chunker.params(), data.len(), eof);
        let sequential = chunker.cut_ends(data, 0, until);
        let parallel = chunker.cut_ends_parallel(data, until, regions);
        assert_eq!(
            parallel,
            sequential,
            "len {} eof {eof} regions {regions}",
            data.len()
        );
    }

    #[test]
    fn parallel_search_matches_sequential() {
        for params in [PARAMS, TINY] {
            let chunker = Chunker::new(&[3; 32], params);
            let max = params.max as usize;
            for kind in 0..=4 {
                for len in [0, 1, max - 1, max, max + 1, 3 * max + 17, 300_000] {
                    let data = input(kind, len, 11 + len as u64);
                    // Regions of one byte, smaller than `max`, and large.
                    for regions in [1, 2, 3, 7, 64, len / (max / 3).max(1), len] {
                        for eof in [true, false] {
                            assert_parallel_matches(&chunker, &data, eof, regions);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_search_covers_the_buffer() {
        let chunker = Chunker::new(&[4; 32], PARAMS);
        let data = pseudo_random(1 << 20, 5);
        let ends = chunker.cut_ends_parallel(&data, data.len(), 5);
        assert_eq!(ends.last(), Some(&data.len()));
        assert_eq!(ranges(&ends), chunker.cut_all(&data));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn parallel_search_matches_sequential_for_any_input(
            seed in 1u64..,
            kind in 0u8..=4,
            len in 0usize..200_000,
            regions in 1usize..80,
            eof: bool,
            tiny: bool,
        ) {
            let chunker = Chunker::new(&seed.to_le_bytes().repeat(4).try_into().unwrap(), if tiny { TINY } else { PARAMS });
            assert_parallel_matches(&chunker, &input(kind, len, seed), eof, regions);
        }
    }

    #[test]
    fn parallel_stream_matches_sequential_at_segment_boundaries() {
        let chunker = Chunker::new(&[6; 32], PARAMS);
        let segment = 1 << 20;
        for kind in 0..=4 {
            for len in [
                segment - 1,
                segment,
                segment + 1,
                3 * segment,
                3 * segment + 5,
            ] {
                let data = input(kind, len, 7 + kind as u64);
                let whole = chunker.cut_all(&data);
                for regions in [1, 2, 4, 16] {
                    let mut stream = ChunkStream::new(&chunker, Dribble(&data, 300_000), segment)
                        .with_regions(regions);
                    let mut cuts = Vec::new();
                    let mut offset = 0;
                    while let Some(batch) = stream.next_batch().unwrap() {
                        cuts.extend(
                            batch
                                .chunks
                                .iter()
                                .map(|r| r.start + offset..r.end + offset),
                        );
                        offset += batch.data.len();
                    }
                    assert_eq!(cuts, whole, "kind {kind} len {len} regions {regions}");
                }
            }
        }
    }

    #[test]
    fn different_keys_cut_differently() {
        let data = pseudo_random(1 << 20, 2);
        let a = Chunker::new(&[1; 32], PARAMS).cut_all(&data);
        let b = Chunker::new(&[2; 32], PARAMS).cut_all(&data);
        assert_ne!(a, b);
    }
}
