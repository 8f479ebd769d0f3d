//! zstd compression of blob and object payloads. Decompression is bounded:
//! a caller names the exact size it expects, and nothing larger is produced.

use crate::error::{Error, Result};

/// Compresses `data` at `level`; `None` if zstd fails (never expected).
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    zstd::bulk::compress(data, level).ok()
}

/// Decompresses into at most `capacity` bytes.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] if the stream is invalid or larger than
/// `capacity`.
pub fn decompress(data: &[u8], capacity: usize) -> Result<Vec<u8>> {
    zstd::bulk::decompress(data, capacity).map_err(|e| {
        Error::corrupt(format!(
            "zstd payload does not decode within {capacity} bytes: {e}"
        ))
    })
}
