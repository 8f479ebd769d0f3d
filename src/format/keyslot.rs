//! Key slot (format-spec/02-keys.md): the master secret wrapped under a
//! password-derived key. 176 bytes:
//!
//! ```text
//! 0   8  magic "KURAKEY1"      64  32 salt
//! 8  32  repository id         96  24 nonce
//! 40  1  kdf (1 = Argon2id)   120  56 wrapped (master 32 | reserved 8 | tag 16)
//! 41  1  role (0 = full)
//! 42  2  reserved (0)
//! 44  4  m_cost KiB   48 4 t_cost   52 4 p_cost
//! 56  8  created (unix seconds)
//! ```

use zeroize::Zeroizing;

use crate::algorithms::crypto::kdf::KdfParams;
use crate::algorithms::crypto::{AeadKey, KEY_LEN, MasterSecret, NONCE_LEN, TAG_LEN, random_array};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{ByteReader, unsupported};
use crate::id::RepoId;

pub const MAGIC: &[u8; 8] = b"KURAKEY1";
pub const KDF_ARGON2ID: u8 = 1;
pub const ROLE_FULL: u8 = 0;
pub const SALT_LEN: usize = 32;
/// Bytes covered by the AAD: everything before the wrapped secret.
pub const HEADER_LEN: usize = 120;
const RESERVED_PLAINTEXT: usize = 8;
pub const WRAPPED_LEN: usize = KEY_LEN + RESERVED_PLAINTEXT + TAG_LEN;
pub const SLOT_LEN: usize = HEADER_LEN + WRAPPED_LEN;
/// Largest stored key slot a reader reads (format-spec/07): a slot is
/// exactly [`SLOT_LEN`] bytes, so a longer object at a slot's name is
/// refused before it is read.
pub const MAX_STORED_LEN: usize = SLOT_LEN;
/// At most this many key slots are tried by one unlock (format-spec/07).
pub const MAX_SLOTS_TRIED: usize = 8;
/// The most KDF work one unlock does over the slots it tries
/// (format-spec/07), in [`kdf_work`] units: as much as
/// [`MAX_SLOTS_TRIED`] slots of the default parameters.
pub const MAX_UNLOCK_WORK: u64 = MAX_SLOTS_TRIED as u64 * kdf_work(&KdfParams::DEFAULT);

/// The work of one key derivation with `params`: memory (KiB) times
/// passes. Lanes share the memory, so they do not add to it.
pub const fn kdf_work(params: &KdfParams) -> u64 {
    params.m_cost as u64 * params.t_cost as u64
}

/// A decoded key slot, still locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    pub repo: RepoId,
    pub role: u8,
    pub params: KdfParams,
    pub created: u64,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_LEN],
}

impl KeySlot {
    /// Wraps `master` under `password` with fresh salt and nonce.
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] if `params` are outside the policy.
    pub fn create(
        master: &MasterSecret,
        password: &[u8],
        repo: RepoId,
        params: KdfParams,
        created: u64,
    ) -> Result<Self> {
        Self::create_with(
            master,
            password,
            repo,
            params,
            created,
            random_array(),
            random_array(),
        )
    }

    /// [`Self::create`] with chosen salt and nonce; for test vectors.
    pub fn create_with(
        master: &MasterSecret,
        password: &[u8],
        repo: RepoId,
        params: KdfParams,
        created: u64,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self> {
        let kek = AeadKey(*params.derive(password, &salt)?);
        let mut slot = Self {
            repo,
            role: ROLE_FULL,
            params,
            created,
            salt,
            nonce,
            wrapped: [0; WRAPPED_LEN],
        };
        let mut plaintext = Zeroizing::new([0u8; KEY_LEN + RESERVED_PLAINTEXT]);
        plaintext[..KEY_LEN].copy_from_slice(master.as_bytes());
        let sealed = kek.seal(&nonce, plaintext.as_ref(), &slot.header());
        slot.wrapped.copy_from_slice(&sealed);
        Ok(slot)
    }

    /// Unwraps the master secret with `password`.
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] if the KDF parameters are outside the
    /// policy (checked before any work), [`ErrorKind::WrongPassword`] if the
    /// password does not open the slot.
    pub fn unlock(&self, password: &[u8]) -> Result<MasterSecret> {
        let kek = AeadKey(*self.params.derive(password, &self.salt)?);
        let plain = kek
            .open(&self.nonce, &self.wrapped, &self.header())
            .map_err(|_| {
                Error::new(
                    ErrorKind::WrongPassword,
                    "wrong password or no key slot for it",
                )
            })
            .map(Zeroizing::new)?;
        Ok(MasterSecret::from_prefix(&plain))
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..40].copy_from_slice(self.repo.as_bytes());
        h[40] = KDF_ARGON2ID;
        h[41] = self.role;
        // 42..44 reserved, zero.
        h[44..48].copy_from_slice(&self.params.m_cost.to_le_bytes());
        h[48..52].copy_from_slice(&self.params.t_cost.to_le_bytes());
        h[52..56].copy_from_slice(&self.params.p_cost.to_le_bytes());
        h[56..64].copy_from_slice(&self.created.to_le_bytes());
        h[64..96].copy_from_slice(&self.salt);
        h[96..120].copy_from_slice(&self.nonce);
        h
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SLOT_LEN);
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Decodes a slot. Does not check the KDF policy: [`Self::unlock`] does.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] for bad magic or length,
    /// [`ErrorKind::Unsupported`] for an unknown KDF or role.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SLOT_LEN {
            return Err(Error::corrupt(format!(
                "key slot is {} bytes, expected {SLOT_LEN}",
                bytes.len()
            )));
        }
        let mut r = ByteReader::new(bytes, "key slot");
        if r.bytes(8)? != MAGIC {
            return Err(Error::corrupt("not a kura key slot (bad magic)"));
        }
        let repo = RepoId(r.id()?);
        let kdf = r.u8()?;
        if kdf != KDF_ARGON2ID {
            return Err(unsupported("key slot KDF", kdf));
        }
        let role = r.u8()?;
        if role != ROLE_FULL {
            return Err(unsupported("key slot role", role));
        }
        if r.u16()? != 0 {
            return Err(Error::corrupt("key slot reserved bytes are not zero"));
        }
        let params = KdfParams {
            m_cost: r.u32()?,
            t_cost: r.u32()?,
            p_cost: r.u32()?,
        };
        let slot = Self {
            repo,
            role,
            params,
            created: r.u64()?,
            salt: r.array()?,
            nonce: r.array()?,
            wrapped: r.array()?,
        };
        r.finish()?;
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            repo in any::<[u8; 32]>(), m in any::<u32>(), t in any::<u32>(), p in any::<u32>(),
            created in any::<u64>(), salt in any::<[u8; 32]>(), nonce in any::<[u8; 24]>(),
            wrapped in proptest::collection::vec(any::<u8>(), WRAPPED_LEN),
        ) {
            let slot = KeySlot {
                repo: RepoId(repo),
                role: ROLE_FULL,
                params: KdfParams { m_cost: m, t_cost: t, p_cost: p },
                created,
                salt,
                nonce,
                wrapped: wrapped.try_into().unwrap(),
            };
            let bytes = slot.encode();
            prop_assert_eq!(bytes.len(), SLOT_LEN);
            prop_assert_eq!(KeySlot::decode(&bytes).unwrap(), slot);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySlot::decode(&data);
        }
    }

    #[test]
    fn create_unlock_encode_decode() {
        let master = MasterSecret::from_bytes([5; 32]);
        let slot = KeySlot::create(&master, b"pw", RepoId([1; 32]), KdfParams::FLOOR, 42).unwrap();
        let decoded = KeySlot::decode(&slot.encode()).unwrap();
        assert_eq!(decoded, slot);
        assert_eq!(decoded.unlock(b"pw").unwrap().as_bytes(), master.as_bytes());
        assert_eq!(
            decoded.unlock(b"px").unwrap_err().kind(),
            ErrorKind::WrongPassword
        );
    }

    #[test]
    fn tampered_params_are_refused_or_fail() {
        let master = MasterSecret::from_bytes([5; 32]);
        let slot = KeySlot::create(&master, b"pw", RepoId([1; 32]), KdfParams::FLOOR, 42).unwrap();
        let mut bytes = slot.encode();
        bytes[44..48].copy_from_slice(&8u32.to_le_bytes()); // below the floor
        let weak = KeySlot::decode(&bytes).unwrap();
        assert_eq!(
            weak.unlock(b"pw").unwrap_err().kind(),
            ErrorKind::KeySlotRefused
        );
        bytes[44..48].copy_from_slice(&u32::MAX.to_le_bytes()); // above the ceiling
        let huge = KeySlot::decode(&bytes).unwrap();
        assert_eq!(
            huge.unlock(b"pw").unwrap_err().kind(),
            ErrorKind::KeySlotRefused
        );
    }
}
