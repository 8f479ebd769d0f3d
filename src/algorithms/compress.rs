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
