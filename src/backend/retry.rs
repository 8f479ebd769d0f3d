//! Retry decorator (backend layer): repeats operations of the backend it
//! wraps that failed with [`ErrorKind::Transient`] (timeouts, connection
//! resets, a server's 5xx answers), waiting longer each time, and lets every
//! other error through at once. Design: format-spec/07-layout-and-writes.md,
//! "Retry, caching".
//!
//! It owns one invariant: retrying never breaks the create-only contract.
//! `list`, `read` and `delete` are idempotent and simply repeated. A write's
//! source can be read only once, so its bytes are taken into memory first
//! (packs are held in memory by the chunk store anyway) and the same bytes
//! are sent again. A repeated write that finds the name taken may be meeting
//! its own earlier attempt, stored by the server with the answer lost on
//! the way back: the object is read back and the write counts as done only
//! if the bytes are the ones it sent; otherwise the `AlreadyExists` stands.
//!
//! Waits grow from [`RetryPolicy::base_delay`], doubling, up to
//! [`RetryPolicy::max_delay`], each shortened by a random part of up to half
//! so that clients failing together do not retry together. Each retry is
//! logged as a warning; when attempts run out the last transient error is
//! returned, still [`ErrorKind::Transient`].

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, ObjectInfo};
use crate::error::{Error, ErrorKind, Result};

/// How many times, and how patiently, to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 0 counts as 1.
    pub attempts: u32,
    /// The wait before the second attempt; doubled before each further one.
    pub base_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts over about 6 s at most (0.2, 0.4, 0.8, 1.6, 3.2 s, each
    /// less up to half): enough for a dropped connection or a server's
    /// restart, short enough that a dead server is reported in seconds.
    fn default() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Six attempts a millisecond or two apart: for tests.
    pub fn quick() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    /// The wait after failed attempt `failed` (1-based): the doubled base,
    /// capped, less a random part of up to half.
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let full = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let half = u64::try_from((full / 2).as_nanos()).unwrap_or(u64::MAX);
        let random = u64::from_le_bytes(crate::algorithms::crypto::random_array::<8>());
        full.saturating_sub(Duration::from_nanos(random % half.saturating_add(1)))
    }
}

/// A backend decorator that retries transient failures by a [`RetryPolicy`].
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    /// The most requests at once it suggests, whatever the inner backend
    /// serves ([`Self::with_max_concurrency`]).
    max_concurrency: usize,
}

impl RetryBackend {
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            max_concurrency: usize::MAX,
        }
    }

    /// Suggests at most `n` requests at once (reads in flight, uploads):
    /// each holds up to a pack in memory (`--memory small`).
    #[must_use]
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails
    /// with an error that is not transient, or attempts run out.
    fn retry<T>(
        &self,
        what: &dyn Fn() -> String,
        mut op: impl FnMut(u32) -> Result<T>,
    ) -> Result<T> {
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op(attempt) {
                Err(e) if e.kind() == ErrorKind::Transient && attempt < attempts => {
                    let delay = self.policy.delay(attempt);
                    tracing::warn!(
                        "{}: attempt {attempt} of {attempts} failed ({e}); retrying in {delay:?}",
                        what()
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) if e.kind() == ErrorKind::Transient && attempts > 1 => {
                    return Err(e.context(format!("{}: gave up after {attempts} attempts", what())));
                }
                other => return other,
            }
        }
    }

    /// After a repeated write of `path` found the name taken: done if the
    /// object there holds `sent` (an earlier attempt stored it and its
    /// answer was lost), else the `taken` error.
    fn confirm_own(&self, path: &str, sent: &[u8], taken: Error) -> Result<()> {
        let stored = self
            .read(path, None)
            .map_err(|e| e.context(format!("{path}: reading back after a retried write")))?;
        if stored == sent {
            tracing::warn!(
                "{path}: a retried write found its own object: \
                 the earlier attempt succeeded and its answer was lost"
            );
            Ok(())
        } else {
            Err(taken)
        }
    }
}

impl Backend for RetryBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.retry(&|| format!("list {dir}"), |_| self.inner.list(dir))
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        self.retry(&|| format!("read {path}"), |_| {
            self.inner.read(path, range.clone())
        })
    }

    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        self.retry(&|| format!("read {path}"), |_| {
            self.inner.read_at_most(path, limit)
        })
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        let bytes = super::read_source(path, data)?;
        self.write_bytes(path, &bytes)
    }

    fn write_bytes(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut retried = false;
        let outcome = self.retry(&|| format!("write {path}"), |attempt| {
            retried = attempt > 1;
            self.inner.write_bytes(path, bytes)
        });
        match outcome {
            Err(e) if e.kind() == ErrorKind::AlreadyExists && retried => {
                self.confirm_own(path, bytes, e)
            }
            other => other,
        }
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.retry(&|| format!("delete {path}"), |_| self.inner.delete(path))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency().min(self.max_concurrency)
    }

    fn exclusive_create(&self) -> Result<bool> {
        self.inner.exclusive_create()
    }

    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64> {
        self.retry(&|| "remove stale temporaries".to_owned(), |_| {
            self.inner.remove_stale_temporaries(older_than)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::backend::faulty::{FaultPlan, FaultyBackend};
    use crate::backend::{MemoryBackend, write_bytes};

    fn over_faults(plan: FaultPlan) -> (Arc<MemoryBackend>, Arc<FaultyBackend>, RetryBackend) {
        let memory = Arc::new(MemoryBackend::new());
        let faulty = Arc::new(FaultyBackend::new(memory.clone()));
        faulty.set_plan(plan);
        let retry = RetryBackend::new(faulty.clone(), RetryPolicy::quick());
        (memory, faulty, retry)
    }

    #[test]
    fn transient_failures_are_retried_until_an_attempt_succeeds() {
        let plan = FaultPlan {
            fail_many_at: Some((1, 2)),
            ..FaultPlan::default()
        };
        let (memory, faulty, retry) = over_faults(plan);
        write_bytes(&retry, "snapshots/a", b"snapshot").unwrap();
        assert_eq!(faulty.ops(), 3, "two failed attempts, then the write");
        assert_eq!(memory.read("snapshots/a", None).unwrap(), b"snapshot");
        for op in 0..3 {
            faulty.set_plan(plan);
            match op {
                0 => assert_eq!(retry.read("snapshots/a", None).unwrap(), b"snapshot"),
                1 => assert_eq!(retry.list("snapshots").unwrap().len(), 1),
                _ => retry.delete("snapshots/a").unwrap(),
            }
            assert_eq!(faulty.ops(), 3);
        }
        assert!(memory.list("snapshots").unwrap().is_empty());
    }

    #[test]
    fn a_write_whose_acknowledgement_was_lost_is_done() {
        let (memory, faulty, retry) = over_faults(FaultPlan {
            fail_once_at: Some(1),
            lose_acks: true,
            ..FaultPlan::default()
        });
        write_bytes(&retry, "data/ab/pack", b"pack bytes").unwrap();
        assert_eq!(
            faulty.ops(),
            3,
            "write (stored, answer lost), write (AlreadyExists), read back"
        );
        assert_eq!(memory.read("data/ab/pack", None).unwrap(), b"pack bytes");
    }

    /// Stores other bytes under the name on the first write and reports a
    /// transient failure: another writer took the name meanwhile.
    struct Interloper {
        inner: MemoryBackend,
        struck: AtomicBool,
    }

    impl Backend for Interloper {
        fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
            self.inner.list(dir)
        }
        fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
            self.inner.read(path, range)
        }
        fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
            if self.struck.swap(true, Ordering::SeqCst) {
                return self.inner.write(path, data);
            }
            write_bytes(&self.inner, path, b"someone else's")?;
            Err(Error::new(ErrorKind::Transient, "connection reset"))
        }
        fn delete(&self, path: &str) -> Result<()> {
            self.inner.delete(path)
        }
        fn describe(&self) -> String {
            "interloper".into()
        }
    }

    #[test]
    fn a_retried_write_that_finds_another_object_fails() {
        let inner = Arc::new(Interloper {
            inner: MemoryBackend::new(),
            struck: AtomicBool::new(false),
        });
        let retry = RetryBackend::new(inner.clone(), RetryPolicy::quick());
        let err = write_bytes(&retry, "config", b"mine").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(inner.read("config", None).unwrap(), b"someone else's");
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let (memory, faulty, retry) = over_faults(FaultPlan {
            deny_at: Some(1),
            ..FaultPlan::default()
        });
        let err = retry.read("config", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        assert_eq!(faulty.ops(), 1);

        faulty.set_plan(FaultPlan::default());
        let err = retry.read("config", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(faulty.ops(), 1);

        write_bytes(memory.as_ref(), "config", b"theirs").unwrap();
        faulty.set_plan(FaultPlan::default());
        let err = write_bytes(&retry, "config", b"theirs").unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::AlreadyExists,
            "a first attempt that finds the name taken fails, even with equal bytes"
        );
        assert_eq!(faulty.ops(), 1, "nothing read back");

        faulty.set_plan(FaultPlan {
            crash_at: Some(1),
            ..FaultPlan::default()
        });
        assert_eq!(retry.list("keys").unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(faulty.ops(), 1);
    }

    #[test]
    fn exhausted_retries_return_the_transient_error() {
        let (memory, faulty, retry) = over_faults(FaultPlan {
            fail_many_at: Some((1, 1000)),
            ..FaultPlan::default()
        });
        let err = retry.list("index").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(faulty.ops(), 6);
        assert!(
            err.to_string().contains("gave up after 6 attempts"),
            "{err}"
        );

        faulty.set_plan(FaultPlan {
            fail_many_at: Some((1, 1000)),
            ..FaultPlan::default()
        });
        let err = write_bytes(&retry, "index/x", b"index").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(faulty.ops(), 6);
        assert!(memory.list("index").unwrap().is_empty());
    }

    #[test]
    fn delays_double_up_to_the_cap_less_at_most_half() {
        let policy = RetryPolicy::default();
        let ms = |d: Duration| d.as_millis();
        for _ in 0..50 {
            assert!((100..=200).contains(&ms(policy.delay(1))));
            assert!((200..=400).contains(&ms(policy.delay(2))));
            assert!((1600..=3200).contains(&ms(policy.delay(5))));
            assert!((5000..=10_000).contains(&ms(policy.delay(7))));
            assert!((5000..=10_000).contains(&ms(policy.delay(40))));
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| policy.delay(3).as_nanos()).collect();
        assert!(spread.len() > 1, "waits are jittered");
    }
}
