//! Source layer: disk images and block devices. The content is read once,
//! front to back, straight into a [`ContentSink`] (no local copy), and runs
//! of zeros are found on the way: a run of at least [`ZERO_RUN_MIN`] bytes
//! of whole zero [`BLOCK`]s, aligned to the start of the image, becomes a
//! hole, which is recorded and not stored. Shorter runs stay data. The
//! rule is a pure function of the bytes, so the same image always gives
//! the same extents.
//!
//! [`ZeroRunReader`] is the scanner: reading from it yields data up to the
//! next qualifying zero run and then end-of-file; [`ZeroRunReader::skip_zeros`]
//! steps over the run and reports its length, after which reading yields
//! the next stretch of data.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::Metadata;
use crate::source::{ContentSink, NameCache, read_metadata};

/// Zero detection granularity (a file system block, a disk sector multiple).
pub const BLOCK: usize = 4096;
/// The shortest zero run recorded as a hole.
pub const ZERO_RUN_MIN: usize = 64 << 10;
const BUFFER: usize = 1 << 20;

/// A reader over an image that stops at each long zero run.
pub struct ZeroRunReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`; `start` is at image offset
    /// `pos`.
    start: usize,
    end: usize,
    pos: u64,
    /// Bytes from `pos` already known to be data.
    data_ahead: usize,
    /// A qualifying zero run starts at `pos`.
    at_run: bool,
    eof: bool,
}

impl<R: Read> ZeroRunReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            pos: 0,
            data_ahead: 0,
            at_run: false,
            eof: false,
        }
    }

    /// Bytes consumed so far (the image offset of the next byte).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Whether the whole image has been consumed.
    ///
    /// # Errors
    /// The underlying reader's.
    pub fn at_end(&mut self) -> io::Result<bool> {
        self.fill(1)?;
        Ok(self.end == self.start)
    }

    /// Buffers at least `want` bytes from `pos`, or all that is left.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < want && !self.eof {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Length of the zero blocks at `pos` (each whole, or the image's last
    /// partial block), counting at most `limit` bytes.
    fn zero_prefix(&self, limit: usize) -> usize {
        let avail = &self.buf[self.start..self.end];
        let mut n = 0;
        for block in avail[..avail.len().min(limit)].chunks(BLOCK) {
            let whole = block.len() == BLOCK || self.eof;
            if !whole || block.iter().any(|&b| b != 0) {
                break;
            }
            n += block.len();
        }
        n
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }

    /// Steps over the zero run at the current position, if it is long
    /// enough to be a hole, and returns its length (0 if there is none).
    ///
    /// # Errors
    /// The underlying reader's.
    pub fn skip_zeros(&mut self) -> io::Result<u64> {
        self.at_run = false;
        self.fill(ZERO_RUN_MIN)?;
        if self.data_ahead > 0 || self.zero_prefix(ZERO_RUN_MIN) < ZERO_RUN_MIN {
            return Ok(0);
        }
        let mut skipped = 0u64;
        loop {
            self.fill(BLOCK)?;
            let z = self.zero_prefix(self.end - self.start);
            if z == 0 {
                return Ok(skipped);
            }
            self.consume(z);
            skipped += z as u64;
        }
    }

    /// Classifies what follows `pos`: either a qualifying zero run (sets
    /// `at_run`) or some bytes of data (sets `data_ahead`).
    fn classify(&mut self) -> io::Result<()> {
        self.fill(ZERO_RUN_MIN + BLOCK)?;
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(());
        }
        let zeros = self.zero_prefix(ZERO_RUN_MIN);
        if zeros >= ZERO_RUN_MIN {
            self.at_run = true;
        } else {
            // The short zero run and the block after it are data.
            self.data_ahead = (zeros + BLOCK).min(avail);
        }
        Ok(())
    }
}

impl<R: Read> Read for ZeroRunReader<R> {
    /// Data up to the next qualifying zero run; then 0 (end of this
    /// stretch) until [`ZeroRunReader::skip_zeros`] is called.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < out.len() && !self.at_run {
            if self.data_ahead == 0 {
                self.classify()?;
                if self.data_ahead == 0 {
                    break; // a zero run, or the end
                }
            }
            let n = self.data_ahead.min(out.len() - written);
            out[written..written + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.consume(n);
            self.data_ahead -= n;
            written += n;
        }
        Ok(written)
    }
}

/// One piece of an image: `Data(len)` bytes read, or a `Hole(len)` of
/// zeros skipped. Used by tests and callers that do not chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Data(u64),
    Hole(u64),
}

/// Splits a whole image into data and holes by the rule above, reading and
/// discarding the data (for tests and size estimates).
///
/// # Errors
/// The underlying reader's.
pub fn pieces(inner: impl Read) -> io::Result<Vec<Piece>> {
    let mut r = ZeroRunReader::new(inner);
    let mut out = Vec::new();
    loop {
        let hole = r.skip_zeros()?;
        if hole > 0 {
            out.push(Piece::Hole(hole));
        }
        if r.at_end()? {
            return Ok(out);
        }
        let data = io::copy(&mut r, &mut io::sink())?;
        out.push(Piece::Data(data));
    }
}

/// An image as read by [`read_image`].
pub struct ImageRead {
    /// The image's metadata, `size` the bytes read and `nlink` 1.
    pub meta: Metadata,
    /// A regular file's size or mtime changed while it was read (or it
    /// could not be looked at again).
    pub changed: bool,
}

/// Reads image `path` (a regular file or a block device) into `sink`,
/// front to back; long runs of zeros become holes.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] if `path` is neither; an image that cannot
/// be opened or read (it was named explicitly); the sink's errors.
pub fn read_image(
    path: &Path,
    names: &mut NameCache,
    sink: &mut dyn ContentSink,
) -> Result<ImageRead> {
    let err = |e| Error::io(format!("reading image {}", path.display()), e);
    let (file, md) = open_image(path)?;
    let mut reader = ZeroRunReader::new(file);
    loop {
        let hole = reader.skip_zeros().map_err(err)?;
        if hole > 0 {
            sink.hole(hole)?;
        }
        if reader.at_end().map_err(err)? {
            break;
        }
        sink.data(&mut reader)?;
    }
    let (mut meta, _) = read_metadata(path, &md, names);
    meta.size = reader.position();
    meta.nlink = 1;
    let changed = fs::metadata(path).ok().is_none_or(|after| {
        md.is_file()
            && (after.len(), after.mtime(), after.mtime_nsec())
                != (md.len(), md.mtime(), md.mtime_nsec())
    });
    Ok(ImageRead { meta, changed })
}

/// Opens image `path` and reads its metadata (following a symlink).
///
/// # Errors
/// As [`read_image`].
fn open_image(path: &Path) -> Result<(File, fs::Metadata)> {
    let err = |e| Error::io(format!("reading image {}", path.display()), e);
    let file = File::open(path).map_err(err)?;
    let md = file.metadata().map_err(err)?;
    if !(md.is_file() || md.file_type().is_block_device()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file nor a block device",
                path.display()
            ),
        ));
    }
    Ok((file, md))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads in small, odd pieces to exercise buffer edges.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn image(parts: &[(bool, usize)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, &(data, len)) in parts.iter().enumerate() {
            let fill = if data { (i % 250 + 1) as u8 } else { 0 };
            v.extend(std::iter::repeat_n(fill, len));
        }
        v
    }

    #[test]
    fn long_aligned_zero_runs_are_holes_and_short_ones_data() {
        let k = 1024;
        let img = image(&[
            (true, 8 * k),
            (false, 128 * k), // hole
            (true, 4 * k),
            (false, 32 * k), // too short: data
            (true, 4 * k),
            (false, 64 * k), // exactly the minimum: hole
            (true, 1000),
            (false, 200 * k + 3000), // unaligned start: the partial block is data
        ]);
        for step in [1 << 20, 4096, 777] {
            let got = pieces(Trickle(&img, step)).unwrap();
            let mut pos = 0u64;
            for p in &got {
                pos += match p {
                    Piece::Data(n) | Piece::Hole(n) => *n,
                };
            }
            assert_eq!(pos, img.len() as u64, "step {step}");
            assert_eq!(
                got,
                vec![
                    Piece::Data(8 * 1024),
                    Piece::Hole(128 * 1024),
                    Piece::Data(40 * 1024),
                    Piece::Hole(64 * 1024),
                    // 1000 data + 3096 zeros complete the block; then whole
                    // zero blocks to the end (the last one partial) form a hole.
                    Piece::Data(4096),
                    Piece::Hole(200 * 1024 + 3000 - 3096),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn data_bytes_come_through_unchanged() {
        let img = image(&[(true, 70_000), (false, 300_000), (true, 5), (false, 10)]);
        let mut r = ZeroRunReader::new(Trickle(&img, 1000));
        let mut rebuilt = Vec::new();
        loop {
            let hole = r.skip_zeros().unwrap();
            rebuilt.extend(std::iter::repeat_n(0u8, usize::try_from(hole).unwrap()));
            if r.at_end().unwrap() {
                break;
            }
            r.read_to_end(&mut rebuilt).unwrap();
            assert_eq!(rebuilt.len() as u64, r.position());
        }
        assert_eq!(rebuilt, img);
    }

    #[test]
    fn all_zero_and_empty_images() {
        assert_eq!(pieces(&[][..]).unwrap(), vec![]);
        assert_eq!(
            pieces(&vec![0u8; 1 << 20][..]).unwrap(),
            vec![Piece::Hole(1 << 20)]
        );
        assert_eq!(
            pieces(&vec![0u8; 1000][..]).unwrap(),
            vec![Piece::Data(1000)]
        );
    }
}
