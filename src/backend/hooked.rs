//! A decorator that forwards every call of the [`Backend`] trait, defaulted
//! methods included (`concurrency`, `exclusive_create`,
//! `remove_stale_temporaries`, `write_bytes`), to an inner backend, and
//! lets a caller watch or change what passes: a listing can be rewritten
//! (a concurrent writer's effect between a listing and its reads), reads
//! and writes can be counted, deletes refused (storage without delete
//! permission). Tests build their instrumented backends
//! from it, so none of them drops a method the trait gained later by
//! forwarding only what it was written for.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use super::{Backend, ObjectInfo};
use crate::error::{Error, Result};

type ListHook = Box<dyn Fn(&str, Vec<ObjectInfo>) -> Vec<ObjectInfo> + Send + Sync>;
type ReadHook = Box<dyn Fn(&str, Option<&Range<u64>>) + Send + Sync>;
type WriteHook = Box<dyn Fn(&str, &[u8], &Result<()>) + Send + Sync>;
type DeleteHook = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// A backend that forwards to `inner`, through optional hooks.
pub struct HookedBackend {
    inner: Arc<dyn Backend>,
    on_list: Option<ListHook>,
    on_read: Option<ReadHook>,
    on_write: Option<WriteHook>,
    on_delete: Option<DeleteHook>,
}

impl HookedBackend {
    /// Forwards everything to `inner`, unchanged until a hook is set.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            on_list: None,
            on_read: None,
            on_write: None,
            on_delete: None,
        }
    }

    /// Every listing passes through `hook` (directory, listing) → listing.
    #[must_use]
    pub fn on_list(
        mut self,
        hook: impl Fn(&str, Vec<ObjectInfo>) -> Vec<ObjectInfo> + Send + Sync + 'static,
    ) -> Self {
        self.on_list = Some(Box::new(hook));
        self
    }

    /// `hook` sees the path and range of every read, before it is made.
    #[must_use]
    pub fn on_read(
        mut self,
        hook: impl Fn(&str, Option<&Range<u64>>) + Send + Sync + 'static,
    ) -> Self {
        self.on_read = Some(Box::new(hook));
        self
    }

    /// `hook` sees every write once it is done: the path, the bytes the
    /// writer gave (all it could read, if its source failed) and the
    /// outcome.
    #[must_use]
    pub fn on_write(
        mut self,
        hook: impl Fn(&str, &[u8], &Result<()>) + Send + Sync + 'static,
    ) -> Self {
        self.on_write = Some(Box::new(hook));
        self
    }
}

impl HookedBackend {
    /// `hook` sees every delete and every `remove_stale_temporaries`
    /// (path `""`) before it is made; an error it returns is the call's,
    /// and nothing is deleted (storage that refuses deletes).
    #[must_use]
    pub fn on_delete(mut self, hook: impl Fn(&str) -> Result<()> + Send + Sync + 'static) -> Self {
        self.on_delete = Some(Box::new(hook));
        self
    }
}

impl Backend for HookedBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let listed = self.inner.list(dir)?;
        Ok(match &self.on_list {
            Some(hook) => hook(dir, listed),
            None => listed,
        })
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        if let Some(hook) = &self.on_read {
            hook(path, range.as_ref());
        }
        self.inner.read(path, range)
    }

    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        if let Some(hook) = &self.on_read {
            hook(path, None);
        }
        self.inner.read_at_most(path, limit)
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        let Some(hook) = &self.on_write else {
            return self.inner.write(path, data);
        };
        // The hook wants the bytes: read them once, then write from them.
        let mut bytes = Vec::new();
        let result = match data.read_to_end(&mut bytes) {
            Ok(_) => self.inner.write_bytes(path, &bytes),
            Err(e) => Err(Error::io(format!("reading what to write to {path}"), e)),
        };
        hook(path, &bytes, &result);
        result
    }

    fn write_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        let result = self.inner.write_bytes(path, data);
        if let Some(hook) = &self.on_write {
            hook(path, data, &result);
        }
        result
    }

    fn delete(&self, path: &str) -> Result<()> {
        if let Some(hook) = &self.on_delete {
            hook(path)?;
        }
        self.inner.delete(path)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn exclusive_create(&self) -> Result<bool> {
        self.inner.exclusive_create()
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        if let Some(hook) = &self.on_delete {
            hook("")?;
        }
        self.inner.remove_stale_temporaries(older_than)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::backend::memory::MemoryBackend;

    /// A backend whose defaulted methods all say something other than the
    /// defaults, to see that they are forwarded.
    struct Unusual(MemoryBackend);

    impl Backend for Unusual {
        fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
            self.0.list(dir)
        }
        fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
            self.0.read(path, range)
        }
        fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
            self.0.write(path, data)
        }
        fn delete(&self, path: &str) -> Result<()> {
            self.0.delete(path)
        }
        fn describe(&self) -> String {
            "unusual".into()
        }
        fn concurrency(&self) -> usize {
            7
        }
        fn exclusive_create(&self) -> Result<bool> {
            Ok(false)
        }
        fn remove_stale_temporaries(&self, _: std::time::Duration) -> Result<u64> {
            Ok(3)
        }
    }

    #[test]
    fn every_method_is_forwarded_and_hooks_see_what_passes() {
        let writes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&writes);
        let hooked = HookedBackend::new(Arc::new(Unusual(MemoryBackend::new())))
            .on_write(move |_, bytes, result| {
                assert!(result.is_ok());
                seen.fetch_add(bytes.len(), Ordering::SeqCst);
            })
            .on_list(|_, mut listed| {
                listed.clear();
                listed
            });
        assert_eq!(hooked.concurrency(), 7);
        assert!(!hooked.exclusive_create().unwrap());
        assert_eq!(
            hooked
                .remove_stale_temporaries(std::time::Duration::ZERO)
                .unwrap(),
            3
        );
        assert_eq!(hooked.describe(), "unusual");
        hooked.write("a/x", &mut &b"four"[..]).unwrap();
        hooked.write_bytes("a/y", b"two").unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 7);
        assert!(hooked.list("a").unwrap().is_empty(), "the hook's listing");
        assert_eq!(hooked.read("a/x", None).unwrap(), b"four");
        crate::backend::conformance::run(&HookedBackend::new(Arc::new(MemoryBackend::new())));
        let refusing = HookedBackend::new(Arc::new(MemoryBackend::new())).on_delete(|path| {
            Err(Error::new(
                crate::error::ErrorKind::AccessDenied,
                format!("{path}: the server is append-only"),
            ))
        });
        crate::backend::conformance::run_append_only(&refusing);
        assert!(
            refusing
                .remove_stale_temporaries(std::time::Duration::ZERO)
                .is_err()
        );
        // The trait's default bounded read (a probe past the limit).
        crate::backend::conformance::run(&Unusual(MemoryBackend::new()));
    }
}
