//! Backend layer (1): the client side of kura serve, a [`Backend`] whose
//! every call is one request over a connection to `kura serve` (an `ssh`
//! child, or any pair of byte streams). Owns the client's bounds against a
//! hostile server (see the parent module) and the rule that a connection
//! whose stream broke, or that broke the protocol, is never used again:
//! the next request makes a new one.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol::{
    Decoder, Encoder, FLAG_APPEND_ONLY, MAGIC, MAX_PIECE, Op, STATUS_OK, TAG_ABORT, TAG_END,
    TAG_MORE, VERSION, client_hello, kind_of, malformed, read_frame, write_frame,
};
use super::watchdog::{SharedChild, Watchdog};
use super::{Refusal, ServeLocation, ServeOptions, serve};
use crate::backend::location::DEFAULT_IO_TIMEOUT;
use crate::backend::{Backend, ObjectInfo, check_path, oversized};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::MAX_PACK_LEN;

/// Makes a new connection: the byte streams to a server, and the process
/// behind them if there is one.
pub type Connector = Box<dyn Fn() -> Result<Connection> + Send + Sync>;

/// One connection to a server, after the hello.
pub struct Connection {
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    child: Option<SharedChild>,
    append_only: bool,
}

impl Connection {
    /// Says hello over `reader`/`writer` and checks the answer.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for a server of another version;
    /// [`ErrorKind::Unreachable`] if it closes or answers with anything
    /// but the protocol (ssh's own messages are on stderr).
    pub fn open(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        child: Option<Child>,
        describe: &str,
    ) -> Result<Self> {
        let mut conn = Self {
            reader,
            writer,
            child: child.map(|c| Arc::new(Mutex::new(c))),
            append_only: false,
        };
        let unreachable = |why: String| {
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{describe}: {why} (is kura installed on the server, and does its forced command run `kura serve`? ssh's messages, if any, are above)"
                ),
            )
        };
        conn.send(&client_hello(VERSION))
            .and_then(|()| conn.flush())
            .map_err(|f| unreachable(f.into_error().to_string()))?;
        let hello = match conn.status(describe) {
            Ok(body) => body,
            Err(Failure::Remote(e)) => return Err(e),
            Err(Failure::Broken(e)) => return Err(unreachable(e.to_string())),
        };
        let mut d = Decoder(&hello);
        let magic = d.rest();
        if magic.len() != MAGIC.len() + 5 || &magic[..MAGIC.len()] != MAGIC {
            return Err(unreachable(
                "the server did not answer as kura serve".into(),
            ));
        }
        let mut d = Decoder(&magic[MAGIC.len()..]);
        let version = d.u32()?;
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{describe}: the server speaks kura serve protocol version {version}; this client speaks only version {VERSION} (install the same kura on both sides)"
                ),
            ));
        }
        conn.append_only = d.byte()? & FLAG_APPEND_ONLY != 0;
        Ok(conn)
    }

    /// Whether the server said it is append-only.
    pub fn append_only(&self) -> bool {
        self.append_only
    }

    fn send(&mut self, payload: &[u8]) -> Result<(), Failure> {
        write_frame(&mut self.writer, payload).map_err(Failure::stream)
    }

    fn flush(&mut self) -> Result<(), Failure> {
        self.writer.flush().map_err(Failure::stream)
    }

    fn frame(&mut self) -> Result<Vec<u8>, Failure> {
        match read_frame(&mut self.reader) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(Failure::stream(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Err(e) => Err(Failure::stream(e)),
        }
    }

    /// A response's status: its body on success, else the server's error.
    fn status(&mut self, describe: &str) -> Result<Vec<u8>, Failure> {
        let frame = self.frame()?;
        let mut d = Decoder(&frame);
        let status = d.byte().map_err(Failure::Broken)?;
        if status == STATUS_OK {
            return Ok(d.rest().to_vec());
        }
        let message = d.name().map_err(Failure::Broken)?;
        Err(Failure::Remote(Error::new(
            kind_of(status),
            format!("{describe}: {message}"),
        )))
    }

    /// The tagged frames of a read or a listing, each given to `take`,
    /// until the end frame.
    fn stream(&mut self, mut take: impl FnMut(&[u8]) -> Result<()>) -> Result<(), Failure> {
        loop {
            let frame = self.frame()?;
            match frame.first() {
                Some(&TAG_MORE) => take(&frame[1..]).map_err(Failure::Broken)?,
                Some(&TAG_END) if frame.len() == 1 => return Ok(()),
                _ => return Err(Failure::Broken(malformed("an unknown frame in a stream"))),
            }
        }
    }

    /// Bytes of a read, at most `cap` of them.
    fn bytes(&mut self, path: &str, cap: u64) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        self.stream(|piece| {
            if (out.len() + piece.len()) as u64 > cap {
                return Err(oversized(path, None, cap).context("the server sent too much"));
            }
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }

    /// Sends everything `data` yields as data frames, then the end frame;
    /// an abort frame if `data` fails (its error is returned).
    fn send_data(&mut self, data: &mut dyn Read) -> Result<Option<io::Error>, Failure> {
        let mut frame = vec![TAG_MORE; 1 + MAX_PIECE];
        loop {
            match read_full(data, &mut frame[1..]) {
                Ok(0) => break,
                Ok(n) => self.send(&frame[..=n])?,
                Err(e) => {
                    self.send(&[TAG_ABORT])?;
                    return Ok(Some(e));
                }
            }
        }
        self.send(&[TAG_END])?;
        Ok(None)
    }

    /// Ends the connection: closes the server's input (it exits at the
    /// end of its input), then waits for the process; a broken one is
    /// killed first.
    fn close(mut self, broken: bool) {
        let _ = self.writer.flush();
        drop(self.writer);
        if let Some(child) = self.child.take() {
            let mut child = child
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if broken {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Fills `buf` as far as `data` goes; 0 only at its end.
fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match data.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How a request failed: the server answered with an error (the
/// connection is fine), or the connection is no longer usable.
enum Failure {
    Remote(Error),
    Broken(Error),
}

impl Failure {
    #[allow(clippy::needless_pass_by_value)] // used as map_err(Failure::stream)
    fn stream(e: io::Error) -> Self {
        Self::Broken(Error::new(
            ErrorKind::Transient,
            format!("the connection failed: {e}"),
        ))
    }

    fn into_error(self) -> Error {
        match self {
            Self::Remote(e) | Self::Broken(e) => e,
        }
    }
}

/// A repository served by `kura serve`.
pub struct ServeBackend {
    describe: String,
    connector: Connector,
    conn: Mutex<Option<Connection>>,
    watchdog: Watchdog,
}

impl ServeBackend {
    /// Runs `ssh` to the location's host and says hello (early: a wrong
    /// host, key or server program fails here, with a clear error).
    ///
    /// # Errors
    /// As [`Connection::open`]; [`ErrorKind::Unreachable`] if `ssh`
    /// cannot be started.
    pub fn connect(location: &ServeLocation) -> Result<Self> {
        let describe = location.url();
        let args = location.ssh_args();
        let connector: Connector = Box::new({
            let describe = describe.clone();
            move || spawn_ssh(&args, &describe)
        });
        Self::with_timeout(describe, connector, location.timeout)
    }

    /// A backend whose connections `connector` makes (the first one now),
    /// each request bounded by the default timeout.
    ///
    /// # Errors
    /// The connector's.
    pub fn over(describe: String, connector: Connector) -> Result<Self> {
        Self::with_timeout(describe, connector, DEFAULT_IO_TIMEOUT)
    }

    /// As [`Self::over`], a request (a whole write included) failing as
    /// transient after `timeout` without its answer: the connection's
    /// process is killed and the next request makes a new one.
    ///
    /// # Errors
    /// The connector's.
    pub fn with_timeout(describe: String, connector: Connector, timeout: Duration) -> Result<Self> {
        let first = connector()?;
        Ok(Self {
            describe,
            connector,
            conn: Mutex::new(Some(first)),
            watchdog: Watchdog::new(timeout),
        })
    }

    /// Whether the server said it is append-only (in its last hello).
    pub fn append_only(&self) -> bool {
        self.lock().as_ref().is_some_and(Connection::append_only)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one request on the connection (reconnecting first if the last
    /// one broke); a broken stream drops the connection.
    fn call<T>(
        &self,
        what: &str,
        request: impl FnOnce(&mut Connection, &str) -> Result<T, Failure>,
    ) -> Result<T> {
        let mut guard = self.lock();
        if guard.is_none() {
            let conn = (self.connector)().map_err(|e| {
                Error::new(
                    ErrorKind::Transient,
                    format!("reconnecting after a lost connection: {e}"),
                )
            })?;
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connected above");
        self.watchdog.arm(conn.child.clone());
        let outcome = request(conn, &self.describe);
        let timed_out = self.watchdog.disarm();
        match outcome {
            Ok(v) => Ok(v),
            Err(Failure::Remote(e)) => Err(e),
            Err(Failure::Broken(e)) => {
                if let Some(conn) = guard.take() {
                    conn.close(true);
                }
                if timed_out {
                    return Err(Error::new(
                        ErrorKind::Transient,
                        format!(
                            "{}: {what}: no answer from the server in {} s",
                            self.describe,
                            self.watchdog.timeout().as_secs_f32()
                        ),
                    ));
                }
                Err(e.context(format!("{}: {what}", self.describe)))
            }
        }
    }

    fn read_request(&self, path: &str, request: &[u8], cap: u64) -> Result<Vec<u8>> {
        self.call(&format!("reading {path}"), |conn, describe| {
            conn.send(request)?;
            conn.flush()?;
            conn.status(describe)?;
            conn.bytes(path, cap)
        })
    }
}

impl Drop for ServeBackend {
    fn drop(&mut self) {
        if let Some(conn) = self.lock().take() {
            conn.close(false);
        }
    }
}

/// A connector to a server thread in this process that serves `root`
/// with a [`crate::backend::LocalBackend`] over pipes: the whole protocol
/// without ssh (tests, and the conformance suite).
pub fn in_process(root: PathBuf, options: ServeOptions, on_refusal: RefusalLog) -> Connector {
    Box::new(move || {
        let (client, server) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("making a socket pair", e))?;
        let (root, log) = (root.clone(), Arc::clone(&on_refusal));
        let server_writer = server
            .try_clone()
            .map_err(|e| Error::io("cloning a socket", e))?;
        std::thread::spawn(move || {
            let backend = crate::backend::LocalBackend::new(root);
            let mut input = BufReader::new(server);
            let mut output = BufWriter::new(server_writer);
            let _ = serve(&backend, &mut input, &mut output, options, &mut |r| log(r));
        });
        let client_writer = client
            .try_clone()
            .map_err(|e| Error::io("cloning a socket", e))?;
        Connection::open(
            Box::new(BufReader::new(client)),
            Box::new(BufWriter::new(client_writer)),
            None,
            "kura serve (in process)",
        )
    })
}

/// Where an in-process server reports its refusals.
pub type RefusalLog = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// Starts `ssh args` with piped stdin and stdout (stderr stays the
/// user's) and says hello.
fn spawn_ssh(args: &[String], describe: &str) -> Result<Connection> {
    let mut child = Command::new("ssh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Unreachable,
                format!("{describe}: starting ssh"),
                e,
            )
        })?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    Connection::open(
        Box::new(BufReader::with_capacity(1 << 16, stdout)),
        Box::new(BufWriter::with_capacity(1 << 16, stdin)),
        Some(child),
        describe,
    )
}

impl Backend for ServeBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let request = Encoder::default().byte(Op::List as u8).name(dir).0;
        let prefix = format!("{dir}/");
        self.call(&format!("listing {dir}"), |conn, describe| {
            conn.send(&request)?;
            conn.flush()?;
            conn.status(describe)?;
            let mut out = Vec::new();
            conn.stream(|entries| {
                let mut d = Decoder(entries);
                while !d.is_empty() {
                    let path = d.name()?;
                    let size = d.u64()?;
                    if check_path(&path).is_err() || !path.starts_with(&prefix) {
                        return Err(malformed(&format!(
                            "the server listed {path:?} under {dir:?}"
                        )));
                    }
                    out.push(ObjectInfo { path, size });
                }
                Ok(())
            })?;
            Ok(out)
        })
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let request = Encoder::default().byte(Op::Read as u8).name(path);
        let (request, cap) = match &range {
            Some(r) => (
                request.byte(1).u64(r.start).u64(r.end),
                r.end.saturating_sub(r.start),
            ),
            None => (request.byte(0), MAX_PACK_LEN),
        };
        let bytes = self.read_request(path, &request.0, cap)?;
        if let Some(r) = range {
            if bytes.len() as u64 != r.end - r.start {
                return Err(Error::corrupt(format!(
                    "{}: the server sent {} bytes for the range {}..{} of {path}",
                    self.describe,
                    bytes.len(),
                    r.start,
                    r.end
                )));
            }
        }
        Ok(bytes)
    }

    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let request = Encoder::default()
            .byte(Op::ReadAtMost as u8)
            .name(path)
            .u64(limit)
            .0;
        self.read_request(path, &request, limit)
    }

    /// Streams `data` in frames of at most 1 MiB: the object is never
    /// held whole here.
    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        check_path(path)?;
        let request = Encoder::default().byte(Op::Write as u8).name(path).0;
        let source_failed = self.call(&format!("writing {path}"), |conn, describe| {
            conn.send(&request)?;
            let source_failed = conn.send_data(data)?;
            conn.flush()?;
            // The server answers even an aborted write.
            match (conn.status(describe), source_failed) {
                (Err(Failure::Broken(e)), _) => Err(Failure::Broken(e)),
                (_, Some(e)) => Ok(Some(e)),
                (Ok(_), None) => Ok(None),
                (Err(f), None) => Err(f),
            }
        })?;
        match source_failed {
            Some(e) => Err(Error::io(format!("{path}: reading the data to write"), e)),
            None => Ok(()),
        }
    }

    fn delete(&self, path: &str) -> Result<()> {
        let request = Encoder::default().byte(Op::Delete as u8).name(path).0;
        self.call(&format!("deleting {path}"), |conn, describe| {
            conn.send(&request)?;
            conn.flush()?;
            conn.status(describe).map(drop)
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn exclusive_create(&self) -> Result<bool> {
        let request = [Op::ExclusiveCreate as u8];
        self.call("asking whether creates are exclusive", |conn, describe| {
            conn.send(&request)?;
            conn.flush()?;
            let body = conn.status(describe)?;
            Ok(body.first().is_some_and(|&b| b != 0))
        })
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let request = Encoder::default()
            .byte(Op::RemoveStaleTemporaries as u8)
            .u64(older_than.as_secs())
            .0;
        self.call("removing stale temporaries", |conn, describe| {
            conn.send(&request)?;
            conn.flush()?;
            let body = conn.status(describe)?;
            Decoder(&body).u64().map_err(Failure::Broken)
        })
    }
}
