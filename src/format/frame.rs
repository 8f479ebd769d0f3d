//! Frame (format-spec/03-envelope.md): the plaintext inside an envelope,
//! saying whether the payload is compressed and how long it is raw.
//!
//! ```text
//! codec u8 (0 raw, 1 zstd) | raw_len u32 | payload
//! codec u8 (2 raw, 3 zstd) | raw_len u32 | payload_len u32 | payload | zeros
//! ```
//!
//! Codecs 2 and 3 are the padded forms: zero bytes after the payload bring
//! the frame to `padme` of its unpadded length, so the stored size of an
//! index file, snapshot or prune record tells an observer little more
//! than its order of magnitude (format-spec/03, "Padded frames").

use crate::algorithms::compress;
use crate::error::{Error, Result};
use crate::format::{ByteReader, padme};

pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
pub const CODEC_RAW_PADDED: u8 = 2;
pub const CODEC_ZSTD_PADDED: u8 = 3;
/// Bytes a frame adds before its payload.
pub const HEADER_LEN: usize = 5;
/// Bytes a padded frame adds before its payload.
pub const PADDED_HEADER_LEN: usize = 9;

/// Builds a frame for `data`, compressing it with zstd at `level` when that
/// makes it strictly smaller (`level == 0` disables compression). Data a
/// sample says is incompressible is stored raw without trying
/// ([`compress::looks_incompressible`]).
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    let raw_len = u32::try_from(data.len()).expect("frames are limited to 4 GiB");
    let compressed = (level != 0 && !compress::looks_incompressible(data))
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

/// As [`encode`], in the padded form: the payload's length, then zeros up
/// to `padme` of the unpadded frame's length.
pub fn encode_padded(data: &[u8], level: i32) -> Vec<u8> {
    let plain = encode(data, level);
    let payload = &plain[HEADER_LEN..];
    let unpadded = PADDED_HEADER_LEN + payload.len();
    let padded = usize::try_from(padme(unpadded as u64)).expect("a frame fits in memory");
    let mut out = Vec::with_capacity(padded);
    out.push(plain[0] + CODEC_RAW_PADDED);
    out.extend_from_slice(&plain[1..HEADER_LEN]);
    out.extend_from_slice(&u32::try_from(payload.len()).expect("4 GiB").to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(padded, 0);
    out
}

/// Decodes a frame of any codec, refusing before any work a raw length
/// above `limit`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for an unknown codec, a length mismatch,
/// a raw length above `limit`, padding that is not zeros, or a zstd
/// stream that does not decode.
pub fn decode(frame: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut r = ByteReader::new(frame, "frame");
    let codec = r.u8()?;
    let raw_len = r.u32()? as usize;
    if raw_len > limit {
        return Err(Error::corrupt(format!(
            "frame declares {raw_len} bytes, above the limit of {limit}"
        )));
    }
    let payload = match codec {
        CODEC_RAW | CODEC_ZSTD => r.remaining(),
        CODEC_RAW_PADDED | CODEC_ZSTD_PADDED => {
            let len = r.u32()? as usize;
            let payload = r.bytes(len)?;
            if r.remaining().iter().any(|&b| b != 0) {
                return Err(Error::corrupt("frame padding is not zeros"));
            }
            payload
        }
        other => return Err(Error::corrupt(format!("unknown frame codec {other}"))),
    };
    let out = match codec {
        CODEC_RAW | CODEC_RAW_PADDED => payload.to_vec(),
        _ => compress::decompress(payload, raw_len)?,
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

    #[test]
    fn padded_frames_round_up_to_padme_and_refuse_other_padding() {
        let data = text(10_000);
        for level in [0, 3] {
            let framed = encode_padded(&data, level);
            let unpadded = PADDED_HEADER_LEN + encode(&data, level).len() - HEADER_LEN;
            assert_eq!(framed.len() as u64, padme(unpadded as u64));
            assert_eq!(decode(&framed, data.len()).unwrap(), data);
            let mut bad = framed.clone();
            *bad.last_mut().unwrap() = 1;
            if bad.len() > unpadded {
                assert!(decode(&bad, data.len()).is_err(), "padding not zeros");
            }
            let mut long = framed;
            long[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(decode(&long, data.len()).is_err(), "payload past the end");
        }
    }

    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"kura stores "[i % 12] ^ (i / 97) as u8)
            .collect()
    }

    proptest! {
        #[test]
        fn padded_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), level in 0i32..5) {
            prop_assert_eq!(decode(&encode_padded(&data, level), 3000).unwrap(), data);
        }

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
