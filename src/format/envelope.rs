//! Envelope (format-spec/03-envelope.md): how every encrypted object is laid
//! out, and the associated data that binds it to its type, id and repository.
//!
//! ```text
//! scheme 1: u8(1) | nonce [24] | ciphertext | tag [16]             (K_shared)
//! scheme 2: u8(2) | E [32] | nonce [24] | ciphertext | tag [16]    (K_s of session E)
//! AAD = "KURA" | format_version u16 (3) | object_type u8 | scheme u8 | object_id [32] | repo_id [32]
//! ```
//!
//! Owns the rule of which scheme each object type is sealed with: data
//! blobs, tree blobs and snapshots with scheme 2 (sealed to the admin,
//! whoever writes them), everything else with scheme 1 under K_shared
//! ([`ObjectType::scheme`]). A reader accepts exactly that scheme for the
//! type.
//!
//! And the rule for an unexpected scheme byte. Only the config object is
//! read before the repository's format version is known, so only there can
//! an unknown scheme mean "written by a newer kura" ([`crate::ErrorKind::Unsupported`],
//! exit 13). Every other object lives in a repository whose config this
//! client has already accepted, which writes each type with one scheme:
//! another first byte there is damage to that one object
//! ([`crate::ErrorKind::Corrupt`]), which readers skip and `check` names, never a
//! reason to stop the whole repository or to tell the user to upgrade.

use crate::algorithms::crypto::session::WriterSession;
use crate::algorithms::crypto::{AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN, random_array};
use crate::error::{Error, Result};
use crate::format::{FORMAT_VERSION, unsupported};
use crate::id::{ID_LEN, RepoId};

/// Scheme 1: XChaCha20-Poly1305 under K_shared.
pub const SCHEME_SYMMETRIC: u8 = 1;
/// Scheme 2: XChaCha20-Poly1305 under the session key K_s of the E stored
/// after the scheme byte (sealed to the admin).
pub const SCHEME_SEALED: u8 = 2;
/// Bytes a scheme-1 envelope adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Bytes a scheme-2 envelope adds to its plaintext: 73.
pub const SEALED_OVERHEAD: usize = 1 + KEY_LEN + NONCE_LEN + TAG_LEN;
/// Length of the associated data.
pub const AAD_LEN: usize = 4 + 2 + 1 + 1 + ID_LEN + ID_LEN;
const AAD_MAGIC: &[u8; 4] = b"KURA";

/// The kind of object an envelope holds; part of the AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectType {
    Config = 1,
    DataBlob = 3,
    TreeBlob = 4,
    PackHeader = 5,
    Index = 6,
    Snapshot = 7,
    PruneRecord = 8,
}

impl ObjectType {
    /// Whether objects of this type are sealed in a padded frame
    /// (format-spec/03, "Padded frames"): whole objects whose size would
    /// otherwise track their content (index files, snapshots, prune
    /// records).
    pub fn is_padded(self) -> bool {
        matches!(self, Self::Index | Self::Snapshot | Self::PruneRecord)
    }

    /// Decodes a blob type byte as stored in pack headers and index files.
    pub fn blob_from_u8(value: u8) -> Result<Self> {
        match value {
            3 => Ok(Self::DataBlob),
            4 => Ok(Self::TreeBlob),
            other => Err(Error::corrupt(format!("unknown blob type {other}"))),
        }
    }

    /// The one scheme objects of this type are sealed with: 2 (to the
    /// admin) for data blobs, tree blobs and snapshots, 1 for the rest.
    pub fn scheme(self) -> u8 {
        match self {
            Self::DataBlob | Self::TreeBlob | Self::Snapshot => SCHEME_SEALED,
            _ => SCHEME_SYMMETRIC,
        }
    }

    /// The bytes an envelope of this type adds to its plaintext.
    pub const fn overhead(self) -> usize {
        match self {
            Self::DataBlob | Self::TreeBlob | Self::Snapshot => SEALED_OVERHEAD,
            _ => OVERHEAD,
        }
    }
}

/// The associated data for an object (its scheme is its type's).
pub fn aad(object_type: ObjectType, object_id: &[u8; ID_LEN], repo: &RepoId) -> [u8; AAD_LEN] {
    let mut out = [0u8; AAD_LEN];
    out[0..4].copy_from_slice(AAD_MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[6] = object_type as u8;
    out[7] = object_type.scheme();
    out[8..40].copy_from_slice(object_id);
    out[40..72].copy_from_slice(repo.as_bytes());
    out
}

/// Encrypts `plaintext` into a scheme-1 envelope with a fresh random nonce.
pub fn seal(
    key: &AeadKey,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    plaintext: &[u8],
) -> Vec<u8> {
    seal_with_nonce(
        key,
        &random_array(),
        object_type,
        object_id,
        repo,
        plaintext,
    )
}

/// [`seal`] with a caller-chosen nonce; only for test vectors.
pub fn seal_with_nonce(
    key: &AeadKey,
    nonce: &[u8; NONCE_LEN],
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    plaintext: &[u8],
) -> Vec<u8> {
    debug_assert_eq!(object_type.scheme(), SCHEME_SYMMETRIC, "{object_type:?}");
    let ciphertext = key.seal(nonce, plaintext, &aad(object_type, object_id, repo));
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(SCHEME_SYMMETRIC);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Encrypts `plaintext` into a scheme-2 envelope of `session`, sealed to
/// the admin, with a fresh random nonce.
pub fn seal_to_admin(
    session: &WriterSession,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    plaintext: &[u8],
) -> Vec<u8> {
    seal_to_admin_with_nonce(
        session,
        &random_array(),
        object_type,
        object_id,
        repo,
        plaintext,
    )
}

/// [`seal_to_admin`] with a caller-chosen nonce; only for test vectors.
pub fn seal_to_admin_with_nonce(
    session: &WriterSession,
    nonce: &[u8; NONCE_LEN],
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    plaintext: &[u8],
) -> Vec<u8> {
    debug_assert_eq!(object_type.scheme(), SCHEME_SEALED, "{object_type:?}");
    let ciphertext = session
        .key()
        .seal(nonce, plaintext, &aad(object_type, object_id, repo));
    let mut out = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
    out.push(SCHEME_SEALED);
    out.extend_from_slice(session.ephemeral_public());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// The session public key E of a scheme-2 envelope, which names the key
/// that opens it.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a truncated envelope or another scheme.
pub fn sealed_ephemeral(
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    envelope: &[u8],
) -> Result<[u8; KEY_LEN]> {
    check_frame(object_type, object_id, envelope, SCHEME_SEALED)?;
    let mut e = [0u8; KEY_LEN];
    e.copy_from_slice(&envelope[1..=KEY_LEN]);
    Ok(e)
}

/// Authenticates and decrypts a scheme-2 envelope with its session key
/// `key` (derived by the admin from the E [`sealed_ephemeral`] returns).
///
/// # Errors
/// As [`open`].
pub fn open_sealed(
    key: &AeadKey,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    envelope: &[u8],
) -> Result<Vec<u8>> {
    check_frame(object_type, object_id, envelope, SCHEME_SEALED)?;
    open_after(key, object_type, object_id, repo, &envelope[1 + KEY_LEN..])
}

/// Authenticates and decrypts a scheme-1 envelope expected to hold
/// `object_type` under `object_id` in repository `repo`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for any tampering, truncation, or an object
/// presented under another type, id or repository, and for a scheme other
/// than its type's; [`crate::ErrorKind::Unsupported`] for an unknown scheme
/// in the config (see the module doc).
pub fn open(
    key: &AeadKey,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    envelope: &[u8],
) -> Result<Vec<u8>> {
    check_frame(object_type, object_id, envelope, SCHEME_SYMMETRIC)?;
    open_after(key, object_type, object_id, repo, &envelope[1..])
}

/// Checks the length and the scheme byte of an envelope of `scheme`.
fn check_frame(
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    envelope: &[u8],
    scheme: u8,
) -> Result<()> {
    let overhead = if scheme == SCHEME_SEALED {
        SEALED_OVERHEAD
    } else {
        OVERHEAD
    };
    if envelope.first().is_some_and(|&s| s != scheme) || object_type.scheme() != scheme {
        return Err(unknown_scheme(
            object_type,
            object_id,
            envelope.first().copied().unwrap_or(0),
        ));
    }
    if envelope.len() < overhead {
        return Err(Error::corrupt(format!(
            "{object_type:?} {}: envelope is truncated ({} bytes)",
            hex::encode(object_id),
            envelope.len()
        )));
    }
    Ok(())
}

/// Opens `nonce | ciphertext | tag`.
fn open_after(
    key: &AeadKey,
    object_type: ObjectType,
    object_id: &[u8; ID_LEN],
    repo: &RepoId,
    rest: &[u8],
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&rest[..NONCE_LEN]);
    key.open(
        &nonce,
        &rest[NONCE_LEN..],
        &aad(object_type, object_id, repo),
    )
    .map_err(|e| e.context(format!("{object_type:?} {}", hex::encode(object_id))))
}

/// The error for an envelope whose scheme byte is not its type's: a newer
/// format only for the config, damage for anything else.
fn unknown_scheme(object_type: ObjectType, object_id: &[u8; ID_LEN], scheme: u8) -> Error {
    if object_type == ObjectType::Config {
        return unsupported("envelope scheme", scheme);
    }
    Error::corrupt(format!(
        "{object_type:?} {}: damaged, envelope scheme {scheme} where a version {FORMAT_VERSION} \
         repository writes only scheme {}",
        hex::encode(object_id),
        object_type.scheme()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
            key in any::<[u8; 32]>(),
            id in any::<[u8; 32]>(),
            repo in any::<[u8; 32]>(),
        ) {
            let key = AeadKey(key);
            let sealed = seal(&key, ObjectType::Index, &id, &RepoId(repo), &plaintext);
            prop_assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
            prop_assert_eq!(&open(&key, ObjectType::Index, &id, &RepoId(repo), &sealed).unwrap(), &plaintext);
            let session = WriterSession::new(&admin_public()).unwrap();
            let sealed = seal_to_admin(&session, ObjectType::DataBlob, &id, &RepoId(repo), &plaintext);
            prop_assert_eq!(sealed.len(), plaintext.len() + SEALED_OVERHEAD);
            prop_assert_eq!(sealed_ephemeral(ObjectType::DataBlob, &id, &sealed).unwrap(), *session.ephemeral_public());
            prop_assert_eq!(open_sealed(session.key(), ObjectType::DataBlob, &id, &RepoId(repo), &sealed).unwrap(), plaintext);
        }

        #[test]
        fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = open(&AeadKey([0; 32]), ObjectType::Index, &[0; 32], &RepoId([0; 32]), &data);
            let _ = open_sealed(&AeadKey([0; 32]), ObjectType::DataBlob, &[0; 32], &RepoId([0; 32]), &data);
            let _ = sealed_ephemeral(ObjectType::DataBlob, &[0; 32], &data);
        }
    }

    fn admin_public() -> [u8; 32] {
        crate::algorithms::crypto::session::public_key(&x25519_dalek::StaticSecret::from([5; 32]))
    }

    #[test]
    fn round_trip_and_binding() {
        let session = WriterSession::new(&admin_public()).unwrap();
        let key = session.key();
        let repo = RepoId([1; 32]);
        let id = [2; 32];
        let sealed = seal_to_admin(&session, ObjectType::DataBlob, &id, &repo, b"payload");
        assert_eq!(sealed.len(), SEALED_OVERHEAD + 7);
        assert_eq!(
            open_sealed(key, ObjectType::DataBlob, &id, &repo, &sealed).unwrap(),
            b"payload"
        );
        let wrong_type = open_sealed(key, ObjectType::TreeBlob, &id, &repo, &sealed);
        assert_eq!(wrong_type.unwrap_err().kind(), ErrorKind::Corrupt);
        let as_scheme_1 = open(key, ObjectType::Index, &id, &repo, &sealed);
        assert_eq!(as_scheme_1.unwrap_err().kind(), ErrorKind::Corrupt);
        assert!(open_sealed(key, ObjectType::DataBlob, &[3; 32], &repo, &sealed).is_err());
        assert!(open_sealed(key, ObjectType::DataBlob, &id, &RepoId([4; 32]), &sealed).is_err());
        assert!(open_sealed(key, ObjectType::DataBlob, &id, &repo, &sealed[..60]).is_err());
        // The admin derives the key from the E in the envelope: another E
        // gives another key.
        let admin = x25519_dalek::StaticSecret::from([5; 32]);
        let mut other_e = sealed.clone();
        other_e[5] ^= 1;
        for (env, opens) in [(&sealed, true), (&other_e, false)] {
            let e = sealed_ephemeral(ObjectType::DataBlob, &id, env).unwrap();
            let k = crate::algorithms::crypto::session::admin_session_key(&admin, &e).unwrap();
            let opened = open_sealed(&k, ObjectType::DataBlob, &id, &repo, env);
            assert_eq!(opened.is_ok(), opens);
        }
    }

    #[test]
    fn an_unknown_scheme_is_damage_except_in_the_config() {
        let key = AeadKey([9; 32]);
        let (repo, id) = (RepoId([1; 32]), [2; 32]);
        for object_type in [
            ObjectType::PackHeader,
            ObjectType::Index,
            ObjectType::PruneRecord,
        ] {
            let mut sealed = seal(&key, object_type, &id, &repo, b"payload");
            sealed[0] = 2;
            let err = open(&key, object_type, &id, &repo, &sealed).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{object_type:?}");
            assert!(!err.to_string().contains("version of kura"), "{err}");
        }
        let session = WriterSession::new(&admin_public()).unwrap();
        for object_type in [ObjectType::DataBlob, ObjectType::Snapshot] {
            let mut sealed = seal_to_admin(&session, object_type, &id, &repo, b"payload");
            sealed[0] = 1;
            let err = open_sealed(session.key(), object_type, &id, &repo, &sealed).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{object_type:?}");
        }
        let mut sealed = seal(&key, ObjectType::Config, &id, &repo, b"payload");
        sealed[0] = 3;
        let err = open(&key, ObjectType::Config, &id, &repo, &sealed).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}
