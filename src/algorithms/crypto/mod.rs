//! Cryptographic primitives layer: the master secret and its subkeys, the
//! XChaCha20-Poly1305 AEAD, Argon2id and randomness. Owns the invariant that
//! every subkey is derived with its own context and that nonces are random.
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

/// BLAKE3 `derive_key` contexts (format-spec/02-keys.md).
pub const CONTEXT_CHUNK_ID: &str = "kura v1 chunk-id";
pub const CONTEXT_CHUNKER: &str = "kura v1 chunker";
pub const CONTEXT_DATA: &str = "kura v1 data";
pub const CONTEXT_METADATA: &str = "kura v1 metadata";
pub const CONTEXT_PADDING: &str = "kura v1 pack padding";

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

    /// Derives every subkey from this secret.
    pub fn subkeys(&self) -> Subkeys {
        let derive = |context| blake3::derive_key(context, &self.0);
        Subkeys {
            chunk_id: derive(CONTEXT_CHUNK_ID),
            chunker: derive(CONTEXT_CHUNKER),
            data: AeadKey(derive(CONTEXT_DATA)),
            metadata: AeadKey(derive(CONTEXT_METADATA)),
            padding: derive(CONTEXT_PADDING),
        }
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

/// The keys derived from the master secret, one per purpose.
#[derive(Clone)]
pub struct Subkeys {
    pub chunk_id: [u8; KEY_LEN],
    pub chunker: [u8; KEY_LEN],
    pub data: AeadKey,
    pub metadata: AeadKey,
    /// Keys the pseudorandom padding of packs, so readers can verify it.
    pub padding: [u8; KEY_LEN],
}

impl Drop for Subkeys {
    fn drop(&mut self) {
        // `data` and `metadata` wipe themselves.
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
        let all = [
            keys.chunk_id,
            keys.chunker,
            keys.data.0,
            keys.metadata.0,
            keys.padding,
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
