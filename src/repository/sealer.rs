//! Sealed objects: the one place where plaintext becomes stored bytes
//! (frame -> envelope) and back. Owns the invariants that every read is
//! authenticated and, for blobs, that the content matches its id; that
//! each object type is sealed with its one scheme (format-spec/03): data
//! blobs, tree blobs and snapshots to the admin (scheme 2, under this
//! handle's one writer session), the rest under K_shared (scheme 1); and
//! that only an admin key set opens scheme 2: a put-only one gets
//! [`ErrorKind::PutOnlyKey`] before any byte is tried.
//!
//! The admin derives a session's key once per E and keeps it here for the
//! life of the handle, so a restore costs one X25519 per writer run, not
//! one per blob.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::algorithms::crypto::roles::{KeySet, Role};
use crate::algorithms::crypto::session::{WriterSession, admin_session_key};
use crate::algorithms::crypto::{AeadKey, KEY_LEN, Subkeys, keyed_hash};
use crate::error::{Error, ErrorKind, Result};
use crate::format::envelope::{self, ObjectType, SCHEME_SEALED};
use crate::format::frame;
use crate::format::pack::{GROUP_OBJECT_ID, MAX_GROUP_RAW, PackKind};
use crate::id::{ChunkId, ID_LEN, RepoId};

/// Largest tree blob a reader accepts.
pub const MAX_TREE_BLOB: usize = 16 << 20;
/// Largest snapshot a reader accepts.
pub const MAX_SNAPSHOT: usize = 16 << 20;

/// The error a put-only key set gets for `what` (an operation or an
/// object it cannot open).
pub fn put_only_refusal(what: &str) -> Error {
    Error::new(
        ErrorKind::PutOnlyKey,
        format!(
            "{what} needs the admin key: this repository was opened with a put-only key, \
             which can back up but never decrypt data, trees or snapshots, nor prune, \
             forget or repair"
        ),
    )
}

/// Seals and opens objects for one repository.
#[derive(Clone)]
pub struct Sealer {
    keys: Arc<KeySet>,
    session: Arc<WriterSession>,
    /// K_s by E, for an admin reader.
    sessions: Arc<RwLock<HashMap<[u8; KEY_LEN], AeadKey>>>,
    repo: RepoId,
    max_chunk: usize,
}

impl Sealer {
    /// A sealer for `keys`, with a new writer session to the admin public
    /// key they hold.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] if that public key is a low-order point.
    pub fn new(keys: KeySet, repo: RepoId, max_chunk: usize) -> Result<Self> {
        let session = WriterSession::new(&keys.subkeys.admin_public)?;
        Ok(Self {
            keys: Arc::new(keys),
            session: Arc::new(session),
            sessions: Arc::default(),
            repo,
            max_chunk,
        })
    }

    pub fn repo(&self) -> &RepoId {
        &self.repo
    }

    /// The subkeys every role holds.
    pub fn keys(&self) -> &Subkeys {
        &self.keys.subkeys
    }

    /// The whole key set (role included).
    pub fn key_set(&self) -> &KeySet {
        &self.keys
    }

    /// Whether this is an admin key set.
    pub fn is_admin(&self) -> bool {
        self.keys.is_admin()
    }

    /// The id of a chunk or tree: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(keyed_hash(&self.keys.subkeys.chunk_id, plaintext))
    }

    /// Compresses (if it helps) and encrypts a blob: one compression group,
    /// the chunks it holds back to back (format-spec/05). A group's
    /// envelope carries no object id ([`GROUP_OBJECT_ID`]): each chunk in
    /// it is checked against its own id when read.
    pub fn seal_group(&self, kind: PackKind, plaintext: &[u8], level: i32) -> Vec<u8> {
        self.seal(kind.blob_type(), &GROUP_OBJECT_ID, plaintext, level)
    }

    /// Authenticates, decrypts and decompresses a whole group.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] on any mismatch or a group over its kind's
    /// limit; [`ErrorKind::PutOnlyKey`] for a put-only key set.
    pub fn open_group(&self, kind: PackKind, stored: &[u8]) -> Result<Vec<u8>> {
        let limit = match kind {
            PackKind::Data => self.max_chunk.max(MAX_GROUP_RAW as usize),
            PackKind::Tree => MAX_TREE_BLOB,
        };
        self.open(kind.blob_type(), &GROUP_OBJECT_ID, stored, limit)
    }

    /// Chunk `id`, `raw_len` bytes at `raw_offset` of an opened group,
    /// checked against its id.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] if the group is too short or the bytes do
    /// not hash to `id`.
    pub fn chunk_in<'a>(
        &self,
        id: &ChunkId,
        group: &'a [u8],
        raw_offset: u32,
        raw_len: u32,
    ) -> Result<&'a [u8]> {
        let start = raw_offset as usize;
        let chunk = start
            .checked_add(raw_len as usize)
            .and_then(|end| group.get(start..end))
            .ok_or_else(|| Error::corrupt(format!("blob {id} lies past the end of its group")))?;
        if self.chunk_id(chunk) != *id {
            return Err(Error::corrupt(format!("blob {id} does not match its id")));
        }
        Ok(chunk)
    }

    /// Opens the group `stored` and returns chunk `id` from it (see
    /// [`Self::chunk_in`]).
    ///
    /// # Errors
    /// As [`Self::open_group`] and [`Self::chunk_in`].
    pub fn open_chunk(
        &self,
        kind: PackKind,
        id: &ChunkId,
        stored: &[u8],
        raw_offset: u32,
        raw_len: u32,
    ) -> Result<Vec<u8>> {
        let mut group = self.open_group(kind, stored)?;
        let len = self.chunk_in(id, &group, raw_offset, raw_len)?.len();
        if raw_offset == 0 {
            group.truncate(len);
            return Ok(group);
        }
        Ok(group[raw_offset as usize..raw_offset as usize + len].to_vec())
    }

    /// Frames and encrypts a whole object (blob, index file, snapshot)
    /// with the scheme of its type.
    pub fn seal(
        &self,
        object_type: ObjectType,
        id: &[u8; ID_LEN],
        plaintext: &[u8],
        level: i32,
    ) -> Vec<u8> {
        let framed = if object_type.is_padded() {
            frame::encode_padded(plaintext, level)
        } else {
            frame::encode(plaintext, level)
        };
        if object_type.scheme() == SCHEME_SEALED {
            envelope::seal_to_admin(&self.session, object_type, id, &self.repo, &framed)
        } else {
            envelope::seal(
                &self.keys.subkeys.shared,
                object_type,
                id,
                &self.repo,
                &framed,
            )
        }
    }

    /// Opens an object sealed by [`Self::seal`], refusing to decompress more
    /// than `limit` bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] if authentication or decoding fails;
    /// [`ErrorKind::PutOnlyKey`] for a scheme-2 type and a put-only key set.
    pub fn open(
        &self,
        object_type: ObjectType,
        id: &[u8; ID_LEN],
        stored: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>> {
        let framed = if object_type.scheme() == SCHEME_SEALED {
            let key = self.session_key(object_type, id, stored)?;
            envelope::open_sealed(&key, object_type, id, &self.repo, stored)
        } else {
            envelope::open(
                &self.keys.subkeys.shared,
                object_type,
                id,
                &self.repo,
                stored,
            )
        }
        .map_err(as_damage)?;
        frame::decode(&framed, limit)
            .map_err(|e| as_damage(e.context(format!("{object_type:?} {}", hex::encode(id)))))
    }

    /// K_s of the session a scheme-2 envelope names, derived once per E.
    fn session_key(
        &self,
        object_type: ObjectType,
        id: &[u8; ID_LEN],
        stored: &[u8],
    ) -> Result<AeadKey> {
        let Role::Admin(master) = &self.keys.role else {
            return Err(put_only_refusal(&format!(
                "opening {object_type:?} {}",
                hex::encode(id)
            )));
        };
        let e = envelope::sealed_ephemeral(object_type, id, stored).map_err(as_damage)?;
        let known = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = known.get(&e) {
            return Ok(key.clone());
        }
        drop(known);
        let key = admin_session_key(&master.admin_x25519(), &e)
            .map_err(|err| err.context(format!("{object_type:?} {}", hex::encode(id))))?;
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(e, key.clone());
        Ok(key)
    }
}

/// An error reading one object of a repository whose config this client
/// accepted. Every object of a repository is of its config's format, so an
/// unknown envelope scheme, frame codec or object version there is damage
/// to that object ([`crate::ErrorKind::Corrupt`], named, exit 14 from
/// `check`), not a newer format: "upgrade kura" (exit 13) is said only of
/// the config and key slots, which are read before any other object.
pub fn as_damage(e: Error) -> Error {
    if e.kind() == crate::ErrorKind::Unsupported {
        Error::corrupt(format!(
            "{e}; in a repository of this format that is damage to the object, not a newer version"
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::crypto::MasterSecret;

    fn sealers() -> (Sealer, Sealer) {
        let master = MasterSecret::from_bytes([4; 32]);
        let put_only = KeySet::put_only(master.subkeys(), 9, *master.writer_mac(9));
        let repo = RepoId([1; 32]);
        (
            Sealer::new(KeySet::admin(master), repo, 1 << 20).unwrap(),
            Sealer::new(put_only, repo, 1 << 20).unwrap(),
        )
    }

    #[test]
    fn the_admin_opens_every_writers_blobs_with_one_exchange_per_session() {
        let (admin, put_only) = sealers();
        let mut sealed = Vec::new();
        for (i, writer) in [&admin, &put_only, &put_only].into_iter().enumerate() {
            let plain = vec![u8::try_from(i).unwrap(); 100];
            let id = writer.chunk_id(&plain);
            sealed.push((
                id,
                plain.clone(),
                writer.seal_group(PackKind::Data, &plain, 0),
            ));
        }
        for (id, plain, stored) in &sealed {
            assert_eq!(
                &admin
                    .open_chunk(PackKind::Data, id, stored, 0, 100)
                    .unwrap(),
                plain
            );
            let err = put_only.open_group(PackKind::Data, stored).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PutOnlyKey, "{err}");
        }
        // Two writer sessions (the admin's own and the put-only one).
        assert_eq!(admin.sessions.read().unwrap().len(), 2);
        // Metadata is shared: both read what either wrote.
        let index = put_only.seal(ObjectType::Index, &[7; 32], b"entries", 0);
        assert_eq!(
            admin
                .open(ObjectType::Index, &[7; 32], &index, 100)
                .unwrap(),
            b"entries"
        );
    }
}
