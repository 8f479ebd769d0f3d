//! Fault-injecting decorator: fails or tears chosen operations of the
//! backend it wraps, to test what a crash or a network fault leaves behind.
//!
//! Operations are numbered from 1 in the order they start. A torn write
//! feeds the inner backend half of the data and then a read error, which is
//! what a process killed mid-upload looks like to the storage. A lost
//! acknowledgement applies a write and then reports it failed, which is
//! what a connection dropped after the server stored an object looks like
//! to the client.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Backend, ObjectInfo};
use crate::error::{Error, ErrorKind, Result};

/// What to do to operations from now on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail this operation (1-based) and every one after it: a crash.
    pub crash_at: Option<u64>,
    /// Fail only this operation, as a transient error.
    pub fail_once_at: Option<u64>,
    /// If this operation is a write, tear it (half the bytes, then an error).
    pub tear_at: Option<u64>,
    /// Make every `list` fail.
    pub fail_lists: bool,
    /// Fail this many operations (the second number) transiently, starting
    /// with this one (the first, 1-based): an outage that retries outlast,
    /// or not.
    pub fail_many_at: Option<(u64, u64)>,
    /// Fail every operation whose number is a multiple of this, transiently.
    pub fail_every: Option<u64>,
    /// Transient failures injected into writes happen after the write was
    /// passed on (whatever its outcome): lost acknowledgements.
    pub lose_acks: bool,
    /// Fail only this operation with [`ErrorKind::AccessDenied`], an error
    /// no retry helps.
    pub deny_at: Option<u64>,
}

/// A backend decorator that injects faults by [`FaultPlan`].
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: std::sync::Mutex<FaultPlan>,
    ops: AtomicU64,
    crashed: AtomicBool,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            plan: std::sync::Mutex::new(FaultPlan::default()),
            ops: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
        }
    }

    /// Replaces the plan and resets the operation counter.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = plan;
        self.ops.store(0, Ordering::SeqCst);
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Operations started since the plan was set.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Whether a crash point has been reached.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn plan(&self) -> FaultPlan {
        *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an operation; `Err` if the plan says it fails.
    fn begin(&self, what: &str, is_list: bool) -> Result<u64> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        self.check(n, what, is_list)?;
        Ok(n)
    }

    /// `Err` if the plan says operation `n` fails.
    fn check(&self, n: u64, what: &str, is_list: bool) -> Result<()> {
        let plan = self.plan();
        if plan.crash_at.is_some_and(|k| n >= k) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Io,
                format!("injected crash at operation {n} ({what})"),
            ));
        }
        if plan.deny_at == Some(n) {
            return Err(Error::new(
                ErrorKind::AccessDenied,
                format!("injected refusal of operation {n} ({what})"),
            ));
        }
        if plan.fails_transiently(n) || (is_list && plan.fail_lists) {
            return Err(transient(n, what));
        }
        Ok(())
    }
}

impl FaultPlan {
    /// Whether operation `n` fails with a transient error.
    fn fails_transiently(&self, n: u64) -> bool {
        self.fail_once_at == Some(n)
            || self
                .fail_many_at
                .is_some_and(|(first, count)| n >= first && n - first < count)
            || self.fail_every.is_some_and(|k| k > 0 && n % k == 0)
    }
}

fn transient(n: u64, what: &str) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!("injected failure of operation {n} ({what})"),
    )
}

/// A reader that yields `limit` bytes of its inner reader, then fails.
struct Tear<'a> {
    inner: &'a mut dyn Read,
    left: usize,
}

impl Read for Tear<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "injected torn write",
            ));
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "injected torn write",
            ));
        }
        self.left -= got;
        Ok(got)
    }
}

impl Backend for FaultyBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.begin(&format!("list {dir}"), true)?;
        self.inner.list(dir)
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        self.begin(&format!("read {path}"), false)?;
        self.inner.read(path, range)
    }

    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        self.begin(&format!("read {path}"), false)?;
        self.inner.read_at_most(path, limit)
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        let what = format!("write {path}");
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let plan = self.plan();
        if plan.lose_acks && plan.fails_transiently(n) && plan.crash_at.is_none_or(|k| n < k) {
            let _ = self.inner.write(path, data);
            return Err(transient(n, &format!("{what}, acknowledgement lost")));
        }
        self.check(n, &what, false)?;
        if plan.tear_at != Some(n) {
            return self.inner.write(path, data);
        }
        let mut whole = Vec::new();
        data.read_to_end(&mut whole)
            .map_err(|e| Error::io("reading data to write", e))?;
        let mut source = whole.as_slice();
        let mut torn = Tear {
            inner: &mut source,
            left: whole.len() / 2,
        };
        self.inner.write(path, &mut torn)?;
        Err(Error::new(
            ErrorKind::Io,
            format!("torn write of {path} was not detected by the backend"),
        ))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.begin(&format!("delete {path}"), false)?;
        self.inner.delete(path)
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.begin("remove stale temporaries", false)?;
        self.inner.remove_stale_temporaries(older_than)
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn exclusive_create(&self) -> Result<bool> {
        self.inner.exclusive_create()
    }
}
