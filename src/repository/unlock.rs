//! Repository layer: which key slots an unlock tries, in which order, and
//! how much password hashing it may spend (format-spec/07, "Key slots").
//! Owns the invariant that one unlock costs a bounded amount of KDF work
//! however many slots, or how expensive ones, a hostile storage provider
//! plants in `keys/`.
//!
//! The order: the slot the user chose (`--key-slot`: only that one, whatever
//! its cost), else the slot that opened this repository last on this
//! machine (a hint kept in the local cache, `<cache root>/<repository
//! id>/key-slot`) first, then the rest in listing order. The first slot in
//! that order is always tried (a repository whose one slot is within the
//! KDF policy always opens, as before); each further slot is tried only if
//! it keeps the slots tried at most [`MAX_SLOTS_TRIED`] and their summed
//! [`kdf_work`] at most [`MAX_UNLOCK_WORK`]; the others are skipped and,
//! if no slot opens, named in the error with how to choose one. A slot
//! outside the KDF policy is refused without any work and costs nothing.
//!
//! The hint's directories are made 0700 and its file 0600, whatever the
//! umask, as every part of the cache is: it names which password opens a
//! repository.

use std::fs;
use std::path::{Path, PathBuf};

use crate::algorithms::crypto::roles::KeySet;
use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::format::keyslot::{self, KeySlot, MAX_SLOTS_TRIED, MAX_UNLOCK_WORK, kdf_work};
use crate::format::layout;
use crate::id::{KeySlotId, RepoId};

/// The file, under a repository's cache directory, naming the key slot
/// that opened it last on this machine.
pub const HINT_FILE: &str = "key-slot";

/// How an unlock chooses the key slots it tries.
#[derive(Debug, Clone, Default)]
pub struct UnlockOptions {
    /// Try only the key slot whose id starts with this hex prefix (either
    /// case), whatever its KDF work.
    pub key_slot: Option<String>,
    /// The local cache root: the slot that opens the repository is
    /// remembered under it and tried first next time. `None`: no hint.
    pub cache_root: Option<PathBuf>,
}

/// Key slots with their ids, in the order they are tried or listed.
type Slots = Vec<(KeySlotId, KeySlot)>;

/// The slots one unlock tries, in order, and those it skips.
#[derive(Debug)]
pub(crate) struct SlotPlan {
    pub tried: Slots,
    pub skipped: Slots,
}

/// Orders `slots` (listing order) with `first` in front if present and
/// splits them into those tried and those skipped by the caps.
pub(crate) fn plan(mut slots: Slots, first: Option<KeySlotId>) -> SlotPlan {
    if let Some(pos) = first.and_then(|f| slots.iter().position(|(id, _)| *id == f)) {
        let hinted = slots.remove(pos);
        slots.insert(0, hinted);
    }
    let mut plan = SlotPlan {
        tried: Vec::new(),
        skipped: Vec::new(),
    };
    let mut work = 0;
    for (id, slot) in slots {
        // Refused by the policy before any work: free to "try".
        let cost = match slot.params.check_policy() {
            Ok(()) => kdf_work(&slot.params),
            Err(_) => 0,
        };
        let fits =
            cost == 0 || (plan.tried.len() < MAX_SLOTS_TRIED && work + cost <= MAX_UNLOCK_WORK);
        if plan.tried.is_empty() || fits {
            work += cost;
            plan.tried.push((id, slot));
        } else {
            plan.skipped.push((id, slot));
        }
    }
    plan
}

/// Where the hint for repository `repo` lives under `cache_root`.
pub fn hint_file(cache_root: &Path, repo: &RepoId) -> PathBuf {
    cache_root.join(repo.to_hex()).join(HINT_FILE)
}

/// The hinted slot, if the cache has a readable hint.
fn read_hint(cache_root: Option<&Path>, repo: &RepoId) -> Option<KeySlotId> {
    let text = fs::read_to_string(hint_file(cache_root?, repo)).ok()?;
    KeySlotId::from_hex(text.trim()).ok()
}

/// Remembers `slot` as the one that opened `repo`. The cache is a cache:
/// a failure only costs the hint, and is logged.
fn write_hint(cache_root: Option<&Path>, repo: &RepoId, slot: KeySlotId) {
    let Some(root) = cache_root else { return };
    if read_hint(Some(root), repo) == Some(slot) {
        return;
    }
    let file = hint_file(root, repo);
    let written = write_private(&file, format!("{}\n", slot.to_hex()).as_bytes());
    if let Err(e) = written {
        tracing::debug!("key slot hint {}: {e}", file.display());
    }
}

/// Writes `bytes` to `file`, creating it 0600 and its missing directories
/// 0700 (private to the owner whatever the umask).
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?
        .write_all(bytes)
}

/// Every slot in `keys/` with its decoded contents, or why it cannot be
/// used; strays are skipped with a warning. Each slot is read bounded
/// ([`keyslot::MAX_STORED_LEN`]).
pub(crate) fn read_slots(backend: &dyn Backend) -> Result<Vec<(KeySlotId, Result<KeySlot>)>> {
    let mut out = Vec::new();
    for info in backend.list(layout::KEYS_DIR)? {
        let Ok(id) = layout::parse_key_path(&info.path) else {
            tracing::warn!("ignoring stray object {} among the key slots", info.path);
            continue;
        };
        let slot = backend
            .read_at_most(&info.path, keyslot::MAX_STORED_LEN as u64)
            .and_then(|b| KeySlot::decode(&b));
        out.push((id, slot));
    }
    Ok(out)
}

/// The slots of `repo` that can be tried, and a sentence for each that
/// cannot (does not decode, or belongs to another repository).
fn usable_slots(backend: &dyn Backend, repo: &RepoId) -> Result<(Slots, Vec<String>)> {
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for (id, slot) in read_slots(backend)? {
        match slot {
            Err(e) => unusable.push(format!(
                "key slot {id} does not decode ({e}): it is damaged; remove it with \
                 `kura key remove {id}` using another password, or put it back from a copy \
                 of the repository"
            )),
            Ok(slot) if slot.repo != *repo => unusable.push(format!(
                "key slot {id} belongs to repository {}, not to this config's {repo} (if the \
                 repository config came from another repository, put back the file `config` \
                 from any copy of this repository)",
                slot.repo
            )),
            Ok(slot) => usable.push((id, slot)),
        }
    }
    Ok((usable, unusable))
}

/// The one slot `prefix` names among `slots`.
fn chosen(slots: Slots, prefix: &str) -> Result<(KeySlotId, KeySlot)> {
    let wanted = prefix.to_ascii_lowercase();
    let mut matches: Vec<_> = slots
        .into_iter()
        .filter(|(id, _)| id.to_hex().starts_with(&wanted))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::new(
            ErrorKind::NotFound,
            format!("no usable key slot matches {prefix:?} (--key-slot)"),
        )),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{prefix:?} matches several key slots; give more digits"),
        )),
    }
}

/// Tries the slots of repository `repo` that `options` and the caps allow,
/// with `password`. A wrong password is [`ErrorKind::WrongPassword`] only
/// when some readable slot of this repository was tried; slots that do not
/// decode, or that belong to another repository (a config swapped in from
/// elsewhere), are named in the message, and a repository with no usable
/// slot at all is [`ErrorKind::Corrupt`] damage, not a wrong password.
/// Slots skipped by the caps are named with how to choose one.
pub(crate) fn unlock_any(
    backend: &dyn Backend,
    repo: &RepoId,
    password: &[u8],
    options: &UnlockOptions,
) -> Result<(KeySlotId, KeySet)> {
    let (usable, unusable) = usable_slots(backend, repo)?;
    let cache_root = options.cache_root.as_deref();
    let plan = match &options.key_slot {
        Some(prefix) => SlotPlan {
            tried: vec![chosen(usable, prefix)?],
            skipped: Vec::new(),
        },
        None => plan(usable, read_hint(cache_root, repo)),
    };
    let mut refused = None;
    let mut tried = Vec::new();
    for (id, slot) in &plan.tried {
        match slot.unlock(password) {
            Ok(master) => {
                write_hint(cache_root, repo, *id);
                return Ok((*id, master));
            }
            Err(e) if e.kind() == ErrorKind::KeySlotRefused => {
                refused = Some(e.context(format!("key slot {id}")));
            }
            Err(_) => tried.push(*id),
        }
    }
    Err(failure(refused, &tried, &unusable, &plan.skipped))
}

/// Why no slot opened: see [`unlock_any`].
fn failure(
    refused: Option<Error>,
    tried: &[KeySlotId],
    unusable: &[String],
    skipped: &[(KeySlotId, KeySlot)],
) -> Error {
    let mut notes = unusable.to_vec();
    if !skipped.is_empty() {
        notes.push(skipped_note(skipped));
    }
    let also = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    match refused {
        Some(e) if tried.is_empty() && notes.is_empty() => e,
        Some(e) if tried.is_empty() => e.context(notes.join("; ")),
        _ if !tried.is_empty() => Error::new(
            ErrorKind::WrongPassword,
            format!(
                "wrong password: no key slot opens with it{}{also}",
                tried_note(tried)
            ),
        ),
        _ if unusable.is_empty() => Error::corrupt(
            "the repository has no key slots (keys/ is empty): no password can open it; \
             restore keys/ from a copy of the repository",
        ),
        _ => Error::corrupt(format!("no key slot of this repository can be used{also}")),
    }
}

/// Names the slots a wrong password was tried on: a slot whose sealed key
/// is damaged, or that holds another slot's bytes, fails exactly as a wrong
/// password does (its one check is the AEAD under the password's key).
fn tried_note(tried: &[KeySlotId]) -> String {
    let names: Vec<String> = tried.iter().map(|id| format!("key slot {id}")).collect();
    format!(
        " (tried {}; a damaged key slot fails the same way: if the password is right, open \
         with another password, `kura key add` a new slot for it and `kura key remove` the \
         old one)",
        names.join(", ")
    )
}

/// Names the slots the caps skipped, and how to try one of them.
fn skipped_note(skipped: &[(KeySlotId, KeySlot)]) -> String {
    let names: Vec<String> = skipped
        .iter()
        .map(|(id, s)| {
            format!(
                "{id} (memory {} KiB, {} passes)",
                s.params.m_cost, s.params.t_cost
            )
        })
        .collect();
    format!(
        "not tried, to bound the work of one unlock (at most {MAX_SLOTS_TRIED} slots and \
         {MAX_UNLOCK_WORK} KiB x passes of key derivation): key slot {}; to try one, \
         choose it with --key-slot ID (or KURA_KEY_SLOT=ID)",
        names.join(", key slot ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::algorithms::crypto::kdf::KdfParams;
    use crate::backend::write_bytes;
    use crate::repository::{Repository, in_memory_for_tests};

    fn slot(repo: &Repository, params: KdfParams) -> KeySlot {
        // Made cheaply, then given `params`: the caps read only those, so
        // no test here ever runs an expensive derivation.
        let mut slot =
            KeySlot::create(repo_master(repo), b"x", *repo.id(), KdfParams::FLOOR, 0).unwrap();
        slot.params = params;
        slot
    }

    fn repo_master(repo: &Repository) -> &crate::algorithms::crypto::MasterSecret {
        repo.sealer().key_set().master().unwrap()
    }

    fn ids(slots: &[(KeySlotId, KeySlot)]) -> Vec<KeySlotId> {
        slots.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn default_slots_are_all_tried_up_to_the_count_cap() {
        let repo = in_memory_for_tests();
        let slots: Vec<_> = (0..9u8)
            .map(|i| (KeySlotId([i; 32]), slot(&repo, KdfParams::DEFAULT)))
            .collect();
        let three = plan(slots[..3].to_vec(), None);
        assert_eq!(ids(&three.tried), ids(&slots[..3]));
        assert!(three.skipped.is_empty());
        let nine = plan(slots.clone(), Some(KeySlotId([8; 32])));
        assert_eq!(nine.tried.len(), MAX_SLOTS_TRIED);
        assert_eq!(nine.tried[0].0, KeySlotId([8; 32]), "the hint first");
        assert_eq!(ids(&nine.skipped), vec![KeySlotId([7; 32])]);
    }

    #[test]
    fn the_work_cap_skips_expensive_slots_but_never_the_first_nor_a_refused_one() {
        let repo = in_memory_for_tests();
        let costly = KdfParams {
            m_cost: 256 << 10,
            t_cost: 16,
            p_cost: 1,
        };
        let over_ceiling = KdfParams {
            m_cost: u32::MAX,
            ..costly
        };
        let slots = vec![
            (KeySlotId([1; 32]), slot(&repo, costly)),
            (KeySlotId([2; 32]), slot(&repo, costly)),
            (KeySlotId([3; 32]), slot(&repo, over_ceiling)),
            (KeySlotId([4; 32]), slot(&repo, KdfParams::DEFAULT)),
        ];
        let p = plan(slots.clone(), None);
        assert_eq!(
            ids(&p.tried),
            vec![KeySlotId([1; 32]), KeySlotId([3; 32])],
            "the first always; a refused slot costs nothing"
        );
        assert_eq!(
            ids(&p.skipped),
            vec![KeySlotId([2; 32]), KeySlotId([4; 32])]
        );
        let hinted = plan(slots, Some(KeySlotId([4; 32])));
        assert_eq!(
            ids(&hinted.tried),
            vec![KeySlotId([4; 32]), KeySlotId([3; 32])]
        );
    }

    /// The slot that opened the repository is remembered in the cache and
    /// tried first: a planted expensive slot listed before it is then
    /// never derived, and a wrong password names it as skipped.
    #[test]
    fn the_hinted_slot_goes_first_and_skipped_slots_are_named() {
        let repo = in_memory_for_tests();
        let backend = Arc::clone(repo.backend());
        let cache = tempfile::tempdir().unwrap();
        let hinted = UnlockOptions {
            key_slot: None,
            cache_root: Some(cache.path().to_path_buf()),
        };
        let opened = Repository::open_with(Arc::clone(&backend), b"pw", &hinted).unwrap();
        let own = opened.current_slot();
        let hint = fs::read_to_string(hint_file(cache.path(), repo.id())).unwrap();
        assert_eq!(hint.trim(), own.to_hex());

        let planted = KeySlotId([0; 32]); // listed before any random id
        let costly = KdfParams {
            m_cost: 1 << 20,
            t_cost: 16,
            p_cost: 1,
        };
        let bytes = slot(&repo, costly).encode();
        write_bytes(backend.as_ref(), &layout::key_path(&planted), &bytes).unwrap();
        let err = Repository::open_with(Arc::clone(&backend), b"nope", &hinted)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongPassword, "{err}");
        let text = err.to_string();
        assert!(text.contains("not tried"), "{text}");
        assert!(text.contains(&planted.to_hex()), "{text}");
        assert!(text.contains("--key-slot"), "{text}");
        let again = Repository::open_with(Arc::clone(&backend), b"pw", &hinted).unwrap();
        assert_eq!(again.current_slot(), own);
    }

    #[test]
    fn a_chosen_slot_is_the_only_one_tried() {
        let repo = in_memory_for_tests();
        let backend = Arc::clone(repo.backend());
        let second = repo.add_key(b"two", KdfParams::FLOOR).unwrap();
        let choose = |id: &KeySlotId| UnlockOptions {
            key_slot: Some(id.to_hex()[..12].to_ascii_uppercase()),
            cache_root: None,
        };
        let opened = Repository::open_with(Arc::clone(&backend), b"two", &choose(&second)).unwrap();
        assert_eq!(opened.current_slot(), second);
        let first = repo.current_slot();
        let err = Repository::open_with(Arc::clone(&backend), b"two", &choose(&first))
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongPassword, "{err}");
        let none = UnlockOptions {
            key_slot: Some("zz".into()),
            cache_root: None,
        };
        let err = Repository::open_with(backend, b"two", &none).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn more_slots_than_the_count_cap_are_named_not_tried() {
        let repo = in_memory_for_tests();
        let added: Vec<KeySlotId> = (0..MAX_SLOTS_TRIED)
            .map(|_| repo.add_key(b"other", KdfParams::FLOOR).unwrap())
            .collect();
        let err = Repository::open(Arc::clone(repo.backend()), b"nope")
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongPassword, "{err}");
        let text = err.to_string();
        let (_, skipped) = text.split_once("not tried").unwrap();
        let named = added
            .iter()
            .chain([&repo.current_slot()])
            .filter(|id| skipped.contains(&id.to_hex()))
            .count();
        assert_eq!(named, 1, "{text}");
    }
}
