//! Author block (format-spec/06, 11, 12): the last 36 bytes of the
//! payload of every index file, prune record and snapshot, inside the
//! frame (so encrypted with the object):
//!
//! ```text
//! writer u32le (0 = admin, k = put-only key id) | mac [32]
//! mac = BLAKE3-keyed(K_writer, "kura v2 author" | u8(object_type) | object_id [32] | payload before the block)
//! ```
//!
//! K_writer is K_admin for writer 0 and K_w(k) for put-only key k. Owns
//! the one rule of who can check it: an admin derives every K_writer and
//! so verifies every block ([`Authenticity::Verified`] or
//! [`Authenticity::Forged`]); a put-only key holds only its own K_w and
//! trusts the AEAD alone ([`Authenticity::Unverifiable`]).

use crate::algorithms::crypto::KEY_LEN;
use crate::algorithms::crypto::roles::{ADMIN_WRITER, KeySet};
use crate::error::{Error, Result};
use crate::format::envelope::ObjectType;
use crate::id::ID_LEN;

/// Bytes the block adds to a payload.
pub const BLOCK_LEN: usize = 4 + 32;
/// Prefix of the MAC input, separating it from any other keyed hash.
pub const MAC_CONTEXT: &[u8] = b"kura v2 author";

/// Who wrote an object, as its author block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Writer {
    Admin,
    PutOnly(u32),
}

impl Writer {
    pub fn from_u32(id: u32) -> Self {
        if id == ADMIN_WRITER {
            Self::Admin
        } else {
            Self::PutOnly(id)
        }
    }

    pub fn id(self) -> u32 {
        match self {
            Self::Admin => ADMIN_WRITER,
            Self::PutOnly(k) => k,
        }
    }
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::PutOnly(k) => write!(f, "put-only key {k:08x}"),
        }
    }
}

/// Whether the reader could check the author block, and what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Authenticity {
    /// An admin checked the MAC: the writer named wrote it.
    Verified,
    /// An admin checked the MAC and it is wrong: whoever wrote it held
    /// K_shared but not the named writer's key.
    Forged,
    /// A put-only reader, which cannot check another writer's MAC.
    Unverifiable,
}

/// The payload of an object without its author block, and what the
/// block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorship {
    pub writer: Writer,
    pub authenticity: Authenticity,
}

impl Authorship {
    /// Written by the admin, and checked: the only authorship that admin
    /// metadata (prune records, supersedes lists) is honoured with.
    pub fn is_verified_admin(&self) -> bool {
        self.writer == Writer::Admin && self.authenticity == Authenticity::Verified
    }
}

fn mac(
    key: &[u8; KEY_LEN],
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    payload: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(MAC_CONTEXT);
    h.update(&[object_type as u8]);
    h.update(object_id);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Appends the author block of `keys`' own writer to `payload`.
pub fn seal(
    keys: &KeySet,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    payload: &mut Vec<u8>,
) {
    seal_as(
        keys.writer(),
        &keys.own_mac_key(),
        object_type,
        object_id,
        payload,
    );
}

/// Appends an author block naming `writer`, MAC'd with `key`; for test
/// vectors and forgery tests (a wrong key makes a forged block).
pub fn seal_as(
    writer: u32,
    key: &[u8; KEY_LEN],
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    payload: &mut Vec<u8>,
) {
    let tag = mac(key, object_type, object_id, payload);
    payload.extend_from_slice(&writer.to_le_bytes());
    payload.extend_from_slice(&tag);
}

/// Splits the author block off `payload` and checks it as far as `keys`
/// can; returns the payload before the block.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a payload shorter than the block. A
/// wrong MAC is not an error here: it is [`Authenticity::Forged`], and
/// each reader decides what that means for it.
pub fn verify<'a>(
    keys: &KeySet,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    payload: &'a [u8],
) -> Result<(&'a [u8], Authorship)> {
    let Some(split) = payload.len().checked_sub(BLOCK_LEN) else {
        return Err(Error::corrupt(format!(
            "{object_type:?} {}: too short for its author block",
            hex::encode(object_id)
        )));
    };
    let (body, block) = payload.split_at(split);
    let writer = u32::from_le_bytes(block[..4].try_into().expect("4 bytes"));
    let authenticity = match keys.mac_key_of(writer) {
        None => Authenticity::Unverifiable,
        Some(key) => {
            let want = blake3::Hash::from(mac(&key, object_type, object_id, body));
            // blake3::Hash compares in constant time.
            if want == blake3::Hash::from(<[u8; 32]>::try_from(&block[4..]).expect("32 bytes")) {
                Authenticity::Verified
            } else {
                Authenticity::Forged
            }
        }
    };
    Ok((
        body,
        Authorship {
            writer: Writer::from_u32(writer),
            authenticity,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::crypto::MasterSecret;

    fn admin() -> KeySet {
        KeySet::admin(MasterSecret::from_bytes([3; 32]))
    }

    fn put_only(k: u32) -> KeySet {
        let master = MasterSecret::from_bytes([3; 32]);
        KeySet::put_only(master.subkeys(), k, *master.writer_mac(k))
    }

    #[test]
    fn the_admin_verifies_every_writer_and_spots_forgeries() {
        let id = [7; 32];
        for writer in [admin(), put_only(5)] {
            let mut payload = b"body".to_vec();
            seal(&writer, ObjectType::Index, &id, &mut payload);
            assert_eq!(payload.len(), 4 + BLOCK_LEN);
            let (body, who) = verify(&admin(), ObjectType::Index, &id, &payload).unwrap();
            assert_eq!(body, b"body");
            assert_eq!(who.writer, Writer::from_u32(writer.writer()));
            assert_eq!(who.authenticity, Authenticity::Verified);
            // Bound to the type, the id and every byte of the body.
            for (t, i) in [(ObjectType::Snapshot, id), (ObjectType::Index, [8; 32])] {
                let (_, who) = verify(&admin(), t, &i, &payload).unwrap();
                assert_eq!(who.authenticity, Authenticity::Forged);
            }
            let mut flipped = payload.clone();
            flipped[0] ^= 1;
            let (_, who) = verify(&admin(), ObjectType::Index, &id, &flipped).unwrap();
            assert_eq!(who.authenticity, Authenticity::Forged);
        }
    }

    #[test]
    fn a_put_only_key_cannot_pass_as_the_admin_or_another_key() {
        let id = [7; 32];
        let forger = put_only(5);
        for claimed in [ADMIN_WRITER, 6] {
            let mut payload = b"body".to_vec();
            seal_as(
                claimed,
                &forger.own_mac_key(),
                ObjectType::PruneRecord,
                &id,
                &mut payload,
            );
            let (_, who) = verify(&admin(), ObjectType::PruneRecord, &id, &payload).unwrap();
            assert_eq!(who.writer, Writer::from_u32(claimed));
            assert_eq!(who.authenticity, Authenticity::Forged);
            assert!(!who.is_verified_admin());
            let (_, seen) = verify(&forger, ObjectType::PruneRecord, &id, &payload).unwrap();
            assert_eq!(seen.authenticity, Authenticity::Unverifiable);
        }
        assert!(verify(&admin(), ObjectType::Index, &id, &[0; 35]).is_err());
    }
}
