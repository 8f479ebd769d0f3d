//! Sealed objects: the one place where plaintext becomes stored bytes
//! (frame -> envelope) and back. Owns the invariant that every read is
//! authenticated and, for blobs, that the content matches its id.

use crate::algorithms::crypto::{AeadKey, Subkeys, keyed_hash};
use crate::error::{Error, Result};
use crate::format::envelope::{self, ObjectType};
use crate::format::frame;
use crate::format::pack::PackKind;
use crate::id::{ChunkId, ID_LEN, RepoId};

/// Largest tree blob a reader accepts.
pub const MAX_TREE_BLOB: usize = 16 << 20;
/// Largest snapshot a reader accepts.
pub const MAX_SNAPSHOT: usize = 16 << 20;

/// Seals and opens objects for one repository.
#[derive(Clone)]
pub struct Sealer {
    keys: Subkeys,
    repo: RepoId,
    max_chunk: usize,
}

impl Sealer {
    pub fn new(keys: Subkeys, repo: RepoId, max_chunk: usize) -> Self {
        Self {
            keys,
            repo,
            max_chunk,
        }
    }

    pub fn repo(&self) -> &RepoId {
        &self.repo
    }

    pub fn keys(&self) -> &Subkeys {
        &self.keys
    }

    /// The id of a chunk or tree: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(keyed_hash(&self.keys.chunk_id, plaintext))
    }

    fn key_for(&self, object_type: ObjectType) -> &AeadKey {
        match object_type {
            ObjectType::DataBlob => &self.keys.data,
            _ => &self.keys.metadata,
        }
    }

    /// Compresses (if it helps) and encrypts a blob already identified.
    pub fn seal_blob(&self, kind: PackKind, id: &ChunkId, plaintext: &[u8], level: i32) -> Vec<u8> {
        self.seal(kind.blob_type(), id.as_bytes(), plaintext, level)
    }

    /// Authenticates, decrypts and decompresses a blob, then checks that
    /// its content hashes to `id`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] on any mismatch.
    pub fn open_blob(&self, kind: PackKind, id: &ChunkId, stored: &[u8]) -> Result<Vec<u8>> {
        let limit = match kind {
            PackKind::Data => self.max_chunk,
            PackKind::Tree => MAX_TREE_BLOB,
        };
        let plain = self.open(kind.blob_type(), id.as_bytes(), stored, limit)?;
        if self.chunk_id(&plain) != *id {
            return Err(Error::corrupt(format!("blob {id} does not match its id")));
        }
        Ok(plain)
    }

    /// Frames and encrypts a whole object (index file, snapshot).
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
        envelope::seal(
            self.key_for(object_type),
            object_type,
            id,
            &self.repo,
            &framed,
        )
    }

    /// Opens an object sealed by [`Self::seal`], refusing to decompress more
    /// than `limit` bytes.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if authentication or decoding fails.
    pub fn open(
        &self,
        object_type: ObjectType,
        id: &[u8; ID_LEN],
        stored: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>> {
        let framed = envelope::open(
            self.key_for(object_type),
            object_type,
            id,
            &self.repo,
            stored,
        )
        .map_err(as_damage)?;
        frame::decode(&framed, limit)
            .map_err(|e| as_damage(e.context(format!("{object_type:?} {}", hex::encode(id)))))
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
