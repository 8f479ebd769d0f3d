//! What time it is, for every layer: the one place the library reads the
//! wall clock. Options that stamp or compare times (a snapshot's time, a
//! key slot's creation, a prune record's `created` and ripeness, a check's
//! verification dates) carry a [`Clock`]; the default is the system clock,
//! so there is no global state.
//!
//! The `kura` binary sets a fixed clock from the environment variable
//! `KURA_NOW` when it is set: an RFC 3339 time in UTC such as
//! `2026-12-04T03:00:00Z`, or Unix seconds such as `@1796353200`
//! ([`crate::snapshot::time::parse_instant`]). It is meant for tests and for
//! replaying a schedule (a prune "a day later" without waiting a day).
//!
//! Elapsed time (durations shown to a user, the commit window of a backup)
//! is measured with `std::time::Instant`, not with this clock: a fixed
//! clock does not stop a backup's commit check from seeing time pass.

use std::time::{SystemTime, UNIX_EPOCH};

const NS_PER_SEC: i64 = 1_000_000_000;

/// The source of "now".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The operating system's wall clock.
    #[default]
    System,
    /// Always this instant, nanoseconds since the Unix epoch (UTC).
    Fixed(i64),
}

impl Clock {
    /// A clock stopped at `secs` Unix seconds.
    pub fn at_unix(secs: u64) -> Self {
        Self::Fixed(i64::try_from(secs).unwrap_or(i64::MAX / NS_PER_SEC) * NS_PER_SEC)
    }

    /// Now, in nanoseconds since the Unix epoch; 0 for a system clock set
    /// before 1970.
    pub fn now_ns(self) -> i64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Self::Fixed(ns) => ns,
        }
    }

    /// Now, in whole Unix seconds (0 before 1970).
    pub fn now_unix(self) -> u64 {
        u64::try_from(self.now_ns().div_euclid(NS_PER_SEC)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn a_fixed_clock_stands_still() {
        let c = Clock::at_unix(1_796_353_200);
        assert_eq!(c.now_unix(), 1_796_353_200);
        assert_eq!(c.now_ns(), 1_796_353_200 * 1_000_000_000);
        assert_eq!(Clock::Fixed(-5).now_unix(), 0);
    }

    #[test]
    fn the_system_clock_moves_on_from_2020() {
        assert!(Clock::System.now_unix() > 1_577_836_800);
        assert_eq!(Clock::default(), Clock::System);
    }
}
