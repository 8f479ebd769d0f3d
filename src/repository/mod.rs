//! The repository handle: config, key slots and the unlocked keys. Opening
//! checks the format version and mandatory features before asking anything
//! of the password, then tries the key slots in the bounded order of
//! [`unlock`]. Every object read here is read bounded: the config
//! ([`config::MAX_STORED_LEN`]) and each key slot
//! ([`crate::format::keyslot::MAX_STORED_LEN`]).
//!
//! A handle is opened with the admin key (role 0: the master secret) or a
//! put-only key (role 1, format-spec/02); [`Repository::is_admin`] says
//! which. A put-only handle can back up (read index files, pack headers
//! and prune records; write packs, index files and snapshots sealed to the
//! admin) and gets [`ErrorKind::PutOnlyKey`] for anything else.

pub mod objects;
pub mod records;
pub mod roles;
pub mod sealer;
pub mod snapshots;
pub mod unlock;

use std::sync::Arc;

use crate::algorithms::chunker::Chunker;
use crate::algorithms::crypto::MasterSecret;
use crate::algorithms::crypto::kdf::KdfParams;
use crate::algorithms::crypto::roles::KeySet;
use crate::backend::{Backend, write_bytes};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::format::config::{self, ChunkerParams, ConfigBody, ConfigHeader};
use crate::format::keyslot::KeySlot;
use crate::format::layout;
use crate::id::{KeySlotId, RepoId};
use crate::repository::sealer::Sealer;
use crate::repository::unlock::{UnlockOptions, read_slots, unlock_any};

/// Default chunker parameters, chosen by measurement
/// (format-spec/04-chunking.md): 32 KiB average.
pub const DEFAULT_CHUNKER: ChunkerParams = ChunkerParams {
    min: 8 << 10,
    avg: 32 << 10,
    max: 128 << 10,
    normalization: 1,
};

/// How to create a repository.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    /// Stamps the first key slot's creation time, and stays the opened
    /// repository's clock ([`Repository::set_clock`]).
    pub clock: Clock,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::DEFAULT,
            chunker: DEFAULT_CHUNKER,
            clock: Clock::System,
        }
    }
}

/// What to do about a damaged config, the one object no command repairs:
/// it never changes after `init`, so any copy of the repository has it.
pub const CONFIG_ADVICE: &str = "the repository config is damaged; it never changes after \
    `kura init`, so put back the file `config` from any copy of this repository";

/// Names a [`ErrorKind::Corrupt`] config with [`CONFIG_ADVICE`]; other
/// errors (backend, newer version) pass unchanged.
fn damaged_config(e: Error) -> Error {
    if e.kind() == ErrorKind::Corrupt {
        e.context(CONFIG_ADVICE)
    } else {
        e
    }
}

/// A key slot as shown to a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeySlotInfo {
    pub id: KeySlotId,
    /// Unix seconds.
    pub created: u64,
    #[serde(rename = "kdf")]
    pub params: KdfParams,
    /// Whether this slot unlocked the open repository.
    pub current: bool,
    /// "admin" or "put-only".
    pub role: &'static str,
}

/// An open, unlocked repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    header: ConfigHeader,
    config: ConfigBody,
    sealer: Sealer,
    chunker: Chunker,
    slot: KeySlotId,
    /// Stamps key slots made through this handle.
    clock: Clock,
    /// What each object's author block said when last loaded, by (object
    /// type, id): see [`Self::authorship`].
    authors: std::sync::Mutex<
        std::collections::HashMap<(u8, [u8; 32]), crate::format::author::Authorship>,
    >,
}

impl Repository {
    /// Creates a new repository on an empty backend and opens it.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if a config is already there;
    /// [`ErrorKind::KeySlotRefused`] for KDF parameters outside the policy;
    /// backend errors.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<Self> {
        // An empty range: whether a config exists, without reading it.
        match backend.read(layout::CONFIG, Some(0..0)) {
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{}: a repository already exists here", backend.describe()),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        opts.chunker.check()?;
        let master = MasterSecret::generate();
        let header = ConfigHeader {
            version: config::VERSION,
            mandatory_features: 0,
            compatible_features: 0,
            repo: RepoId::random(),
        };
        let keys = KeySet::admin(master);
        let now = opts.clock.now_unix();
        let body = ConfigBody::v2(opts.chunker, &keys.subkeys.admin_public, now);
        let slot = KeySlot::create_for(&keys, password, header.repo, opts.kdf, now)?;
        let slot_id = KeySlotId::random();
        // The key slot first: a visible config always has a key to open it.
        write_bytes(
            backend.as_ref(),
            &layout::key_path(&slot_id),
            &slot.encode(),
        )?;
        write_bytes(
            backend.as_ref(),
            layout::CONFIG,
            &config::encode(&header, &body, &keys.subkeys.shared),
        )?;
        let readme = readme_text(&header.repo);
        if let Err(e) = write_bytes(backend.as_ref(), layout::README, readme.as_bytes()) {
            tracing::warn!("the repository's README was not written: {e}");
        }
        let mut repo = Self::assemble(backend, header, body, keys, slot_id)?;
        repo.clock = opts.clock;
        Ok(repo)
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        header: ConfigHeader,
        config: ConfigBody,
        keys: KeySet,
        slot: KeySlotId,
    ) -> Result<Self> {
        if config.admin_public()? != keys.subkeys.admin_public {
            return Err(Error::corrupt(
                "the config's admin public key is not the one the key slot holds",
            ));
        }
        let params = config.chunker.params;
        Ok(Self {
            chunker: Chunker::new(&keys.subkeys.chunker, params),
            sealer: Sealer::new(keys, header.repo, params.max as usize)?,
            backend,
            header,
            config,
            slot,
            clock: Clock::System,
            authors: std::sync::Mutex::default(),
        })
    }

    /// Now, by this handle's clock (key slots' creation time).
    pub(crate) fn clock_now(&self) -> u64 {
        self.clock.now_unix()
    }

    /// Sets the clock that stamps key slots made from now on (the system
    /// clock unless set here or by [`InitOptions::clock`]).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Reads and checks the clear config header, without a password.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no repository;
    /// [`ErrorKind::Unsupported`] for a newer version or unknown mandatory
    /// feature; [`ErrorKind::Corrupt`] for a damaged header.
    pub fn read_header(backend: &dyn Backend) -> Result<(ConfigHeader, Vec<u8>)> {
        let limit = config::MAX_STORED_LEN as u64;
        let bytes = backend.read_at_most(layout::CONFIG, limit).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{}: no kura repository here", backend.describe()),
                )
            } else {
                damaged_config(e)
            }
        })?;
        let header = ConfigHeader::decode(&bytes).map_err(damaged_config)?;
        Ok((header, bytes))
    }

    /// Opens a repository with `password`.
    ///
    /// # Errors
    /// As [`Self::read_header`]; [`ErrorKind::WrongPassword`] if no slot
    /// opens; [`ErrorKind::KeySlotRefused`] if the only slots ask for KDF
    /// parameters outside the policy; [`ErrorKind::Corrupt`] if the config
    /// body fails authentication.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        Self::open_with(backend, password, &UnlockOptions::default())
    }

    /// [`Self::open`] choosing key slots as `unlock` says: one slot the
    /// user named, or the hinted slot first (see [`unlock`]).
    ///
    /// # Errors
    /// As [`Self::open`]; [`ErrorKind::WrongPassword`] naming the slots
    /// the caps skipped; [`ErrorKind::NotFound`] or
    /// [`ErrorKind::InvalidInput`] for a key slot prefix that names no
    /// usable slot or several.
    pub fn open_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        unlock: &UnlockOptions,
    ) -> Result<Self> {
        let (header, bytes) = Self::read_header(backend.as_ref())?;
        let (slot, keys) = unlock_any(backend.as_ref(), &header.repo, password, unlock)?;
        let body = config::open_body(&bytes, &keys.subkeys.shared).map_err(damaged_config)?;
        Self::assemble(backend, header, body, keys, slot).map_err(damaged_config)
    }

    /// The config object's bytes as storage holds them now (read again):
    /// what rollback detection compares with what it saw.
    ///
    /// # Errors
    /// As [`Self::read_header`].
    pub fn stored_config(&self) -> Result<Vec<u8>> {
        Self::read_header(self.backend.as_ref()).map(|(_, bytes)| bytes)
    }

    /// This handle's clock: what it takes as now.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn id(&self) -> &RepoId {
        &self.header.repo
    }

    pub fn header(&self) -> &ConfigHeader {
        &self.header
    }

    pub fn config(&self) -> &ConfigBody {
        &self.config
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The key slot that unlocked this handle.
    pub fn current_slot(&self) -> KeySlotId {
        self.slot
    }

    /// Every key slot of the repository that decodes; a slot that does
    /// not is skipped with a damage warning (see [`Self::damaged_keys`]).
    ///
    /// # Errors
    /// Backend errors.
    pub fn list_keys(&self) -> Result<Vec<KeySlotInfo>> {
        let mut out = Vec::new();
        for (id, slot) in read_slots(self.backend.as_ref())? {
            match slot {
                Ok(slot) => out.push(KeySlotInfo {
                    id,
                    created: slot.created,
                    params: slot.params,
                    current: id == self.slot,
                    role: if slot.role == crate::format::keyslot::ROLE_PUT_ONLY {
                        "put-only"
                    } else {
                        "admin"
                    },
                }),
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    crate::error::warn_skipped_damage(&format!("key slot {id}"), &e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The key slots that do not decode, with why: damage no password can
    /// use, which `check` names and [`Self::remove_key`] removes.
    ///
    /// # Errors
    /// Backend errors.
    pub fn damaged_keys(&self) -> Result<Vec<(KeySlotId, Error)>> {
        let mut out = Vec::new();
        for (id, slot) in read_slots(self.backend.as_ref())? {
            match slot {
                Err(e) if e.kind() == ErrorKind::Corrupt => out.push((id, e)),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok(out)
    }

    /// The key slot whose id starts with `prefix` (hex, either case), as a
    /// user names one on the command line.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if no slot matches; [`ErrorKind::InvalidInput`]
    /// if several do (more digits are needed); as [`Self::list_keys`].
    pub fn find_key_slot(&self, prefix: &str) -> Result<KeySlotId> {
        let wanted = prefix.to_ascii_lowercase();
        let damaged = self.damaged_keys()?.into_iter().map(|(id, _)| id);
        let matches: Vec<KeySlotId> = self
            .list_keys()?
            .into_iter()
            .map(|k| k.id)
            .chain(damaged)
            .filter(|id| id.to_hex().starts_with(&wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::new(
                ErrorKind::NotFound,
                format!("no key slot matches {prefix:?}"),
            )),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{prefix:?} matches several key slots; give more digits"),
            )),
        }
    }

    /// Adds an admin key slot for `password` (an admin handle only).
    ///
    /// # Errors
    /// [`ErrorKind::PutOnlyKey`] from a put-only handle;
    /// [`ErrorKind::KeySlotRefused`] for parameters outside the policy;
    /// backend errors.
    pub fn add_key(&self, password: &[u8], params: KdfParams) -> Result<KeySlotId> {
        let keys = self.sealer.key_set();
        if !keys.is_admin() {
            return Err(sealer::put_only_refusal("adding a key"));
        }
        self.write_key_slot(keys, password, params)
    }

    /// Writes a new slot of `keys`' role for `password`.
    fn write_key_slot(
        &self,
        keys: &KeySet,
        password: &[u8],
        params: KdfParams,
    ) -> Result<KeySlotId> {
        let now = self.clock.now_unix();
        let slot = KeySlot::create_for(keys, password, self.header.repo, params, now)?;
        let id = KeySlotId::random();
        write_bytes(
            self.backend.as_ref(),
            &layout::key_path(&id),
            &slot.encode(),
        )?;
        Ok(id)
    }

    /// Removes a key slot other than the current one, a damaged one (that
    /// does not decode) included.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for the current slot (use
    /// [`Self::change_password`]) or an unknown slot.
    pub fn remove_key(&self, id: &KeySlotId) -> Result<()> {
        if !self.is_admin() {
            return Err(sealer::put_only_refusal("removing a key"));
        }
        if *id == self.slot {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "refusing to remove the key slot in use; use `key passwd` to replace it",
            ));
        }
        let damaged = self.damaged_keys()?.into_iter().map(|(d, _)| d);
        if !self
            .list_keys()?
            .iter()
            .map(|k| k.id)
            .chain(damaged)
            .any(|k| k == *id)
        {
            return Err(Error::new(ErrorKind::NotFound, format!("no key slot {id}")));
        }
        self.backend.delete(&layout::key_path(id))
    }

    /// Replaces the current slot by one of the same role for `password`:
    /// the new slot is written first, so a crash leaves both rather than
    /// neither.
    ///
    /// # Errors
    /// As [`Self::add_key`].
    pub fn change_password(&mut self, password: &[u8], params: KdfParams) -> Result<KeySlotId> {
        let new = self.write_key_slot(self.sealer.key_set(), password, params)?;
        let old = std::mem::replace(&mut self.slot, new);
        self.backend.delete(&layout::key_path(&old))?;
        Ok(new)
    }
}

/// A new repository in memory with the cheapest key slot, for unit tests
/// of this and the layers above.
#[cfg(test)]
pub(crate) fn in_memory_for_tests() -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::FLOOR,
        ..InitOptions::default()
    };
    let backend = Arc::new(crate::backend::memory::MemoryBackend::new());
    Repository::init(backend, b"pw", &opts).expect("a repository in memory")
}

/// The plain `README` a new repository gets (format-spec/07): for whoever
/// finds the storage without the person who set it up.
fn readme_text(id: &RepoId) -> String {
    format!(
        "This is a kura backup repository: deduplicated, compressed, encrypted.\n\
         \n\
         Format version {version}; repository id {id}.\n\
         Everything here except this file and `config`'s first bytes is encrypted.\n\
         \n\
         To restore: install kura (its Debian package, or `cargo install\n\
         --path .` in kura's source), then, with this directory's location as\n\
         it is reached from your machine (a path, sftp://user@host/path,\n\
         s3://bucket/prefix):\n\
         \n\
         \x20 export KURA_REPOSITORY=<location>\n\
         \x20 kura snapshots                               # asks for the password\n\
         \x20 kura restore latest --target /tmp/restored\n\
         \n\
         The password is the administrator's, or the recovery code on the\n\
         printed KURA RECOVERY SHEET that `kura key add --recovery` made: look\n\
         for it where the company keeps its keys and contracts. Without one of\n\
         them the backups cannot be read by anyone.\n\
         \n\
         Do not delete or change files here by hand: `kura forget` and\n\
         `kura prune` remove old backups safely.\n",
        version = config::VERSION,
        id = id.to_hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        in_memory_for_tests()
    }

    /// Opens `repo`'s storage again with `password`; the error if it fails.
    fn reopen(repo: &Repository, password: &[u8]) -> Result<(), Error> {
        Repository::open(Arc::clone(repo.backend()), password).map(|_| ())
    }

    #[test]
    fn unusable_key_slots_are_named_and_are_not_a_wrong_password() {
        let repo = repo();
        let backend = repo.backend();
        let good = repo.current_slot();
        let damaged = KeySlotId([0xd0; 32]);
        backend
            .write(&layout::key_path(&damaged), &mut &b"not a key slot"[..])
            .unwrap();
        // A wrong password is still one, and the damaged slot is named.
        let err = reopen(&repo, b"nope").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongPassword, "{err}");
        assert!(err.to_string().contains(&damaged.to_hex()), "{err}");
        reopen(&repo, b"pw").unwrap();
        // A slot of another repository is named as such.
        let other = in_memory_for_tests();
        let foreign = other.current_slot();
        let bytes = other
            .backend()
            .read(&layout::key_path(&foreign), None)
            .unwrap();
        backend
            .write(&layout::key_path(&foreign), &mut &bytes[..])
            .unwrap();
        // With only unusable slots left, no password is tried: damage.
        backend.delete(&layout::key_path(&good)).unwrap();
        let err = reopen(&repo, b"pw").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        let text = err.to_string();
        assert!(text.contains(&damaged.to_hex()), "{text}");
        assert!(text.contains("belongs to repository"), "{text}");
        // No slots at all.
        backend.delete(&layout::key_path(&damaged)).unwrap();
        backend.delete(&layout::key_path(&foreign)).unwrap();
        let err = reopen(&repo, b"pw").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("no key slots"), "{err}");
    }

    #[test]
    fn key_slots_are_found_by_unique_prefix() {
        let repo = repo();
        let current = repo.current_slot();
        let hex = current.to_hex();
        assert_eq!(repo.find_key_slot(&hex).unwrap(), current);
        assert_eq!(
            repo.find_key_slot(&hex.to_ascii_uppercase()[..6]).unwrap(),
            current
        );
        let other = if hex.starts_with('0') { "1" } else { "0" };
        let none = repo
            .find_key_slot(&format!("{other}{}", &hex[1..]))
            .unwrap_err();
        assert_eq!(none.kind(), ErrorKind::NotFound);
        assert_eq!(
            none.to_string(),
            format!("no key slot matches {:?}", format!("{other}{}", &hex[1..]))
        );

        let added = repo.add_key(b"second", KdfParams::FLOOR).unwrap();
        assert_eq!(repo.find_key_slot(&added.to_hex()[..16]).unwrap(), added);
        let both = repo.find_key_slot("").unwrap_err();
        assert_eq!(both.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            both.to_string(),
            "\"\" matches several key slots; give more digits"
        );
    }
}
