//! Frame (format-spec/03-envelope.md): the plaintext inside an envelope,
//! saying whether the payload is compressed and how long it is raw.
//!
//! ```text
//! codec u8 (0 raw, 1 zstd) | raw_len u32 | payload
//! ```

use crate::algorithms::compress;
use crate::error::{Error, Result};
use crate::format::ByteReader;

pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
/// Bytes a frame adds before its payload.
pub const HEADER_LEN: usize = 5;

/// Builds a frame for `data`, compressing it with zstd at `level` when that
/// makes it strictly smaller (`level == 0` disables compression).
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    let raw_len = u32::try_from(data.len()).expect("frames are limited to 4 GiB");
    let compressed = (level != 0)
        .then(|| compress::compress(data, level))
        .flatten();
    let (codec, payload) = match &compressed {
        Some(c) if c.len() < data.len() => (CODEC_ZSTD, c.as_slice()),
        _ => (CODEC_RAW, data),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(codec);
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a frame, refusing before any work a raw length above `limit`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for an unknown codec, a length mismatch,
/// a raw length above `limit`, or a zstd stream that does not decode.
pub fn decode(frame: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut r = ByteReader::new(frame, "frame");
    let codec = r.u8()?;
    let raw_len = r.u32()? as usize;
    if raw_len > limit {
        return Err(Error::corrupt(format!(
            "frame declares {raw_len} bytes, above the limit of {limit}"
        )));
    }
    let payload = r.remaining();
    let out = match codec {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => compress::decompress(payload, raw_len)?,
        other => return Err(Error::corrupt(format!("unknown frame codec {other}"))),
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(format!(
            "frame declares {raw_len} bytes but holds {}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incompressible_is_stored_raw() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let random = crate::algorithms::crypto::random_array::<4096>();
        assert_eq!(encode(&random, 3)[0], CODEC_RAW);
        assert_eq!(encode(&[0u8; 4096], 3)[0], CODEC_ZSTD);
        assert_eq!(decode(&encode(&data, 3), 4096).unwrap(), data);
    }

    #[test]
    fn limit_is_enforced_before_decompressing() {
        let bomb = encode(&vec![0u8; 1 << 20], 3);
        assert!(bomb.len() < 1000);
        assert!(decode(&bomb, (1 << 20) - 1).is_err());
        assert!(decode(&bomb, 1 << 20).is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), level in 0i32..5) {
            prop_assert_eq!(decode(&encode(&data, level), 3000).unwrap(), data);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&data, 1 << 16);
        }
    }
}
