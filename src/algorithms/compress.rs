//! zstd compression of blob and object payloads. Decompression is bounded:
//! a caller names the exact size it expects, and nothing larger is produced.

use crate::error::{Error, Result};

use std::cell::RefCell;

thread_local! {
    /// One compression context per thread and level, reused across blobs
    /// (building a context costs more than compressing a small chunk).
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    /// One decompression context per thread, likewise.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` at `level`; `None` if zstd fails (never expected).
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(data).ok()
    })
}

/// Bytes [`looks_incompressible`] compresses, in [`SAMPLES`] samples.
const SAMPLE: usize = 64 << 10;
/// Samples taken evenly across the data, so that a group of several small
/// files (some text, some JPEG) is not judged by one of them.
const SAMPLES: usize = 4;

/// Whether `data` looks not worth compressing: for data over twice
/// [`SAMPLE`], each of [`SAMPLES`] samples spread evenly across it,
/// compressed at level 1, saves less than 3 %. Costs about a tenth of
/// compressing 1 MiB at level 3, and saves all of it on JPEG, video or
/// already compressed dumps.
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() <= 2 * SAMPLE {
        return false;
    }
    let len = SAMPLE / SAMPLES;
    let stride = data.len() / SAMPLES;
    (0..SAMPLES).all(|i| {
        let at = i * stride + (stride - len) / 2;
        let sample = &data[at..at + len];
        compress(sample, 1).is_none_or(|c| c.len() * 100 > sample.len() * 97)
    })
}

/// Decompresses into at most `capacity` bytes.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] if the stream is invalid or larger than
/// `capacity`.
pub fn decompress(data: &[u8], capacity: usize) -> Result<Vec<u8>> {
    let corrupt = |e: std::io::Error| {
        Error::corrupt(format!(
            "zstd payload does not decode within {capacity} bytes: {e}"
        ))
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(corrupt)?);
        }
        let decompressor = slot.as_mut().expect("set above");
        decompressor.decompress(data, capacity).map_err(corrupt)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_look_incompressible_and_text_does_not() {
        let mut random = vec![0u8; 300 << 10];
        blake3::Hasher::new()
            .update(b"sample")
            .finalize_xof()
            .fill(&mut random);
        assert!(looks_incompressible(&random));
        let text = b"row 1234 | 0 | 0 | abcdef\n".repeat(12_000);
        assert!(!looks_incompressible(&text));
        assert!(
            !looks_incompressible(&random[..100 << 10]),
            "small: always tried"
        );
        // Three quarters random, one quarter text: worth compressing.
        let mut mixed = random[..225 << 10].to_vec();
        mixed.extend_from_slice(&text[..75 << 10]);
        assert!(!looks_incompressible(&mixed));
    }
}
