//! Typed object I/O: the one path by which every layer above saves, loads,
//! lists and deletes the repository's sealed metadata objects (snapshots,
//! index files, prune records) and its packs. Each kind knows its folder,
//! its name grammar, its envelope type and its size limit
//! (format-spec/07-layout-and-writes.md), so no caller builds a path or
//! opens an envelope itself, and a rule about one kind of object (how big
//! it may be, how it is authenticated) is kept in one place.
//!
//! Bounded reads: every kind has a largest stored size
//! ([`Object::MAX_STORED_LEN`], its plaintext limit sealed: frame header
//! and envelope overhead added; neither can grow a frame, which is stored
//! raw unless compression makes it smaller). [`Repository::load`] asks the
//! backend for at most that many bytes, so an oversized object (a 2 GiB
//! file at a snapshot's name) is refused from a stat before it is read, as
//! `Corrupt` damage naming the object and both sizes: readers skip it like
//! any damaged object and `check` names it. A pack's header is bounded the
//! same way by [`pack::MAX_HEADER_LEN`], checked in the trailer before the
//! header is read.
//!
//! Author blocks (format-spec/06, 11, 12): every object saved here ends
//! its payload with the writer's author block ([`author`]), and every load
//! splits it off and checks it as far as the handle's role can. An admin
//! handle refuses a [`Authenticity::Forged`] object as damage
//! ([`Repository::load`]); [`Repository::load_authored`] hands the
//! authorship to readers with rules of their own (prune records,
//! supersedes lists), and [`Repository::authorship`] tells what the last
//! load of an object found (`snapshots` shows writers from it). A
//! put-only handle never saves admin metadata ([`Object::needs_admin`]).

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::Range;

use crate::backend::write_bytes;
use crate::error::Result;
use crate::error::{Error, ErrorKind};
use crate::format::author::{self, Authenticity, Authorship};
use crate::format::envelope::ObjectType;
use crate::format::frame;
use crate::format::index::{self, IndexFile};
use crate::format::layout;
use crate::format::pack::{self, PackHeader, TRAILER_LEN};
use crate::format::prune::{self, PruneRecord};
use crate::format::snapshot::Snapshot;
use crate::id::{IndexId, PackId, RecordId, SnapshotId};
use crate::repository::Repository;
use crate::repository::sealer::{MAX_SNAPSHOT, as_damage};

/// A kind of sealed metadata object, stored whole under a name derived
/// from its id and written once (create-only).
pub trait Object: Sized {
    /// The id type that names objects of this kind.
    type Id: Copy + Eq + std::hash::Hash + Display;
    /// How messages name this kind ("snapshot", "index file", ...).
    const NAME: &'static str;
    /// The folder every object of this kind is listed from.
    const DIR: &'static str;
    /// The envelope type its sealing is bound to.
    const TYPE: ObjectType;
    /// The largest plaintext a reader accepts.
    const MAX_LEN: usize;
    /// The largest stored (sealed) object a reader reads: [`Self::MAX_LEN`]
    /// sealed ([`sealed_limit`]).
    const MAX_STORED_LEN: usize = sealed_limit(Self::TYPE, Self::MAX_LEN);

    fn id_bytes(id: &Self::Id) -> &[u8; 32];
    fn path(id: &Self::Id) -> String;
    /// The id a listed path names.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] for a name that is not one of this kind.
    fn parse_path(path: &str) -> Result<Self::Id>;
    fn encode(&self) -> Vec<u8>;
    /// # Errors
    /// [`ErrorKind::Corrupt`] or [`ErrorKind::Unsupported`] for bytes that
    /// do not decode.
    fn decode(plain: &[u8]) -> Result<Self>;
    /// Whether only an admin may write this object (a prune record, an
    /// index file with a supersedes list).
    fn needs_admin(&self) -> bool;
}

/// A loaded object and what its author block says.
#[derive(Debug, Clone)]
pub struct Authored<T> {
    pub value: T,
    pub author: Authorship,
}

/// Implements [`Object`] for a codec type whose `encode`/`decode` are its
/// own inherent functions.
macro_rules! object_kind {
    ($ty:ty, $id:ty, $name:literal, $dir:expr, $type:expr, $max:expr, $path:path, $parse:path, $admin:expr) => {
        impl Object for $ty {
            type Id = $id;
            const NAME: &'static str = $name;
            const DIR: &'static str = $dir;
            const TYPE: ObjectType = $type;
            const MAX_LEN: usize = $max;

            fn id_bytes(id: &$id) -> &[u8; 32] {
                id.as_bytes()
            }
            fn path(id: &$id) -> String {
                $path(id)
            }
            fn parse_path(path: &str) -> Result<$id> {
                $parse(path)
            }
            fn encode(&self) -> Vec<u8> {
                <$ty>::encode(self)
            }
            fn decode(plain: &[u8]) -> Result<Self> {
                <$ty>::decode(plain)
            }
            fn needs_admin(&self) -> bool {
                let admin_only: fn(&$ty) -> bool = $admin;
                admin_only(self)
            }
        }
    };
}

object_kind!(
    Snapshot,
    SnapshotId,
    "snapshot",
    layout::SNAPSHOTS_DIR,
    ObjectType::Snapshot,
    MAX_SNAPSHOT,
    layout::snapshot_path,
    layout::parse_snapshot_path,
    |_| false
);
object_kind!(
    IndexFile,
    IndexId,
    "index file",
    layout::INDEX_DIR,
    ObjectType::Index,
    index::MAX_LEN,
    layout::index_path,
    layout::parse_index_path,
    |file| !file.supersedes.is_empty()
);
object_kind!(
    PruneRecord,
    RecordId,
    "prune record",
    layout::PRUNE_DIR,
    ObjectType::PruneRecord,
    prune::MAX_LEN,
    layout::record_path,
    layout::parse_record_path,
    |_| true
);

impl Repository {
    /// Seals `value` with this handle's author block at zstd `level` and
    /// writes it under `id` (create-only: an existing object is never
    /// replaced).
    ///
    /// # Errors
    /// Backend errors; [`ErrorKind::AlreadyExists`] if the name is taken;
    /// [`ErrorKind::PutOnlyKey`] for admin metadata from a put-only handle.
    pub fn save<T: Object>(&self, id: &T::Id, value: &T, level: i32) -> Result<()> {
        if value.needs_admin() {
            self.require_admin(&format!("writing {} {id}", T::NAME))?;
        }
        let mut payload = value.encode();
        author::seal(
            self.sealer().key_set(),
            T::TYPE,
            T::id_bytes(id),
            &mut payload,
        );
        let sealed = self
            .sealer()
            .seal(T::TYPE, T::id_bytes(id), &payload, level);
        write_bytes(self.backend().as_ref(), &T::path(id), &sealed)
    }

    /// Reads, authenticates and decodes one object; one longer than
    /// [`Object::MAX_STORED_LEN`] is refused without being read. An admin
    /// handle refuses an object whose author block is forged, as damage.
    ///
    /// # Errors
    /// Backend errors ([`ErrorKind::NotFound`] for a missing object);
    /// [`ErrorKind::Corrupt`] for one that is oversized, forged, or does
    /// not authenticate or decode; [`ErrorKind::PutOnlyKey`] for a
    /// snapshot and a put-only handle.
    pub fn load<T: Object>(&self, id: &T::Id) -> Result<T> {
        let loaded = self.load_authored(id)?;
        if loaded.author.authenticity == Authenticity::Forged {
            return Err(Error::corrupt(format!(
                "{} {id}: forged: its author block names {} but does not verify with that \
                 writer's key (written by someone holding the repository's shared key only)",
                T::NAME,
                loaded.author.writer
            )));
        }
        Ok(loaded.value)
    }

    /// What the last load of object `id` of type `object_type` through
    /// this handle found in its author block.
    pub fn authorship(&self, object_type: ObjectType, id: &[u8; 32]) -> Option<Authorship> {
        self.authors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(object_type as u8, *id))
            .copied()
    }

    /// [`Self::load`] with the author block's verdict instead of a
    /// refusal of forged objects.
    ///
    /// # Errors
    /// As [`Self::load`], forgery aside.
    pub fn load_authored<T: Object>(&self, id: &T::Id) -> Result<Authored<T>> {
        let name = || format!("{} {id}", T::NAME);
        let stored = self
            .backend()
            .read_at_most(&T::path(id), T::MAX_STORED_LEN as u64)
            .map_err(|e| match e.kind() {
                ErrorKind::Corrupt => e.context(name()),
                _ => e,
            })?;
        let plain = self
            .sealer()
            .open(T::TYPE, T::id_bytes(id), &stored, T::MAX_LEN)?;
        let (body, author) =
            author::verify(self.sealer().key_set(), T::TYPE, T::id_bytes(id), &plain)?;
        let value = T::decode(body).map_err(|e| as_damage(e.context(name())))?;
        self.authors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((T::TYPE as u8, *T::id_bytes(id)), author);
        Ok(Authored { value, author })
    }

    /// The ids of every object of kind `T`, unread, in listing order.
    ///
    /// A name in the folder that is not one of this kind (a sync tool's
    /// conflicted copy, a README) is a stray: skipped with one warning
    /// naming it, never a failed listing.
    ///
    /// # Errors
    /// A failed listing (never read as "none").
    pub fn list<T: Object>(&self) -> Result<Vec<T::Id>> {
        Ok(self
            .backend()
            .list(T::DIR)?
            .iter()
            .filter_map(|info| skip_stray(&info.path, T::parse_path(&info.path)))
            .collect())
    }

    /// The strays of every object folder (`snapshots/`, `index/`,
    /// `prune/`, `data/`): listed names that are no object of the folder's
    /// kind, which every other listing skips. For `check`, which reports
    /// them without counting them as damage.
    ///
    /// # Errors
    /// A failed listing.
    pub fn strays(&self) -> Result<Vec<String>> {
        fn of<I>(
            repo: &Repository,
            dir: &str,
            parse: impl Fn(&str) -> Result<I>,
        ) -> Result<Vec<String>> {
            Ok(repo
                .backend()
                .list(dir)?
                .into_iter()
                .filter(|info| parse(&info.path).is_err())
                .map(|info| info.path)
                .collect())
        }
        let mut strays = of(self, Snapshot::DIR, Snapshot::parse_path)?;
        strays.extend(of(self, IndexFile::DIR, IndexFile::parse_path)?);
        strays.extend(of(self, PruneRecord::DIR, PruneRecord::parse_path)?);
        strays.extend(of(self, layout::DATA_DIR, layout::parse_pack_path)?);
        strays.sort();
        Ok(strays)
    }

    /// Deletes one object. Deleting one that is already gone is not an
    /// error for the local backend, and is [`ErrorKind::NotFound`] where a
    /// backend says so.
    ///
    /// # Errors
    /// Backend errors.
    pub fn delete<T: Object>(&self, id: &T::Id) -> Result<()> {
        self.backend().delete(&T::path(id))
    }

    /// Every pack with its size, from one listing of `data/`.
    ///
    /// Names under `data/` that are not packs (or sit in the wrong fan-out
    /// folder) are strays: skipped with one warning naming each.
    ///
    /// # Errors
    /// A failed listing (never read as "no packs").
    pub fn list_packs(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .backend()
            .list(layout::DATA_DIR)?
            .iter()
            .filter_map(|i| {
                skip_stray(&i.path, layout::parse_pack_path(&i.path)).map(|id| (id, i.size))
            })
            .collect())
    }

    /// The bytes of pack `id` (a range of them, or all of it if it is at
    /// most [`pack::MAX_PACK_LEN`] long: a longer pack is never read).
    ///
    /// # Errors
    /// Backend errors; [`ErrorKind::Corrupt`] for a range past the end or
    /// a pack over the limit (naming both sizes).
    pub fn read_pack(&self, id: &PackId, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let path = layout::pack_path(id);
        match range {
            Some(range) => self.backend().read(&path, Some(range)),
            None => self.backend().read_at_most(&path, pack::MAX_PACK_LEN),
        }
    }

    /// Writes a finished pack (create-only).
    ///
    /// # Errors
    /// Backend errors.
    pub fn write_pack(&self, id: &PackId, bytes: &[u8]) -> Result<()> {
        write_bytes(self.backend().as_ref(), &layout::pack_path(id), bytes)
    }

    /// Deletes pack `id`.
    ///
    /// # Errors
    /// Backend errors.
    pub fn delete_pack(&self, id: &PackId) -> Result<()> {
        self.backend().delete(&layout::pack_path(id))
    }

    /// Reads and opens the header of pack `id` (`size` bytes) with two
    /// ranged reads: the trailer, then the header envelope.
    ///
    /// # Errors
    /// Backend errors; [`ErrorKind::Corrupt`] for a damaged pack.
    pub fn read_pack_header(&self, id: &PackId, size: u64) -> Result<PackHeader> {
        if size < TRAILER_LEN as u64 {
            return Err(Error::corrupt(format!(
                "pack {id} is truncated ({size} bytes)"
            )));
        }
        let trailer = self.read_pack(id, Some(size - TRAILER_LEN as u64..size))?;
        let header_len = u64::from(
            pack::decode_trailer(&trailer, size).map_err(|e| e.context(format!("pack {id}")))?,
        );
        let start = size - TRAILER_LEN as u64 - header_len;
        let sealed = self.read_pack(id, Some(start..size - TRAILER_LEN as u64))?;
        pack::open_header(
            &self.sealer().keys().shared,
            id,
            self.sealer().repo(),
            &sealed,
            size,
        )
        .map_err(as_damage)
    }

    /// How many requests the backend serves well at once.
    pub fn io_concurrency(&self) -> usize {
        self.backend().concurrency()
    }

    /// Removes temporaries of writes that died more than `age` seconds
    /// ago; returns how many.
    ///
    /// # Errors
    /// Backend errors.
    pub fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<u64> {
        self.backend().remove_stale_temporaries(age)
    }
}

/// The largest stored form of a plaintext of at most `plain_limit` bytes:
/// a frame (its header, then the payload, raw or strictly smaller
/// compressed, then in the padded form zeros to Padmé's length) in an
/// envelope of `object_type`'s scheme.
pub const fn sealed_limit(object_type: ObjectType, plain_limit: usize) -> usize {
    let padded = crate::format::padme((plain_limit + frame::PADDED_HEADER_LEN) as u64);
    padded as usize + object_type.overhead()
}

/// The id a listed name parses to, or `None` for a stray (a name that is
/// not an object of the listed kind), which is logged once and skipped.
fn skip_stray<I>(path: &str, parsed: Result<I>) -> Option<I> {
    match parsed {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(path, error = %e, "ignoring stray file: not an object name");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn an_oversized_object_is_damage_naming_it_and_both_sizes() {
        let repo = crate::repository::in_memory_for_tests();
        let id = SnapshotId([7; 32]);
        let limit = <Snapshot as Object>::MAX_STORED_LEN;
        // 16 MiB + 9 rounds up by Padmé to 33 × 512 KiB; scheme 2.
        assert_eq!(limit, 17_301_504 + 73);
        let huge = vec![0u8; limit + 1];
        write_bytes(repo.backend().as_ref(), &Snapshot::path(&id), &huge).unwrap();
        let err = repo.load::<Snapshot>(&id).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("snapshot {id}")), "{text}");
        assert!(text.contains(&format!("{} bytes", limit + 1)), "{text}");
        assert!(text.contains(&format!("limit of {limit} bytes")), "{text}");
    }
}
