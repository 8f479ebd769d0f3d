//! Backend layer (1): the bytes of the kura serve protocol (see the parent
//! module's doc for the rules). Owns the invariant that no length read
//! from the peer is trusted before it is checked against its bound: a
//! frame's length against [`MAX_FRAME`], a name's against [`MAX_NAME`],
//! before anything is allocated for it.

use std::io::{self, Read, Write};

use crate::error::{Error, ErrorKind, Result};

/// The first bytes of both hellos.
pub const MAGIC: &[u8; 10] = b"kura-serve";
/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The largest data piece in one frame.
pub const MAX_PIECE: usize = 1 << 20;
/// The largest frame payload: a data piece and its tag, or a listing
/// frame, with room for a header.
pub const MAX_FRAME: usize = MAX_PIECE + 4096;
/// The longest object path or message carried.
pub const MAX_NAME: usize = 4096;
/// Bit 0 of the server's hello flags: it refuses deletes.
pub const FLAG_APPEND_ONLY: u8 = 1;

/// A request's operation byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List = 1,
    Read = 2,
    ReadAtMost = 3,
    Write = 4,
    Delete = 5,
    ExclusiveCreate = 6,
    RemoveStaleTemporaries = 7,
}

impl Op {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::List,
            2 => Self::Read,
            3 => Self::ReadAtMost,
            4 => Self::Write,
            5 => Self::Delete,
            6 => Self::ExclusiveCreate,
            7 => Self::RemoveStaleTemporaries,
            _ => return None,
        })
    }

    /// The operation's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Read => "read",
            Self::ReadAtMost => "read_at_most",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::ExclusiveCreate => "exclusive_create",
            Self::RemoveStaleTemporaries => "remove_stale_temporaries",
        }
    }
}

/// The tag of a frame in a stream of data or listing frames.
pub const TAG_MORE: u8 = 0;
pub const TAG_END: u8 = 1;
/// The sender's source failed: what was sent is to be discarded.
pub const TAG_ABORT: u8 = 2;

/// Status byte of a response: 0 is success, the rest name the error.
pub const STATUS_OK: u8 = 0;
/// The server refused an operation because it is append-only.
pub const STATUS_APPEND_ONLY: u8 = 20;

/// The status byte for an error kind.
pub fn status_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => 1,
        ErrorKind::AlreadyExists => 2,
        ErrorKind::Corrupt => 3,
        ErrorKind::InvalidInput => 4,
        ErrorKind::AccessDenied => 5,
        ErrorKind::Transient => 6,
        ErrorKind::Unsupported => 7,
        _ => 8,
    }
}

/// The error kind a status byte names ([`STATUS_APPEND_ONLY`] is
/// [`ErrorKind::AccessDenied`]; unknown bytes are I/O errors).
pub fn kind_of(status: u8) -> ErrorKind {
    match status {
        1 => ErrorKind::NotFound,
        2 => ErrorKind::AlreadyExists,
        3 => ErrorKind::Corrupt,
        4 => ErrorKind::InvalidInput,
        5 | STATUS_APPEND_ONLY => ErrorKind::AccessDenied,
        6 => ErrorKind::Transient,
        7 => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

/// Writes one frame: its length (u32 LE), then `payload`.
///
/// # Errors
/// The writer's; [`io::ErrorKind::InvalidInput`] over [`MAX_FRAME`].
pub fn write_frame(w: &mut dyn Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a frame of {} bytes is over {MAX_FRAME}", payload.len()),
        ));
    }
    let len = u32::try_from(payload.len()).expect("bounded by MAX_FRAME");
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

/// Reads one frame; its length is checked against [`MAX_FRAME`] before
/// anything is allocated. `Ok(None)` at a clean end of stream (before the
/// first length byte).
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a length over the bound,
/// [`io::ErrorKind::UnexpectedEof`] for a stream cut inside a frame.
pub fn read_frame(r: &mut dyn Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the peer announced a frame of {len} bytes, over the limit of {MAX_FRAME}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Builds a frame's payload field by field.
#[derive(Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    #[must_use]
    pub fn byte(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    #[must_use]
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[must_use]
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A name: u16 LE length, then UTF-8; cut at [`MAX_NAME`] bytes (on a
    /// character boundary) so an over-long message still fits.
    #[must_use]
    pub fn name(mut self, text: &str) -> Self {
        let mut end = text.len().min(MAX_NAME);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let len = u16::try_from(end).expect("MAX_NAME fits u16");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&text.as_bytes()[..end]);
        self
    }

    #[must_use]
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads a frame's payload field by field; every read is bounds-checked
/// and a short payload is [`ErrorKind::Corrupt`] (a peer that does not
/// speak the protocol).
pub struct Decoder<'a>(pub &'a [u8]);

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed("a frame ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// A name, its length checked against [`MAX_NAME`] first.
    pub fn name(&mut self) -> Result<String> {
        let len = usize::from(u16::from_le_bytes(self.take(2)?.try_into().expect("2")));
        if len > MAX_NAME {
            return Err(malformed(&format!(
                "a name of {len} bytes, over the limit of {MAX_NAME}"
            )));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| malformed("a name is not UTF-8"))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The error for bytes that break the protocol.
pub fn malformed(why: &str) -> Error {
    Error::corrupt(format!("kura serve protocol: {why}"))
}

/// The client's hello: magic and version.
pub fn client_hello(version: u32) -> Vec<u8> {
    Encoder::default().bytes(MAGIC).u32(version).0
}

/// Checks a client's hello and returns the version it asks for.
///
/// # Errors
/// [`ErrorKind::Corrupt`] if it is not a kura serve hello.
pub fn parse_client_hello(payload: &[u8]) -> Result<u32> {
    let mut d = Decoder(payload);
    if d.take(MAGIC.len())? != MAGIC {
        return Err(malformed("the client did not greet as kura serve"));
    }
    d.u32()
}

/// A success response carrying `body`.
pub fn ok_response(body: &[u8]) -> Vec<u8> {
    Encoder::default().byte(STATUS_OK).bytes(body).0
}

/// An error response: status byte and message.
pub fn error_response(status: u8, message: &str) -> Vec<u8> {
    Encoder::default().byte(status).name(message).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"one").unwrap();
        write_frame(&mut wire, b"").unwrap();
        write_frame(&mut wire, &vec![7u8; MAX_FRAME]).unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"one");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap().len(), MAX_FRAME);
        assert!(read_frame(&mut r).unwrap().is_none(), "clean end");
    }

    #[test]
    fn a_cut_frame_is_an_early_end() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abcdef").unwrap();
        for cut in [2, 7] {
            let err = read_frame(&mut &wire[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn a_too_large_length_is_refused_before_allocation() {
        // 4 GiB - 1 announced; nothing follows. Allocating first would
        // abort the process; the check refuses it.
        let wire = u32::MAX.to_le_bytes();
        let err = read_frame(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");
        let one_over = u32::try_from(MAX_FRAME + 1).unwrap().to_le_bytes();
        assert!(read_frame(&mut &one_over[..]).is_err());
        assert!(write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn names_are_bounded_and_checked() {
        let payload = Encoder::default().name("data/ab/cd").u64(9).0;
        let mut d = Decoder(&payload);
        assert_eq!(d.name().unwrap(), "data/ab/cd");
        assert_eq!(d.u64().unwrap(), 9);
        assert!(d.is_empty());
        // A length over the bound, whatever follows.
        let long = Encoder::default()
            .bytes(&u16::MAX.to_le_bytes())
            .bytes(&[b'a'; 100])
            .0;
        let err = Decoder(&long).name().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        // A length past the payload's end.
        let short = Encoder::default()
            .bytes(&10u16.to_le_bytes())
            .bytes(b"ab")
            .0;
        assert_eq!(
            Decoder(&short).name().unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        // Long messages are cut to fit, on a character boundary.
        let cut = Encoder::default().name(&"é".repeat(MAX_NAME)).0;
        assert!(Decoder(&cut).name().unwrap().len() <= MAX_NAME);
    }

    #[test]
    fn hellos_and_statuses() {
        assert_eq!(parse_client_hello(&client_hello(1)).unwrap(), 1);
        assert_eq!(parse_client_hello(&client_hello(99)).unwrap(), 99);
        assert_eq!(
            parse_client_hello(b"SSH-2.0-OpenSSH").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Corrupt,
            ErrorKind::InvalidInput,
            ErrorKind::AccessDenied,
            ErrorKind::Transient,
            ErrorKind::Unsupported,
            ErrorKind::Io,
        ] {
            assert_eq!(kind_of(status_of(kind)), kind);
        }
        assert_eq!(kind_of(STATUS_APPEND_ONLY), ErrorKind::AccessDenied);
        for b in 1..=7 {
            assert_eq!(Op::from_byte(b).unwrap() as u8, b);
        }
        assert!(Op::from_byte(0).is_none() && Op::from_byte(8).is_none());
    }
}
