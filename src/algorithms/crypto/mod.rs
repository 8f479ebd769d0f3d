//! Cryptographic primitives layer: the master secret and its subkeys, the
//! XChaCha20-Poly1305 AEAD, Argon2id, X25519 sessions sealed to the admin
//! ([`session`]), the key sets of the two roles ([`roles`]) and
//! randomness. Owns the invariant that every subkey is derived with its
//! own context (format-spec/02-keys.md) and that nonces are
//! random.
//!
//! Secrets are wiped when dropped: [`MasterSecret`], [`Subkeys`] and
//! [`AeadKey`] zeroize their bytes on drop ([`ZeroizeOnDrop`]), the
//! cipher objects built from an [`AeadKey`] for one call do too (the
//! `zeroize` feature of `chacha20poly1305`), and so do Argon2id's memory
//! blocks and the derived key-encryption key ([`kdf`]). This is best
//! effort, as in any Rust program: a move may leave a copy of a key on the
//! stack, and the 32-byte subkeys handed out by value (the chunker's key)
//! are copies their holders own; the kura binary also keeps the whole
//! process out of core files (`src/cli/secrets.rs`).

pub mod kdf;
pub mod roles;
pub mod session;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length of the master secret and of every subkey.
pub const KEY_LEN: usize = 32;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// BLAKE3 `derive_key` contexts (format-spec/02-keys.md). K_id, K_cdc
/// and K_pad are derived exactly as in format 1 (their contexts keep the
/// "v1"); the keys format 2 added have "kura v2 ..." contexts.
pub const CONTEXT_CHUNK_ID: &str = "kura v1 chunk-id";
pub const CONTEXT_CHUNKER: &str = "kura v1 chunker";
pub const CONTEXT_PADDING: &str = "kura v1 pack padding";
/// K_shared: config body, pack headers, index files, prune records.
pub const CONTEXT_SHARED: &str = "kura v2 shared";
/// K_admin: the MAC key of admin-written metadata.
pub const CONTEXT_ADMIN_MAC: &str = "kura v2 admin";
/// a: the admin's X25519 static secret.
pub const CONTEXT_ADMIN_X25519: &str = "kura v2 admin x25519";
/// K_w(k) = derive(this, M || u32le(k)): the MAC key of put-only key k.
pub const CONTEXT_WRITER: &str = "kura v2 writer";
/// K_s = derive(this, X25519(e, A) || E || A): one writer run's key.
pub const CONTEXT_SESSION: &str = "kura v2 session";

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS has no randomness to give, which no backup should survive.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// A fresh random array.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// A uniformly random integer below `bound` (which must be > 0).
pub fn random_below(bound: usize) -> usize {
    let n = u64::from_le_bytes(random_array());
    // Modulo bias is irrelevant at the bounds used here (a handful of packs).
    usize::try_from(n % bound as u64).unwrap_or(0)
}

/// The repository master secret. Never stored in the clear.
#[derive(Clone)]
pub struct MasterSecret([u8; KEY_LEN]);

impl MasterSecret {
    pub fn generate() -> Self {
        Self(random_array())
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The secret in the first [`KEY_LEN`] bytes of `bytes` (an unwrapped
    /// key slot), copied without an intermediate array.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`KEY_LEN`].
    pub fn from_prefix(bytes: &[u8]) -> Self {
        let mut secret = Self([0; KEY_LEN]);
        secret.0.copy_from_slice(&bytes[..KEY_LEN]);
        secret
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives the subkeys every role holds from this secret.
    pub fn subkeys(&self) -> Subkeys {
        let derive = |context| blake3::derive_key(context, &self.0);
        Subkeys {
            chunk_id: derive(CONTEXT_CHUNK_ID),
            chunker: derive(CONTEXT_CHUNKER),
            padding: derive(CONTEXT_PADDING),
            shared: AeadKey(derive(CONTEXT_SHARED)),
            admin_public: session::public_key(&self.admin_x25519()),
        }
    }

    /// K_admin, the MAC key of admin-written metadata.
    pub fn admin_mac(&self) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
        zeroize::Zeroizing::new(blake3::derive_key(CONTEXT_ADMIN_MAC, &self.0))
    }

    /// a, the admin's X25519 static secret (wiped when dropped).
    pub fn admin_x25519(&self) -> x25519_dalek::StaticSecret {
        let bytes = zeroize::Zeroizing::new(blake3::derive_key(CONTEXT_ADMIN_X25519, &self.0));
        x25519_dalek::StaticSecret::from(*bytes)
    }

    /// K_w(k), the MAC key of put-only key `k`:
    /// BLAKE3-derive("kura v2 writer", M || u32le(k)).
    pub fn writer_mac(&self, key_id: u32) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
        let mut material = zeroize::Zeroizing::new([0u8; KEY_LEN + 4]);
        material[..KEY_LEN].copy_from_slice(&self.0);
        material[KEY_LEN..].copy_from_slice(&key_id.to_le_bytes());
        zeroize::Zeroizing::new(blake3::derive_key(CONTEXT_WRITER, material.as_ref()))
    }
}

impl Drop for MasterSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for MasterSecret {}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// The keys every role holds (an admin derives them from the master
/// secret, a put-only key has them from its slot), one per purpose.
#[derive(Clone)]
pub struct Subkeys {
    /// K_id: chunk ids.
    pub chunk_id: [u8; KEY_LEN],
    /// K_cdc: the chunker's gear table.
    pub chunker: [u8; KEY_LEN],
    /// K_pad: keys the pseudorandom padding of packs, so readers can verify it.
    pub padding: [u8; KEY_LEN],
    /// K_shared: seals the config body, pack headers, index files and
    /// prune records (scheme 1).
    pub shared: AeadKey,
    /// A: the admin's X25519 public key, which data, trees and snapshot
    /// bodies are sealed to (scheme 2). Not a secret.
    pub admin_public: [u8; KEY_LEN],
}

impl Drop for Subkeys {
    fn drop(&mut self) {
        // `shared` wipes itself.
        self.chunk_id.zeroize();
        self.chunker.zeroize();
        self.padding.zeroize();
    }
}

impl ZeroizeOnDrop for Subkeys {}

/// A 256-bit XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct AeadKey(pub [u8; KEY_LEN]);

impl Drop for AeadKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for AeadKey {}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Encrypts `plaintext` under `nonce`, returning ciphertext || tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = XNonce::from(*nonce);
        self.cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes")
    }

    /// Authenticates and decrypts ciphertext || tag.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if the tag does not verify (wrong key,
    /// tampered bytes, or AAD of another object).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let nonce = XNonce::from(*nonce);
        self.cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| Error::corrupt("authentication failed"))
    }
}

/// Keyed BLAKE3 of `data`: the chunk id function.
pub fn keyed_hash(key: &[u8; KEY_LEN], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only for types that wipe themselves when dropped.
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn every_key_type_is_wiped_on_drop() {
        wiped_on_drop::<MasterSecret>();
        wiped_on_drop::<Subkeys>();
        wiped_on_drop::<AeadKey>();
        wiped_on_drop::<XChaCha20Poly1305>();
        wiped_on_drop::<zeroize::Zeroizing<[u8; KEY_LEN]>>();
    }

    #[test]
    fn subkeys_are_distinct() {
        let keys = MasterSecret::from_bytes([7; 32]).subkeys();
        let master = MasterSecret::from_bytes([7; 32]);
        let all = [
            keys.chunk_id,
            keys.chunker,
            keys.padding,
            keys.shared.0,
            keys.admin_public,
            *master.admin_mac(),
            master.admin_x25519().to_bytes(),
            *master.writer_mac(1),
            *master.writer_mac(2),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn open_rejects_other_aad_and_flipped_bits() {
        let key = AeadKey([1; 32]);
        let nonce = [2; NONCE_LEN];
        let sealed = key.seal(&nonce, b"hello", b"aad");
        assert_eq!(key.open(&nonce, &sealed, b"aad").unwrap(), b"hello");
        assert!(key.open(&nonce, &sealed, b"aae").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(key.open(&nonce, &bad, b"aad").is_err());
        }
    }
}
