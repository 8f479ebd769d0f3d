//! The key sets of the two roles (format-spec/02-keys.md): what an
//! unlocked key slot yields. An admin holds the master secret M and
//! everything derived from it; a put-only key holds only the subkeys
//! every role shares, A, its key id k and its own MAC key K_w(k).
//!
//! Owns the invariant that a put-only key set cannot produce M, K_admin,
//! a or another key's K_w: it never holds them, so no code path can
//! decrypt scheme-2 envelopes or write admin metadata with it.

use zeroize::Zeroizing;

use crate::algorithms::crypto::{KEY_LEN, MasterSecret, Subkeys};

/// Writer id 0 in author blocks: the admin.
pub const ADMIN_WRITER: u32 = 0;

/// What the unlocked role may do beyond the shared subkeys.
pub enum Role {
    /// The master secret: every key, and every writer's MAC key.
    Admin(MasterSecret),
    /// A put-only key: its id (never 0) and K_w(id).
    PutOnly {
        key_id: u32,
        writer_mac: Zeroizing<[u8; KEY_LEN]>,
    },
}

/// An unlocked key slot: the shared subkeys and the role's secrets.
pub struct KeySet {
    pub subkeys: Subkeys,
    pub role: Role,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.role {
            Role::Admin(_) => f.write_str("KeySet(admin, ..)"),
            Role::PutOnly { key_id, .. } => write!(f, "KeySet(put-only {key_id:08x}, ..)"),
        }
    }
}

impl KeySet {
    /// The admin key set of master secret `master`.
    pub fn admin(master: MasterSecret) -> Self {
        Self {
            subkeys: master.subkeys(),
            role: Role::Admin(master),
        }
    }

    /// A put-only key set, as unwrapped from a role-1 slot.
    pub fn put_only(subkeys: Subkeys, key_id: u32, writer_mac: [u8; KEY_LEN]) -> Self {
        Self {
            subkeys,
            role: Role::PutOnly {
                key_id,
                writer_mac: Zeroizing::new(writer_mac),
            },
        }
    }

    /// The master secret, for an admin only.
    pub fn master(&self) -> Option<&MasterSecret> {
        match &self.role {
            Role::Admin(m) => Some(m),
            Role::PutOnly { .. } => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.master().is_some()
    }

    /// The writer id this key set signs author blocks with: 0 for the
    /// admin, k for put-only key k.
    pub fn writer(&self) -> u32 {
        match &self.role {
            Role::Admin(_) => ADMIN_WRITER,
            Role::PutOnly { key_id, .. } => *key_id,
        }
    }

    /// This key set's own MAC key: K_admin, or K_w(k).
    pub fn own_mac_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        match &self.role {
            Role::Admin(m) => m.admin_mac(),
            Role::PutOnly { writer_mac, .. } => writer_mac.clone(),
        }
    }

    /// The MAC key of writer `writer` (0 = admin), which only an admin can
    /// derive; `None` for a put-only key set.
    pub fn mac_key_of(&self, writer: u32) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let master = self.master()?;
        Some(if writer == ADMIN_WRITER {
            master.admin_mac()
        } else {
            master.writer_mac(writer)
        })
    }
}
