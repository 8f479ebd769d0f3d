//! The terminal progress bar (indicatif) behind the library's `Progress`
//! trait: bytes done of the total, files, rate and time left, on standard
//! error, only when it is a terminal and neither --quiet nor --json is set.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kura::ops::progress::Progress;

pub struct Bar {
    inner: ProgressBar,
    files: AtomicU64,
    total_files: AtomicU64,
}

const COUNTING: &str = "{spinner} [{elapsed_precise}] {bytes} {binary_bytes_per_sec} {msg}";
const KNOWN: &str = "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} \
                     {binary_bytes_per_sec} ETA {eta} {msg}";

impl Bar {
    /// A bar that draws if `wanted` and standard error is a terminal.
    pub fn new(wanted: bool) -> Self {
        let draw = wanted && std::io::stderr().is_terminal();
        let bar = if draw {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(COUNTING).expect("valid template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            inner: bar,
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
        }
    }

    /// Whether anything is drawn (so that a scan for totals is worth it).
    pub fn visible(&self) -> bool {
        !self.inner.is_hidden()
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        self.inner.finish_and_clear();
    }
}

impl Progress for Bar {
    fn set_total(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.inner.set_length(bytes);
        self.inner
            .set_style(ProgressStyle::with_template(KNOWN).expect("valid template"));
    }

    fn bytes(&self, n: u64) {
        self.inner.inc(n);
    }

    fn file_done(&self) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        match self.total_files.load(Ordering::Relaxed) {
            0 => self.inner.set_message(format!("{done} files")),
            total => self.inner.set_message(format!("{done}/{total} files")),
        }
    }
}
