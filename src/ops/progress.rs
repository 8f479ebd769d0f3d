//! Progress reports from long operations. The library never prints: an
//! operation calls a [`Progress`] it is given, whose methods all default
//! to doing nothing; the CLI implements it with a terminal progress bar.
//! Calls may come from several threads at once.

/// Receives progress from backup and restore.
pub trait Progress: Sync {
    /// The expected totals became known (a scan finished).
    fn set_total(&self, _files: u64, _bytes: u64) {}
    /// `n` more bytes of content were handled: read and chunked, reused
    /// from the parent unread, or written by restore.
    fn bytes(&self, _n: u64) {}
    /// One more file is done.
    fn file_done(&self) {}
}

/// Reports nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Wraps a reader and reports each read to a [`Progress`].
pub struct CountingReader<'p, R> {
    pub inner: R,
    pub progress: &'p dyn Progress,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}
