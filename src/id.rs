//! Typed 32-byte identifiers, one type per kind of object, so a pack id can
//! never be passed where a chunk id is expected. Hex is their only text form
//! (`Display`, and `Serialize` for reports).

use std::fmt;

use crate::error::{Error, Result};

/// Length in bytes of every identifier in the format.
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// A fresh identifier from the operating system's CSPRNG.
            pub fn random() -> Self {
                Self(crate::algorithms::crypto::random_array())
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly 64 lowercase hex digits (the only form of a name).
            pub fn from_hex(text: &str) -> Result<Self> {
                let mut bytes = [0u8; ID_LEN];
                let lowercase = !text.bytes().any(|b| b.is_ascii_uppercase());
                hex::decode_to_slice(text, &mut bytes).ok().filter(|()| lowercase).ok_or_else(|| {
                    Error::new(
                        crate::error::ErrorKind::InvalidInput,
                        format!("not a {} (64 hex digits): {text:?}", stringify!($name)),
                    )
                })?;
                Ok(Self(bytes))
            }

            /// Reads an id from the first 32 bytes of `bytes` (the caller
            /// has checked the length).
            pub fn from_slice(bytes: &[u8]) -> Self {
                let mut id = [0u8; ID_LEN];
                id.copy_from_slice(&bytes[..ID_LEN]);
                Self(id)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        /// Its hex text, as every report and `--json` shows ids.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a chunk's (or tree's) plaintext.
    ChunkId
);
id_type!(
    /// Random name of a pack file.
    PackId
);
id_type!(
    /// Random name of an index file.
    IndexId
);
id_type!(
    /// Random name of a snapshot.
    SnapshotId
);
id_type!(
    /// Random name of a key slot.
    KeySlotId
);
id_type!(
    /// Random name of a prune record (format-spec/12-prune.md).
    RecordId
);
id_type!(
    /// Random identity of a repository, bound into every envelope.
    RepoId
);
