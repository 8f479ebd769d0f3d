//! Backend layer (1): the server side of kura serve, a thin loop that
//! answers requests from a client's byte stream with a backend (a
//! [`super::super::LocalBackend`] on the served directory, so writes are
//! create-only, fsynced and private exactly as local ones). Owns the
//! append-only rule: with [`ServeOptions::append_only`], every delete and
//! every `remove_stale_temporaries` is refused and reported, and nothing
//! the client sends can remove or replace an object.

use std::io::{self, Read, Write};

use super::protocol::{
    Decoder, Encoder, FLAG_APPEND_ONLY, MAGIC, MAX_PIECE, Op, STATUS_APPEND_ONLY, TAG_ABORT,
    TAG_END, TAG_MORE, VERSION, error_response, ok_response, parse_client_hello, read_frame,
    status_of, write_frame,
};
use crate::backend::{Backend, check_path};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::MAX_PACK_LEN;

/// How the server behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Refuse every delete and every removal of temporaries.
    pub append_only: bool,
}

/// An operation the server refused, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The operation's name (`delete`, `write`, ...).
    pub op: &'static str,
    /// The path the client named (as sent, maybe hostile).
    pub path: String,
    /// Why, in words.
    pub why: String,
}

/// Serves one client until it closes the stream: reads requests from
/// `input`, answers on `output` (flushed after every response), and calls
/// `on_refusal` for every operation refused by the append-only rule or
/// for a path outside the repository.
///
/// # Errors
/// An unknown protocol version (answered first with a clear error),
/// bytes that are not the protocol, or a stream that fails or is cut
/// inside a request. A clean end of `input` between requests is `Ok`.
pub fn serve(
    backend: &dyn Backend,
    input: &mut dyn Read,
    output: &mut dyn Write,
    options: ServeOptions,
    on_refusal: &mut dyn FnMut(&Refusal),
) -> Result<()> {
    let mut session = Session {
        backend,
        input,
        output,
        options,
        on_refusal,
    };
    if !session.greet()? {
        return Ok(());
    }
    while let Some(request) = read_frame(session.input).map_err(stream_error)? {
        session.answer(&request)?;
        session.output.flush().map_err(stream_error)?;
    }
    Ok(())
}

fn stream_error(e: io::Error) -> Error {
    Error::io("kura serve: the client's stream", e)
}

struct Session<'a> {
    backend: &'a dyn Backend,
    input: &'a mut dyn Read,
    output: &'a mut dyn Write,
    options: ServeOptions,
    on_refusal: &'a mut dyn FnMut(&Refusal),
}

impl Session<'_> {
    /// The version handshake; `false` if the client left before it.
    fn greet(&mut self) -> Result<bool> {
        let Some(hello) = read_frame(self.input).map_err(stream_error)? else {
            return Ok(false);
        };
        let version = parse_client_hello(&hello)?;
        if version != VERSION {
            let why = format!(
                "the client speaks kura serve protocol version {version}; this server speaks only version {VERSION} (install the same kura on both sides)"
            );
            self.send(&error_response(status_of(ErrorKind::Unsupported), &why))?;
            self.output.flush().map_err(stream_error)?;
            return Err(Error::new(ErrorKind::Unsupported, why));
        }
        let flags = if self.options.append_only {
            FLAG_APPEND_ONLY
        } else {
            0
        };
        let body = Encoder::default().bytes(MAGIC).u32(VERSION).byte(flags).0;
        self.send(&ok_response(&body))?;
        self.output.flush().map_err(stream_error)?;
        Ok(true)
    }

    fn send(&mut self, payload: &[u8]) -> Result<()> {
        write_frame(self.output, payload).map_err(stream_error)
    }

    fn answer(&mut self, request: &[u8]) -> Result<()> {
        let mut d = Decoder(request);
        let op = Op::from_byte(d.byte()?)
            .ok_or_else(|| super::protocol::malformed("an unknown operation"))?;
        match op {
            Op::List => self.list(&d.name()?),
            Op::Read => {
                let path = d.name()?;
                let range = match d.byte()? {
                    0 => None,
                    _ => Some(d.u64()?..d.u64()?),
                };
                let read = self
                    .checked(op, &path)
                    .and_then(|()| self.read(&path, range));
                self.send_bytes(read)
            }
            Op::ReadAtMost => {
                let path = d.name()?;
                let limit = d.u64()?;
                let read = self
                    .checked(op, &path)
                    .and_then(|()| self.backend.read_at_most(&path, limit));
                self.send_bytes(read)
            }
            Op::Write => self.write(&d.name()?),
            Op::Delete => {
                let path = d.name()?;
                let done = self
                    .refuse_if_append_only(op, &path)
                    .and_then(|()| self.checked(op, &path))
                    .and_then(|()| self.backend.delete(&path));
                self.send_status(done.map(|()| Vec::new()))
            }
            Op::ExclusiveCreate => {
                let answer = self.backend.exclusive_create();
                self.send_status(answer.map(|yes| vec![u8::from(yes)]))
            }
            Op::RemoveStaleTemporaries => {
                let age = std::time::Duration::from_secs(d.u64()?);
                let removed = self
                    .refuse_if_append_only(op, "")
                    .and_then(|()| self.backend.remove_stale_temporaries(age));
                self.send_status(removed.map(|n| n.to_le_bytes().to_vec()))
            }
        }
    }

    /// A read of at most the largest object there is: a whole read of
    /// anything longer is refused as damage before it is read, a longer
    /// range as a bad request.
    fn read(&self, path: &str, range: Option<std::ops::Range<u64>>) -> Result<Vec<u8>> {
        match range {
            None => self.backend.read_at_most(path, MAX_PACK_LEN),
            Some(r) if r.end.saturating_sub(r.start) > MAX_PACK_LEN => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{path}: a range of {} bytes is over the limit of {MAX_PACK_LEN}",
                    r.end - r.start
                ),
            )),
            Some(r) => self.backend.read(path, Some(r)),
        }
    }

    /// `check_path` on the server's side: a path that could leave the
    /// repository is refused and reported.
    fn checked(&mut self, op: Op, path: &str) -> Result<()> {
        check_path(path).inspect_err(|e| {
            (self.on_refusal)(&Refusal {
                op: op.name(),
                path: path.to_owned(),
                why: e.to_string(),
            });
        })
    }

    fn refuse_if_append_only(&mut self, op: Op, path: &str) -> Result<()> {
        if !self.options.append_only {
            return Ok(());
        }
        (self.on_refusal)(&Refusal {
            op: op.name(),
            path: path.to_owned(),
            why: "the server is append-only".into(),
        });
        Err(append_only_refusal(op, path))
    }

    fn send_status(&mut self, outcome: Result<Vec<u8>>) -> Result<()> {
        match outcome {
            Ok(body) => self.send(&ok_response(&body)),
            Err(e) => self.send(&error_payload(&e)),
        }
    }

    /// A success status, then the bytes in data frames and an end frame.
    fn send_bytes(&mut self, outcome: Result<Vec<u8>>) -> Result<()> {
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err(e) => return self.send(&error_payload(&e)),
        };
        self.send(&ok_response(&[]))?;
        for piece in bytes.chunks(MAX_PIECE) {
            self.send(&Encoder::default().byte(TAG_MORE).bytes(piece).0)?;
        }
        self.send(&[TAG_END])
    }

    fn list(&mut self, dir: &str) -> Result<()> {
        let listed = self
            .checked(Op::List, dir)
            .and_then(|()| self.backend.list(dir));
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => return self.send(&error_payload(&e)),
        };
        self.send(&ok_response(&[]))?;
        let mut frame = Encoder::default().byte(TAG_MORE);
        for object in listed {
            frame = frame.name(&object.path).u64(object.size);
            if frame.0.len() >= MAX_PIECE {
                self.send(&frame.0)?;
                frame = Encoder::default().byte(TAG_MORE);
            }
        }
        if frame.0.len() > 1 {
            self.send(&frame.0)?;
        }
        self.send(&[TAG_END])
    }

    /// A create-only write from the data frames that follow the request;
    /// every frame is read (drained after a refusal) so the stream stays
    /// in step.
    fn write(&mut self, path: &str) -> Result<()> {
        let mut source = FrameSource::new(self.input);
        let written = match check_path(path) {
            Ok(()) => self.backend.write(path, &mut source),
            Err(e) => Err(e),
        };
        source.drain()?;
        if let Err(e) = &written {
            let why = match e.kind() {
                ErrorKind::AlreadyExists => Some("the name exists; objects are never replaced"),
                ErrorKind::InvalidInput => Some("not a repository path"),
                _ => None,
            };
            if let Some(why) = why {
                (self.on_refusal)(&Refusal {
                    op: Op::Write.name(),
                    path: path.to_owned(),
                    why: why.into(),
                });
            }
        }
        self.send_status(written.map(|()| Vec::new()))
    }
}

/// The error a refused operation gets on the server's side.
fn append_only_refusal(op: Op, path: &str) -> Error {
    Error::new(
        ErrorKind::AccessDenied,
        format!(
            "the server is append-only: {}{}{path} refused",
            op.name(),
            if path.is_empty() { "" } else { " " }
        ),
    )
}

fn error_payload(e: &Error) -> Vec<u8> {
    let status = if e.kind() == ErrorKind::AccessDenied
        && e.to_string().starts_with("the server is append-only")
    {
        STATUS_APPEND_ONLY
    } else {
        status_of(e.kind())
    };
    error_response(status, &e.to_string())
}

/// The data frames of one write as a [`Read`]: ends at the end frame,
/// fails at an abort frame (the client's source failed, so the backend
/// discards what it wrote) or past the largest object there is.
struct FrameSource<'a> {
    input: &'a mut dyn Read,
    piece: Vec<u8>,
    at: usize,
    total: u64,
    /// The end or abort frame was read: nothing of this write is left.
    finished: bool,
    /// The stream broke mid-write (cut, or not the protocol): it cannot
    /// be drained, and the session ends.
    broken: Option<io::Error>,
}

impl<'a> FrameSource<'a> {
    fn new(input: &'a mut dyn Read) -> Self {
        Self {
            input,
            piece: Vec::new(),
            at: 0,
            total: 0,
            finished: false,
            broken: None,
        }
    }

    /// The next frame into `piece`; `false` at the end of the data.
    fn next_piece(&mut self) -> io::Result<bool> {
        let frame = match read_frame(self.input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(self.break_with(io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err(self.break_with(e)),
        };
        match frame.first() {
            Some(&TAG_MORE) => {
                self.piece = frame;
                self.at = 1;
                Ok(true)
            }
            Some(&TAG_END) => {
                self.finished = true;
                Ok(false)
            }
            Some(&TAG_ABORT) => {
                self.finished = true;
                Err(io::Error::other("the client's source failed mid-write"))
            }
            _ => Err(self.break_with(io::Error::new(
                io::ErrorKind::InvalidData,
                "a data frame with an unknown tag",
            ))),
        }
    }

    fn break_with(&mut self, e: io::Error) -> io::Error {
        let copy = io::Error::new(e.kind(), e.to_string());
        self.broken = Some(e);
        copy
    }

    /// Reads what is left of this write, discarding it.
    fn drain(&mut self) -> Result<()> {
        while !self.finished {
            if let Some(e) = self.broken.take() {
                return Err(stream_error(e));
            }
            // An abort while draining only ends the write.
            let _ = self.next_piece();
        }
        Ok(())
    }
}

impl Read for FrameSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.piece.len() {
            if let Some(e) = &self.broken {
                return Err(io::Error::new(e.kind(), e.to_string()));
            }
            if self.finished || !self.next_piece()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        self.total += n as u64;
        if self.total > MAX_PACK_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the object is over the limit of {MAX_PACK_LEN} bytes for any object"),
            ));
        }
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
