//! Operations layer: one file per operation, Options -> fn -> Report.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod find;
pub mod forget;
pub mod ls;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod tar;

/// Runs `f` on a rayon pool of at least `threads` threads: more than the
/// cores when what the threads wait for is a remote repository's latency
/// (`Backend::concurrency`). Runs it on the current pool when that is
/// large enough.
///
/// # Errors
/// [`crate::ErrorKind::Io`] if the threads cannot be started; else `f`'s.
pub(crate) fn with_io_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> crate::Result<T> {
    if threads <= rayon::current_num_threads() {
        return f();
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::new(crate::ErrorKind::Io, format!("starting I/O threads: {e}")))?
        .install(f)
}
