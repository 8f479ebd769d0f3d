//! Sessions sealed to the admin (format-spec/03-envelope.md, scheme 2):
//! X25519 between a writer run's ephemeral pair (e, E) and the admin's
//! static pair (a, A), hashed into one XChaCha20-Poly1305 key per run:
//!
//! ```text
//! K_s = BLAKE3-derive("kura v2 session", X25519(e, A) || E || A)
//! ```
//!
//! Owns the invariants that a writer forgets `e` as soon as K_s is made
//! (so nobody, the writer included, can derive K_s again without `a`),
//! that K_s is wiped when the session is dropped, and that an all-zero
//! X25519 output (a low-order point) is refused on both sides.

use x25519_dalek::{PublicKey, StaticSecret};

use crate::algorithms::crypto::{AeadKey, CONTEXT_SESSION, KEY_LEN, random_array};
use crate::error::{Error, Result};

/// The X25519 public key of `secret`.
pub fn public_key(secret: &StaticSecret) -> [u8; KEY_LEN] {
    PublicKey::from(secret).to_bytes()
}

/// One writer run's sealing key: K_s and the E that travels in every
/// envelope it seals. Its ephemeral secret is gone once this exists.
#[derive(Clone)]
pub struct WriterSession {
    ephemeral_public: [u8; KEY_LEN],
    key: AeadKey,
}

impl std::fmt::Debug for WriterSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSession")
            .field("ephemeral_public", &hex::encode(self.ephemeral_public))
            .finish_non_exhaustive()
    }
}

impl WriterSession {
    /// A new session to admin public key `admin_public`, with a fresh
    /// ephemeral secret that is wiped before this returns.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if `admin_public` is a low-order point.
    pub fn new(admin_public: &[u8; KEY_LEN]) -> Result<Self> {
        Self::with_secret(StaticSecret::from(random_array::<KEY_LEN>()), admin_public)
    }

    /// [`Self::new`] with a chosen ephemeral secret; for test vectors.
    ///
    /// # Errors
    /// As [`Self::new`].
    // Taken by value so that the secret is wiped here, when it drops.
    #[allow(clippy::needless_pass_by_value)]
    pub fn with_secret(ephemeral: StaticSecret, admin_public: &[u8; KEY_LEN]) -> Result<Self> {
        let ephemeral_public = public_key(&ephemeral);
        let shared = ephemeral.diffie_hellman(&PublicKey::from(*admin_public));
        if !shared.was_contributory() {
            return Err(Error::corrupt(
                "the admin public key is a low-order X25519 point",
            ));
        }
        let key = derive(shared.as_bytes(), &ephemeral_public, admin_public);
        Ok(Self {
            ephemeral_public,
            key,
        })
        // `ephemeral` and `shared` are wiped as they drop here.
    }

    /// E, stored in every envelope this session seals.
    pub fn ephemeral_public(&self) -> &[u8; KEY_LEN] {
        &self.ephemeral_public
    }

    /// K_s.
    pub fn key(&self) -> &AeadKey {
        &self.key
    }
}

/// The admin's side: K_s of the session whose envelopes carry `ephemeral`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a low-order `ephemeral` (the X25519
/// output is all zero): no honest writer makes one.
pub fn admin_session_key(admin: &StaticSecret, ephemeral: &[u8; KEY_LEN]) -> Result<AeadKey> {
    let shared = admin.diffie_hellman(&PublicKey::from(*ephemeral));
    if !shared.was_contributory() {
        return Err(Error::corrupt(format!(
            "envelope session key {} is a low-order X25519 point",
            hex::encode(ephemeral)
        )));
    }
    Ok(derive(shared.as_bytes(), ephemeral, &public_key(admin)))
}

fn derive(shared: &[u8; KEY_LEN], ephemeral: &[u8; KEY_LEN], admin: &[u8; KEY_LEN]) -> AeadKey {
    let mut material = zeroize::Zeroizing::new([0u8; 3 * KEY_LEN]);
    material[..KEY_LEN].copy_from_slice(shared);
    material[KEY_LEN..2 * KEY_LEN].copy_from_slice(ephemeral);
    material[2 * KEY_LEN..].copy_from_slice(admin);
    AeadKey(blake3::derive_key(CONTEXT_SESSION, material.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_admin_derives_the_writers_key_and_nobody_else_does() {
        let admin = StaticSecret::from([9u8; 32]);
        let a_pub = public_key(&admin);
        let session = WriterSession::new(&a_pub).unwrap();
        let again = admin_session_key(&admin, session.ephemeral_public()).unwrap();
        assert_eq!(again.0, session.key().0);
        let other = StaticSecret::from([8u8; 32]);
        let wrong = admin_session_key(&other, session.ephemeral_public()).unwrap();
        assert_ne!(wrong.0, session.key().0);
        assert_ne!(WriterSession::new(&a_pub).unwrap().key().0, session.key().0);
    }

    #[test]
    fn low_order_points_are_refused() {
        let admin = StaticSecret::from([9u8; 32]);
        for low in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let err = admin_session_key(&admin, &low).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(WriterSession::new(&low).is_err());
        }
    }
}
