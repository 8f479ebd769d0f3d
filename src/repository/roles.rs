//! Repository layer: the two roles of a handle (format-spec/02, 08). Owns
//! the invariants that only an admin handle issues put-only keys, that a
//! put-only key id is random, never 0 and unused by the repository's
//! other put-only slots an admin can see, and that a put-only handle gets
//! [`crate::ErrorKind::PutOnlyKey`] wherever the admin key is needed.

use crate::algorithms::crypto::kdf::KdfParams;
use crate::algorithms::crypto::random_array;
use crate::backend::write_bytes;
use crate::error::Result;
use crate::format::author::Writer;
use crate::format::keyslot::KeySlot;
use crate::format::layout;
use crate::id::KeySlotId;
use crate::repository::Repository;
use crate::repository::sealer::put_only_refusal;

impl Repository {
    /// Whether this handle was opened with the admin key.
    pub fn is_admin(&self) -> bool {
        self.sealer().is_admin()
    }

    /// Who this handle writes as: the admin, or put-only key k.
    pub fn writer(&self) -> Writer {
        Writer::from_u32(self.sealer().key_set().writer())
    }

    /// Fails with [`crate::ErrorKind::PutOnlyKey`] unless this is an admin
    /// handle; `what` names the operation ("prune", "restore", ...).
    ///
    /// # Errors
    /// As above.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(put_only_refusal(what))
        }
    }

    /// Issues a put-only key: a role-1 slot for `password` holding a new
    /// random key id (never 0). Returns the slot and the key id, which
    /// author blocks and `snapshots` name it by.
    ///
    /// # Errors
    /// [`crate::ErrorKind::PutOnlyKey`] from a put-only handle;
    /// [`ErrorKind::KeySlotRefused`] for parameters outside the policy;
    /// backend errors.
    pub fn add_put_only_key(&self, password: &[u8], params: KdfParams) -> Result<(KeySlotId, u32)> {
        let Some(master) = self.sealer().key_set().master() else {
            return Err(put_only_refusal("adding a key"));
        };
        let key_id = new_key_id();
        let now = self.clock_now();
        let slot = KeySlot::create_put_only(
            master,
            key_id,
            password,
            *self.id(),
            params,
            now,
            random_array(),
            random_array(),
        )?;
        let id = KeySlotId::random();
        write_bytes(
            self.backend().as_ref(),
            &layout::key_path(&id),
            &slot.encode(),
        )?;
        Ok((id, key_id))
    }
}

/// A random put-only key id: a u32 that is never 0 (the admin's writer id).
/// Two put-only keys sharing an id by chance (one in four billion) would
/// only share a MAC key, and the admin reads both alike.
fn new_key_id() -> u32 {
    loop {
        let id = u32::from_le_bytes(random_array());
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ErrorKind;
    use crate::repository::in_memory_for_tests;

    #[test]
    fn a_put_only_key_opens_as_put_only_and_cannot_issue_keys() {
        let admin = in_memory_for_tests();
        assert!(admin.is_admin());
        assert_eq!(admin.writer(), Writer::Admin);
        let (_, key_id) = admin.add_put_only_key(b"night", KdfParams::FLOOR).unwrap();
        assert_ne!(key_id, 0);
        let put = Repository::open(Arc::clone(admin.backend()), b"night").unwrap();
        assert!(!put.is_admin());
        assert_eq!(put.writer(), Writer::PutOnly(key_id));
        let refused = [
            put.add_key(b"x", KdfParams::FLOOR).unwrap_err(),
            put.add_put_only_key(b"x", KdfParams::FLOOR).unwrap_err(),
            put.require_admin("restore").unwrap_err(),
        ];
        for err in refused {
            assert_eq!(err.kind(), ErrorKind::PutOnlyKey, "{err}");
        }
        let keys = admin.list_keys().unwrap();
        assert_eq!(keys.iter().filter(|k| k.role == "put-only").count(), 1);
        // Its own password it may change: the new slot is put-only too.
        let mut put = put;
        put.change_password(b"day", KdfParams::FLOOR).unwrap();
        let again = Repository::open(Arc::clone(admin.backend()), b"day").unwrap();
        assert_eq!(again.writer(), Writer::PutOnly(key_id));
        assert!(Repository::open(Arc::clone(admin.backend()), b"night").is_err());
    }
}
