//! Repository config (format-spec/01-versioning.md).
//!
//! ```text
//! 0  8  magic "KURACFG1"        20 8  compatible features u64
//! 8  4  format version u32      28 32 repository id
//! 12 8  mandatory features u64  60 .. envelope(Config, id = BLAKE3(bytes 0..60), frame(JSON body))
//! ```
//! The clear header lets a client refuse an unsupported repository before
//! asking for a password (a format-1 repository with its own message); the
//! envelope's object id binds it to the body. The body is sealed under
//! K_shared, so every role reads it, and names the admin's X25519 public
//! key A, which data, trees and snapshot bodies are sealed to.

use serde::{Deserialize, Serialize};

use crate::algorithms::crypto::AeadKey;
use crate::error::{Error, Result};
use crate::format::envelope::{self, ObjectType};
use crate::format::{ByteReader, frame, unsupported};
use crate::id::RepoId;

pub const MAGIC: &[u8; 8] = b"KURACFG1";
pub const HEADER_LEN: usize = 60;
pub const VERSION: u32 = 3;
/// Mandatory feature bits this client implements (none in v1).
pub const KNOWN_MANDATORY_FEATURES: u64 = 0;
/// Largest config body a reader accepts.
pub const MAX_BODY_LEN: usize = 64 << 10;
/// Largest stored config a reader reads (format-spec/07): the clear
/// header and the sealed frame of a body of [`MAX_BODY_LEN`] bytes. A
/// longer `config` is refused before it is read.
pub const MAX_STORED_LEN: usize =
    HEADER_LEN + envelope::OVERHEAD + frame::HEADER_LEN + MAX_BODY_LEN;

/// Algorithm names (format-spec/01-versioning.md): the behaviour behind a
/// name never changes.
pub const CHUNKER_FASTCDC_V2020: &str = "fastcdc-v2020";
pub const ID_BLAKE3_KEYED: &str = "blake3-keyed";
pub const AEAD_XCHACHA20_POLY1305: &str = "xchacha20-poly1305";
pub const COMPRESSION_ZSTD: &str = "zstd";
pub const KDF_ARGON2ID: &str = "argon2id";
pub const PACK_V1: &str = "kura-pack-v1";

/// Largest maximum chunk size a config may name.
pub const MAX_CHUNK_LIMIT: u32 = 16 << 20;

/// The clear part of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigHeader {
    pub version: u32,
    pub mandatory_features: u64,
    pub compatible_features: u64,
    pub repo: RepoId,
}

pub use crate::algorithms::chunker::ChunkerParams;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    pub algorithm: String,
    #[serde(flatten)]
    pub params: ChunkerParams,
}

/// The encrypted part of the config: the algorithms and their parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    pub chunker: ChunkerConfig,
    pub id: String,
    pub aead: String,
    pub compression: String,
    pub kdf: String,
    pub pack: String,
    /// A, the admin's X25519 public key, 64 hex digits.
    pub admin_public_key: String,
    /// When the repository was made: Unix seconds, the writer's clock.
    /// Prune records dated before it are refused (format-spec/12).
    pub created: u64,
}

impl ConfigBody {
    /// The body a new format-2 repository with admin public key
    /// `admin_public`, made at `created` (Unix seconds), gets.
    pub fn v2(chunker: ChunkerParams, admin_public: &[u8; 32], created: u64) -> Self {
        Self {
            chunker: ChunkerConfig {
                algorithm: CHUNKER_FASTCDC_V2020.into(),
                params: chunker,
            },
            id: ID_BLAKE3_KEYED.into(),
            aead: AEAD_XCHACHA20_POLY1305.into(),
            compression: COMPRESSION_ZSTD.into(),
            kdf: KDF_ARGON2ID.into(),
            pack: PACK_V1.into(),
            admin_public_key: hex::encode(admin_public),
            created,
        }
    }

    /// A, decoded.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] unless it is 64 hex digits.
    pub fn admin_public(&self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.admin_public_key, &mut out)
            .map_err(|e| Error::corrupt(format!("repository config: admin_public_key: {e}")))?;
        Ok(out)
    }

    /// Refuses algorithm names and parameters this client does not implement.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unsupported`] naming the first unknown algorithm;
    /// [`crate::ErrorKind::Corrupt`] for impossible chunker parameters.
    pub fn check(&self) -> Result<()> {
        let names = [
            (
                "chunker",
                self.chunker.algorithm.as_str(),
                CHUNKER_FASTCDC_V2020,
            ),
            ("id", &self.id, ID_BLAKE3_KEYED),
            ("aead", &self.aead, AEAD_XCHACHA20_POLY1305),
            ("compression", &self.compression, COMPRESSION_ZSTD),
            ("kdf", &self.kdf, KDF_ARGON2ID),
            ("pack", &self.pack, PACK_V1),
        ];
        for (what, got, known) in names {
            if got != known {
                return Err(unsupported(
                    &format!("{what} algorithm"),
                    format!("{got:?}"),
                ));
            }
        }
        self.admin_public()?;
        self.chunker.params.check()
    }
}

impl ChunkerParams {
    /// Checks that the sizes are even, ordered, within limits, and that the
    /// normalization level is one FastCDC knows.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] naming what is wrong.
    pub fn check(&self) -> Result<()> {
        let Self {
            min,
            avg,
            max,
            normalization,
        } = *self;
        let even = min % 2 == 0 && avg % 2 == 0 && max % 2 == 0;
        let in_range = (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && (1024..=MAX_CHUNK_LIMIT).contains(&max);
        if !even || !in_range || min >= avg || avg >= max || normalization > 3 {
            return Err(Error::corrupt(format!(
                "impossible chunker parameters min={min} avg={avg} max={max} normalization={normalization}"
            )));
        }
        Ok(())
    }
}

impl ConfigHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..20].copy_from_slice(&self.mandatory_features.to_le_bytes());
        h[20..28].copy_from_slice(&self.compatible_features.to_le_bytes());
        h[28..60].copy_from_slice(self.repo.as_bytes());
        h
    }

    /// Decodes the clear header of a config object and refuses versions and
    /// mandatory features this client does not implement.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] for a damaged header;
    /// [`crate::ErrorKind::Unsupported`] for a newer version or an unknown
    /// mandatory feature.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = ByteReader::new(bytes, "repository config");
        if r.bytes(8)? != MAGIC {
            return Err(Error::corrupt("not a kura repository config (bad magic)"));
        }
        let header = Self {
            version: r.u32()?,
            mandatory_features: r.u64()?,
            compatible_features: r.u64()?,
            repo: RepoId(r.id()?),
        };
        if (1..VERSION).contains(&header.version) {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!(
                    "this repository was written by an earlier kura (format {}); this kura \
                     reads format {VERSION} only: copy it with the kura that wrote it, or back \
                     up again into a new repository",
                    header.version
                ),
            ));
        }
        if header.version != VERSION {
            return Err(unsupported("repository format version", header.version));
        }
        let unknown = header.mandatory_features & !KNOWN_MANDATORY_FEATURES;
        if unknown != 0 {
            return Err(unsupported(
                "mandatory repository feature set",
                format!("{unknown:#x}"),
            ));
        }
        Ok(header)
    }

    /// The config body's envelope object id: BLAKE3 of the clear header.
    pub fn object_id(encoded: &[u8; HEADER_LEN]) -> [u8; 32] {
        *blake3::hash(encoded).as_bytes()
    }
}

/// Encodes a whole config object.
pub fn encode(header: &ConfigHeader, body: &ConfigBody, key: &AeadKey) -> Vec<u8> {
    encode_with_nonce(
        header,
        body,
        key,
        &crate::algorithms::crypto::random_array(),
    )
}

/// [`encode`] with a chosen nonce; only for test vectors.
pub fn encode_with_nonce(
    header: &ConfigHeader,
    body: &ConfigBody,
    key: &AeadKey,
    nonce: &[u8; crate::algorithms::crypto::NONCE_LEN],
) -> Vec<u8> {
    let h = header.encode();
    let json = serde_json::to_vec(body).expect("config body serializes");
    let sealed = envelope::seal_with_nonce(
        key,
        nonce,
        ObjectType::Config,
        &ConfigHeader::object_id(&h),
        &header.repo,
        &frame::encode(&json, 0),
    );
    let mut out = h.to_vec();
    out.extend_from_slice(&sealed);
    out
}

/// Opens the body of a config object whose header already decoded.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] if the body fails authentication (wrong
/// key or tampered header/body) or does not parse;
/// [`crate::ErrorKind::Unsupported`] for an unknown algorithm.
pub fn open_body(bytes: &[u8], key: &AeadKey) -> Result<ConfigBody> {
    let header = ConfigHeader::decode(bytes)?;
    let h: &[u8; HEADER_LEN] = bytes[..HEADER_LEN]
        .try_into()
        .expect("decoded header has 60 bytes");
    let plain = envelope::open(
        key,
        ObjectType::Config,
        &ConfigHeader::object_id(h),
        &header.repo,
        &bytes[HEADER_LEN..],
    )?;
    let json = frame::decode(&plain, MAX_BODY_LEN)?;
    let body: ConfigBody = serde_json::from_slice(&json)
        .map_err(|e| Error::corrupt(format!("repository config body does not parse: {e}")))?;
    body.check()?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_and_body_round_trip(
            repo in any::<[u8; 32]>(), compatible in any::<u64>(),
            avg_log in 8u32..=22, normalization in 0u8..=3, key in any::<[u8; 32]>(),
        ) {
            let avg = 1u32 << avg_log;
            let params = ChunkerParams { min: (avg / 4).max(64), avg, max: (avg * 4).clamp(1024, MAX_CHUNK_LIMIT), normalization };
            prop_assume!(params.check().is_ok());
            let header = ConfigHeader { version: VERSION, mandatory_features: 0, compatible_features: compatible, repo: RepoId(repo) };
            let body = ConfigBody::v2(params, &[9; 32], 1_764_115_200);
            let key = AeadKey(key);
            let bytes = encode(&header, &body, &key);
            prop_assert_eq!(ConfigHeader::decode(&bytes).unwrap(), header);
            prop_assert_eq!(open_body(&bytes, &key).unwrap(), body);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = ConfigHeader::decode(&data);
            let _ = open_body(&data, &AeadKey([0; 32]));
        }
    }

    fn sample() -> (ConfigHeader, ConfigBody) {
        let header = ConfigHeader {
            version: VERSION,
            mandatory_features: 0,
            compatible_features: 0,
            repo: RepoId([1; 32]),
        };
        let body = ConfigBody::v2(
            ChunkerParams {
                min: 16 << 10,
                avg: 64 << 10,
                max: 256 << 10,
                normalization: 1,
            },
            &[9; 32],
            1_764_115_200,
        );
        (header, body)
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = AeadKey([2; 32]);
        let (header, body) = sample();
        let bytes = encode(&header, &body, &key);
        assert_eq!(open_body(&bytes, &key).unwrap(), body);
        let mut tampered = bytes.clone();
        tampered[20] ^= 1; // a compatible feature bit: header is bound to the body
        assert_eq!(
            open_body(&tampered, &key).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn unknown_mandatory_feature_and_version_are_refused() {
        let key = AeadKey([2; 32]);
        let (mut header, body) = sample();
        header.mandatory_features = 1 << 5;
        let err = ConfigHeader::decode(&encode(&header, &body, &key)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        header.mandatory_features = 0;
        header.version = 4;
        let err = ConfigHeader::decode(&encode(&header, &body, &key)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        for earlier in [1, 2] {
            header.version = earlier;
            let err = ConfigHeader::decode(&encode(&header, &body, &key)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported);
            let said = format!(
                "written by an earlier kura (format {earlier}); this kura reads format 3 only"
            );
            assert!(err.to_string().contains(&said), "{err}");
        }
        header.version = 3;
        header.compatible_features = u64::MAX; // unknown compatible bits are fine
        assert!(open_body(&encode(&header, &body, &key), &key).is_ok());
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let key = AeadKey([2; 32]);
        let (header, mut body) = sample();
        body.aead = "rot13".into();
        let err = open_body(&encode(&header, &body, &key), &key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}
