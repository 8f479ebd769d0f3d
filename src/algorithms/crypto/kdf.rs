//! Argon2id password hashing for key slots, with the parameter policy
//! (floor and ceiling) that is checked before any work is done. The
//! derived key and Argon2id's memory blocks are wiped when dropped.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// Argon2id cost parameters as stored in a key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The weakest parameters a client accepts (OWASP's Argon2id minimum).
    pub const FLOOR: Self = Self {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    /// The most expensive parameters a client accepts, so that a planted
    /// slot cannot make it hang or exhaust memory.
    pub const CEILING: Self = Self {
        m_cost: 2 * 1024 * 1024,
        t_cost: 16,
        p_cost: 16,
    };
    /// Parameters for new key slots.
    pub const DEFAULT: Self = Self {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Checks the parameters against [`Self::FLOOR`] and [`Self::CEILING`].
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] naming the offending parameter.
    pub fn check_policy(&self) -> Result<()> {
        let checks = [
            (
                "memory (KiB)",
                self.m_cost,
                Self::FLOOR.m_cost,
                Self::CEILING.m_cost,
            ),
            (
                "passes",
                self.t_cost,
                Self::FLOOR.t_cost,
                Self::CEILING.t_cost,
            ),
            (
                "lanes",
                self.p_cost,
                Self::FLOOR.p_cost,
                Self::CEILING.p_cost,
            ),
        ];
        for (name, value, floor, ceiling) in checks {
            if value < floor || value > ceiling {
                return Err(Error::new(
                    ErrorKind::KeySlotRefused,
                    format!(
                        "key slot Argon2id {name} = {value} is outside the accepted range {floor}..={ceiling}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Derives a 32-byte key-encryption key from `password` and `salt`,
    /// after checking the policy; wiped when dropped.
    ///
    /// # Errors
    /// [`ErrorKind::KeySlotRefused`] if the parameters are out of range.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.check_policy()?;
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32)).map_err(|e| {
            Error::new(
                ErrorKind::KeySlotRefused,
                format!("Argon2id parameters: {e}"),
            )
        })?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bounds() {
        assert!(KdfParams::FLOOR.check_policy().is_ok());
        assert!(KdfParams::CEILING.check_policy().is_ok());
        assert!(KdfParams::DEFAULT.check_policy().is_ok());
        let weak = KdfParams {
            m_cost: 8,
            ..KdfParams::FLOOR
        };
        assert_eq!(
            weak.check_policy().unwrap_err().kind(),
            ErrorKind::KeySlotRefused
        );
        let hang = KdfParams {
            t_cost: 1_000_000,
            ..KdfParams::FLOOR
        };
        assert_eq!(
            hang.check_policy().unwrap_err().kind(),
            ErrorKind::KeySlotRefused
        );
        let huge = KdfParams {
            m_cost: u32::MAX,
            ..KdfParams::FLOOR
        };
        assert!(huge.derive(b"pw", &[0; 32]).is_err());
    }
}
