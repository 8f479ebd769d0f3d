//! Key slot (format-spec/02-keys.md): a role's secrets wrapped under a
//! password-derived key. A 120-byte header (the AAD), then the wrapped
//! secret, whose length the role fixes:
//!
//! ```text
//! 0   8  magic "KURAKEY1"      64  32 salt
//! 8  32  repository id         96  24 nonce
//! 40  1  kdf (1 = Argon2id)   120  .. wrapped, sealed under the KEK:
//! 41  1  role                       role 0 (admin), 56 bytes:
//! 42  2  reserved (0)                 M 32 | reserved 8 | tag 16
//! 44  4  m_cost KiB                 role 1 (put-only), 212 bytes:
//! 48  4  t_cost                       K_id 32 | K_cdc 32 | K_pad 32 | K_shared 32 |
//! 52  4  p_cost                       A 32 | key id u32 | K_w(key id) 32 | tag 16
//! 56  8  created (unix seconds)
//! ```
//!
//! Owns the invariant that a role-1 slot never holds M, K_admin or a:
//! unlocking it yields a [`KeySet`] that cannot open scheme-2 envelopes
//! nor sign as the admin.

use zeroize::Zeroizing;

use crate::algorithms::crypto::kdf::KdfParams;
use crate::algorithms::crypto::roles::KeySet;
use crate::algorithms::crypto::{
    AeadKey, KEY_LEN, MasterSecret, NONCE_LEN, Subkeys, TAG_LEN, random_array,
};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{ByteReader, unsupported};
use crate::id::RepoId;

pub const MAGIC: &[u8; 8] = b"KURAKEY1";
pub const KDF_ARGON2ID: u8 = 1;
/// Role 0: the admin, holding the master secret.
pub const ROLE_ADMIN: u8 = 0;
/// Role 1: a put-only key.
pub const ROLE_PUT_ONLY: u8 = 1;
pub const SALT_LEN: usize = 32;
/// Bytes covered by the AAD: everything before the wrapped secret.
pub const HEADER_LEN: usize = 120;
const RESERVED_PLAINTEXT: usize = 8;
/// The wrapped secret of a role-0 slot.
pub const WRAPPED_LEN: usize = KEY_LEN + RESERVED_PLAINTEXT + TAG_LEN;
/// A role-0 slot: 176 bytes.
pub const SLOT_LEN: usize = HEADER_LEN + WRAPPED_LEN;
/// The plaintext of a role-1 slot: five keys, the key id, K_w.
pub const PUT_ONLY_PLAINTEXT_LEN: usize = 5 * KEY_LEN + 4 + KEY_LEN;
/// The wrapped secret of a role-1 slot: 212 bytes.
pub const PUT_ONLY_WRAPPED_LEN: usize = PUT_ONLY_PLAINTEXT_LEN + TAG_LEN;
/// A role-1 slot: 332 bytes.
pub const PUT_ONLY_SLOT_LEN: usize = HEADER_LEN + PUT_ONLY_WRAPPED_LEN;
/// Largest stored key slot a reader reads (format-spec/07): a slot is
/// exactly [`SLOT_LEN`] or [`PUT_ONLY_SLOT_LEN`] bytes, so a longer
/// object at a slot's name is refused before it is read.
pub const MAX_STORED_LEN: usize = PUT_ONLY_SLOT_LEN;
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
    /// [`WRAPPED_LEN`] bytes for role 0, [`PUT_ONLY_WRAPPED_LEN`] for role 1.
    pub wrapped: Vec<u8>,
}

/// The wrapped length of `role`, or `None` for a role this client lacks.
fn wrapped_len(role: u8) -> Option<usize> {
    match role {
        ROLE_ADMIN => Some(WRAPPED_LEN),
        ROLE_PUT_ONLY => Some(PUT_ONLY_WRAPPED_LEN),
        _ => None,
    }
}

/// The plaintext of a role-1 slot for put-only key `key_id`.
pub fn put_only_plaintext(master: &MasterSecret, key_id: u32) -> Zeroizing<Vec<u8>> {
    let keys = KeySet::put_only(master.subkeys(), key_id, *master.writer_mac(key_id));
    role_plaintext(&keys).1
}

/// The role and slot plaintext that give back `keys` when unlocked.
fn role_plaintext(keys: &KeySet) -> (u8, Zeroizing<Vec<u8>>) {
    if let Some(master) = keys.master() {
        let mut plain = Zeroizing::new(vec![0u8; KEY_LEN + RESERVED_PLAINTEXT]);
        plain[..KEY_LEN].copy_from_slice(master.as_bytes());
        return (ROLE_ADMIN, plain);
    }
    let keys_ = &keys.subkeys;
    let mut out = Zeroizing::new(Vec::with_capacity(PUT_ONLY_PLAINTEXT_LEN));
    for part in [
        &keys_.chunk_id,
        &keys_.chunker,
        &keys_.padding,
        &keys_.shared.0,
        &keys_.admin_public,
    ] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&keys.writer().to_le_bytes());
    out.extend_from_slice(keys.own_mac_key().as_ref());
    (ROLE_PUT_ONLY, out)
}

/// The key set a role-1 plaintext holds.
fn put_only_keys(plain: &[u8]) -> KeySet {
    let key = |i: usize| -> [u8; KEY_LEN] {
        plain[i * KEY_LEN..(i + 1) * KEY_LEN]
            .try_into()
            .expect("32 bytes")
    };
    let subkeys = Subkeys {
        chunk_id: key(0),
        chunker: key(1),
        padding: key(2),
        shared: AeadKey(key(3)),
        admin_public: key(4),
    };
    let id_at = 5 * KEY_LEN;
    let key_id = u32::from_le_bytes(plain[id_at..id_at + 4].try_into().expect("4 bytes"));
    let mut writer_mac = [0u8; KEY_LEN];
    writer_mac.copy_from_slice(&plain[id_at + 4..]);
    KeySet::put_only(subkeys, key_id, writer_mac)
}

impl KeySlot {
    /// A slot of `keys`' role that gives back `keys` when unlocked with
    /// `password`, with fresh salt and nonce: how `key passwd` replaces
    /// the slot in use, of either role.
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] if `params` are outside the policy.
    pub fn create_for(
        keys: &KeySet,
        password: &[u8],
        repo: RepoId,
        params: KdfParams,
        created: u64,
    ) -> Result<Self> {
        let (role, plaintext) = role_plaintext(keys);
        let slot = Self::unsealed(role, repo, params, created, random_array(), random_array());
        slot.wrap(&plaintext, password)
    }

    /// Wraps `master` (role 0) under `password` with fresh salt and nonce.
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
    ///
    /// # Errors
    /// As [`Self::create`].
    pub fn create_with(
        master: &MasterSecret,
        password: &[u8],
        repo: RepoId,
        params: KdfParams,
        created: u64,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self> {
        let mut plaintext = Zeroizing::new(vec![0u8; KEY_LEN + RESERVED_PLAINTEXT]);
        plaintext[..KEY_LEN].copy_from_slice(master.as_bytes());
        let slot = Self::unsealed(ROLE_ADMIN, repo, params, created, salt, nonce);
        slot.wrap(&plaintext, password)
    }

    /// A role-1 slot for put-only key `key_id` (never 0) of the admin
    /// `master`, with chosen salt and nonce (random ones for new keys).
    ///
    /// # Errors
    /// As [`Self::create`].
    #[allow(clippy::too_many_arguments)]
    pub fn create_put_only(
        master: &MasterSecret,
        key_id: u32,
        password: &[u8],
        repo: RepoId,
        params: KdfParams,
        created: u64,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self> {
        let plaintext = put_only_plaintext(master, key_id);
        let slot = Self::unsealed(ROLE_PUT_ONLY, repo, params, created, salt, nonce);
        slot.wrap(&plaintext, password)
    }

    fn unsealed(
        role: u8,
        repo: RepoId,
        params: KdfParams,
        created: u64,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Self {
            repo,
            role,
            params,
            created,
            salt,
            nonce,
            wrapped: Vec::new(),
        }
    }

    fn wrap(mut self, plaintext: &[u8], password: &[u8]) -> Result<Self> {
        let kek = AeadKey(*self.params.derive(password, &self.salt)?);
        self.wrapped = kek.seal(&self.nonce, plaintext, &self.header());
        Ok(self)
    }

    /// Unwraps the slot's secrets with `password`: the admin key set of a
    /// role-0 slot, the put-only key set of a role-1 slot.
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] if the KDF parameters are outside the
    /// policy (checked before any work), [`ErrorKind::WrongPassword`] if the
    /// password does not open the slot.
    pub fn unlock(&self, password: &[u8]) -> Result<KeySet> {
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
        Ok(if self.role == ROLE_PUT_ONLY {
            put_only_keys(&plain)
        } else {
            KeySet::admin(MasterSecret::from_prefix(&plain))
        })
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
        let mut out = Vec::with_capacity(HEADER_LEN + self.wrapped.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Decodes a slot. Does not check the KDF policy: [`Self::unlock`] does.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] for bad magic or a length not the role's,
    /// [`ErrorKind::Unsupported`] for an unknown KDF or role.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SLOT_LEN && bytes.len() != PUT_ONLY_SLOT_LEN {
            return Err(Error::corrupt(format!(
                "key slot is {} bytes, expected {SLOT_LEN} or {PUT_ONLY_SLOT_LEN}",
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
        let Some(wrapped_len) = wrapped_len(role) else {
            return Err(unsupported("key slot role", role));
        };
        if bytes.len() != HEADER_LEN + wrapped_len {
            return Err(Error::corrupt(format!(
                "key slot of role {role} is {} bytes, expected {}",
                bytes.len(),
                HEADER_LEN + wrapped_len
            )));
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
            wrapped: r.bytes(wrapped_len)?.to_vec(),
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
            put_only in any::<bool>(),
            wrapped in proptest::collection::vec(any::<u8>(), PUT_ONLY_WRAPPED_LEN),
        ) {
            let (role, len) = if put_only { (ROLE_PUT_ONLY, PUT_ONLY_SLOT_LEN) } else { (ROLE_ADMIN, SLOT_LEN) };
            let slot = KeySlot {
                repo: RepoId(repo),
                role,
                params: KdfParams { m_cost: m, t_cost: t, p_cost: p },
                created,
                salt,
                nonce,
                wrapped: wrapped[..len - HEADER_LEN].to_vec(),
            };
            let bytes = slot.encode();
            prop_assert_eq!(bytes.len(), len);
            prop_assert_eq!(KeySlot::decode(&bytes).unwrap(), slot);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySlot::decode(&data);
            let mut slot = data.clone();
            slot.resize(PUT_ONLY_SLOT_LEN, 0);
            slot[..8].copy_from_slice(MAGIC);
            slot[41] = ROLE_PUT_ONLY;
            let _ = KeySlot::decode(&slot);
        }
    }

    #[test]
    fn create_unlock_encode_decode() {
        let master = MasterSecret::from_bytes([5; 32]);
        let slot = KeySlot::create(&master, b"pw", RepoId([1; 32]), KdfParams::FLOOR, 42).unwrap();
        let decoded = KeySlot::decode(&slot.encode()).unwrap();
        assert_eq!(decoded, slot);
        let keys = decoded.unlock(b"pw").unwrap();
        assert_eq!(keys.master().unwrap().as_bytes(), master.as_bytes());
        assert_eq!(
            decoded.unlock(b"px").unwrap_err().kind(),
            ErrorKind::WrongPassword
        );
    }

    #[test]
    fn a_put_only_slot_holds_the_shared_keys_and_its_own_mac_key_only() {
        let master = MasterSecret::from_bytes([5; 32]);
        let (salt, nonce) = ([1; 32], [2; 24]);
        let slot = KeySlot::create_put_only(
            &master,
            77,
            b"pw",
            RepoId([1; 32]),
            KdfParams::FLOOR,
            42,
            salt,
            nonce,
        )
        .unwrap();
        let bytes = slot.encode();
        assert_eq!(bytes.len(), PUT_ONLY_SLOT_LEN);
        assert_eq!(bytes[41], ROLE_PUT_ONLY);
        let keys = KeySlot::decode(&bytes).unwrap().unlock(b"pw").unwrap();
        assert!(keys.master().is_none());
        assert_eq!(keys.writer(), 77);
        assert_eq!(*keys.own_mac_key(), *master.writer_mac(77));
        assert!(keys.mac_key_of(0).is_none());
        let all = master.subkeys();
        assert_eq!(keys.subkeys.shared.0, all.shared.0);
        assert_eq!(keys.subkeys.admin_public, all.admin_public);
        assert_eq!(keys.subkeys.chunk_id, all.chunk_id);
        // A role byte changed after sealing: the wrong length for the role.
        let mut admin_role = bytes.clone();
        admin_role[41] = ROLE_ADMIN;
        assert_eq!(
            KeySlot::decode(&admin_role).unwrap_err().kind(),
            ErrorKind::Corrupt
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
