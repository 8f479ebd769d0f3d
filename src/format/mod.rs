//! Byte formats, one file per chapter of `format-spec/`. Every byte that
//! reaches storage is encoded and decoded here and nowhere else. Integers
//! are little-endian; offsets and sizes are the named constants of the spec.
//!
//! Decoders take untrusted bytes: they never panic and never allocate more
//! than the input justifies; every failure is [`ErrorKind::Corrupt`] (or
//! [`ErrorKind::Unsupported`] for a well-formed object of an unknown kind).

pub mod author;
pub mod config;
pub mod envelope;
pub mod frame;
pub mod index;
pub mod keyslot;
pub mod layout;
pub mod pack;
pub mod prune;
pub mod snapshot;
pub mod tree;

use crate::error::{Error, ErrorKind, Result};
use crate::id::ID_LEN;

/// The repository format version this client reads and writes.
pub const FORMAT_VERSION: u16 = 3;

/// Padmé padding (format-spec/00-conventions.md): the padded length for a
/// plaintext of `len` bytes; leaks O(log log len) bits of the length.
pub const fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - len.leading_zeros() as u64; // floor(log2 len)
    let s = 64 - e.leading_zeros() as u64; // floor(log2 e) + 1
    let z = e - s;
    let mask = (1u64 << z) - 1;
    (len + mask) & !mask
}

/// A cursor over untrusted bytes; every read checks bounds.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::corrupt(format!("{} is truncated", self.what)));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn id(&mut self) -> Result<[u8; ID_LEN]> {
        self.array()
    }

    /// A count of records of `record_len` bytes each, checked against what
    /// is left so that a hostile count cannot trigger a huge allocation.
    pub fn count(&mut self, record_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(record_len) > self.remaining().len() {
            return Err(Error::corrupt(format!(
                "{} claims {n} records, more than its length holds",
                self.what
            )));
        }
        Ok(n)
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "{} has {} trailing bytes",
                self.what,
                self.buf.len() - self.pos
            )))
        }
    }
}

/// Appends a count as the `u32` that precedes a list.
pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).expect("count fits u32").to_le_bytes());
}

/// Error for a version or kind byte this client does not know.
pub(crate) fn unsupported(what: &str, value: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("{what} {value} is not supported by this version of kura"),
    )
}

#[cfg(test)]
mod tests {
    use super::padme;

    #[test]
    fn padme_examples() {
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(65_536), 65_536);
        assert_eq!(padme(1_000_000), 1_015_808);
        assert_eq!(padme(16_777_216), 16_777_216);
        assert_eq!(padme(17_000_000), 17_301_504);
    }

    #[test]
    fn padme_is_monotone_and_bounded() {
        let mut last = 0;
        for len in 0..200_000u64 {
            let p = padme(len);
            assert!(p >= len && p >= last);
            assert!(len < 64 || p - len <= len / 8, "overhead at {len}");
            last = p;
        }
    }
}
