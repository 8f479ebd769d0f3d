//! Backend layer (1): a repository behind `kura serve` on another machine,
//! reached over ssh (`kura+ssh://[user@]host[:port]/path`). The client
//! ([`ServeBackend`]) runs `ssh HOST kura serve PATH` and speaks the kura
//! serve protocol over the child's stdin and stdout; the server
//! ([`server::serve`]) answers with a [`super::LocalBackend`] on PATH, so
//! it inherits create-only writes, fsync and private modes from it. With
//! `kura serve --append-only` (for an `authorized_keys` line
//! `command="kura serve --append-only /srv/kura/web1",restrict ...`) the
//! server refuses every delete and every removal of temporaries, so a
//! client that was broken into cannot remove or replace anything it
//! stored. Owned invariant: nothing the client sends can make an
//! append-only server remove or replace an object, and neither side
//! allocates for a length the other announced before checking its bound.
//!
//! # The kura serve protocol (version 1)
//!
//! Everything is a **frame**: a length (u32 little-endian) and that many
//! bytes. A frame is at most [`protocol::MAX_FRAME`] (1 MiB + 4 KiB); a
//! reader refuses a larger length before allocating. Inside frames,
//! integers are little-endian u32/u64 and a **name** (a path or a message)
//! is a u16 length, at most [`protocol::MAX_NAME`] (4096), then UTF-8.
//!
//! 1. **Hello.** The client sends `"kura-serve"`, version (u32). The
//!    server answers status 0, `"kura-serve"`, its version (u32), flags
//!    (u8; bit 0: append-only), or, for a version it does not speak, an
//!    error (status 7, unsupported) naming both versions, and closes.
//!    The client refuses a server of another version the same way.
//! 2. **Requests**, one at a time; each a frame starting with an operation
//!    byte: 1 list (name dir), 2 read (name path, u8 has-range, and with
//!    a range u64 start, u64 end), 3 read-at-most (name path, u64 limit),
//!    4 write (name path; data frames follow), 5 delete (name path),
//!    6 exclusive-create, 7 remove-stale-temporaries (u64 seconds).
//!    `describe` is answered by the client (the location), `concurrency`
//!    too (one request at a time per connection).
//! 3. **Responses**: a frame with a status byte. 0 is success, followed by
//!    the operation's result: nothing (write, delete), u8 (exclusive
//!    create), u64 (temporaries removed), or for list and the reads a
//!    stream of frames each tagged 0 (more), ending with a frame `1`
//!    (end). A read's frames carry bytes; a list's carry entries (name
//!    path, u64 size). Any other status is an error: the kind (1 not
//!    found, 2 already exists, 3 corrupt, 4 invalid input, 5 access
//!    denied, 6 transient, 7 unsupported, 8 other I/O, 20 refused because
//!    the server is append-only) and a message (name).
//! 4. **Writes stream** in data frames of at most 1 MiB (tag 0), then a
//!    frame `1` (end), or `2` (abort: the client's source failed, and the
//!    server discards what it got). The server reads every frame of a
//!    write even when it refuses it, so the stream stays in step; more
//!    than the largest object (a pack, 128 MiB: format-spec/07 "Size
//!    limits") fails the write. Neither side holds more than one frame of
//!    a write.
//!
//! Bounds the client keeps against a hostile server: a ranged read must
//! bring exactly the range, a bounded read at most its limit, a whole read
//! at most 128 MiB; a listed path must be a valid object path below the
//! listed directory. Bytes that break the protocol end the connection (the
//! next request reconnects). The server checks every path with the
//! backend's `check_path` (no `..`, no leading `/`, no hidden names) and
//! reports a refused one.

pub mod client;
pub mod protocol;
pub mod server;
mod watchdog;

use std::path::PathBuf;
use std::time::Duration;

pub use client::ServeBackend;
pub use server::{Refusal, ServeOptions, serve};

/// Where a served repository is: `kura+ssh://[user@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLocation {
    pub user: Option<String>,
    /// A host name or an alias from the ssh configuration.
    pub host: String,
    pub port: Option<u16>,
    /// The repository directory on the server, relative to the login
    /// directory or absolute (`//path` in the URL). A forced command in
    /// `authorized_keys` decides it instead.
    pub path: String,
    /// An ssh configuration file used instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    /// The `kura` program on the server (`--serve-command`,
    /// `KURA_SERVE_COMMAND`; default `kura`).
    pub serve_command: String,
    /// How long one request (a whole write included) may take before the
    /// connection is dropped and the request fails as transient.
    pub timeout: Duration,
}

/// The remote program run when none is named.
pub const DEFAULT_SERVE_COMMAND: &str = "kura";

impl ServeLocation {
    /// The location as a URL.
    pub fn url(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("kura+ssh://{user}{}{port}/{}", self.host, self.path)
    }

    /// The command line run on the server: `kura serve 'PATH'`.
    pub fn remote_command(&self) -> String {
        format!("{} serve {}", self.serve_command, shell_quote(&self.path))
    }

    /// The arguments of the `ssh` that reaches the server: no terminal,
    /// never a prompt (a password or an unknown host key fails the
    /// connection), dead peers noticed within a minute.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "ConnectTimeout=20",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(config) = &self.config_file {
            args.extend(["-F".to_owned(), config.display().to_string()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        args.extend(["--".to_owned(), self.host.clone(), self.remote_command()]);
        args
    }
}

/// `text` in single quotes for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line() {
        let loc = ServeLocation {
            user: Some("backup".into()),
            host: "vault".into(),
            port: Some(2222),
            path: "/srv/it's".into(),
            config_file: None,
            serve_command: DEFAULT_SERVE_COMMAND.into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(loc.url(), "kura+ssh://backup@vault:2222//srv/it's");
        let args = loc.ssh_args();
        assert_eq!(
            args[args.len() - 7..],
            [
                "-p",
                "2222",
                "-l",
                "backup",
                "--",
                "vault",
                r"kura serve '/srv/it'\''s'"
            ]
        );
    }
}

#[cfg(test)]
mod protocol_tests {
    use std::sync::{Arc, Mutex};

    use super::client::{Connection, in_process};
    use super::protocol::{
        Decoder, Encoder, Op, client_hello, error_response, read_frame, status_of, write_frame,
    };
    use super::*;
    use crate::backend::{Backend, LocalBackend, conformance};
    use crate::error::ErrorKind;

    fn served(
        root: &std::path::Path,
        append_only: bool,
    ) -> (ServeBackend, Arc<Mutex<Vec<Refusal>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let connector = in_process(
            root.to_path_buf(),
            ServeOptions { append_only },
            Arc::new(move |r: &Refusal| sink.lock().unwrap().push(r.clone())),
        );
        let backend = ServeBackend::over("test".into(), connector).unwrap();
        (backend, log)
    }

    #[test]
    fn conformance_over_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, log) = served(dir.path(), false);
        assert!(!backend.append_only());
        conformance::run_shared(Arc::new(backend));
        // Only the create-only refusals of the suite itself are logged.
        assert!(
            log.lock().unwrap().iter().all(|r| r.op == "write"),
            "{log:?}"
        );
    }

    #[test]
    fn conformance_append_only_refuses_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, log) = served(dir.path(), true);
        assert!(backend.append_only());
        conformance::run_append_only(&backend);
        let err = backend
            .remove_stale_temporaries(std::time::Duration::ZERO)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        let log = log.lock().unwrap();
        assert!(
            log.iter()
                .any(|r| r.op == "delete" && r.path == "conformance/kept")
        );
        assert!(log.iter().any(|r| r.op == "remove_stale_temporaries"));
        assert!(
            log.iter()
                .any(|r| r.op == "write" && r.path == "conformance/once")
        );
    }

    /// Runs the server over `input` (frames already written) and returns
    /// its outcome and the frames it answered.
    fn raw(
        root: &std::path::Path,
        frames: &[Vec<u8>],
        append_only: bool,
    ) -> (crate::Result<()>, Vec<Vec<u8>>, Vec<Refusal>) {
        let mut input = Vec::new();
        for f in frames {
            write_frame(&mut input, f).unwrap();
        }
        let mut output = Vec::new();
        let mut refused = Vec::new();
        let outcome = serve(
            &LocalBackend::new(root),
            &mut &input[..],
            &mut output,
            ServeOptions { append_only },
            &mut |r| refused.push(r.clone()),
        );
        let mut answers = Vec::new();
        let mut r = &output[..];
        while let Some(frame) = read_frame(&mut r).unwrap() {
            answers.push(frame);
        }
        (outcome, answers, refused)
    }

    #[test]
    fn an_unknown_version_is_refused_clearly_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, answers, _) = raw(dir.path(), &[client_hello(7)], false);
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Unsupported);
        let mut d = Decoder(&answers[0]);
        assert_eq!(d.byte().unwrap(), status_of(ErrorKind::Unsupported));
        let message = d.name().unwrap();
        assert!(
            message.contains("version 7") && message.contains("version 1"),
            "{message}"
        );
        // A server that answers with another version.
        let mut reply = Vec::new();
        let body = Encoder::default()
            .byte(0)
            .bytes(protocol::MAGIC)
            .u32(2)
            .byte(0)
            .0;
        write_frame(&mut reply, &body).unwrap();
        let err = Connection::open(
            Box::new(std::io::Cursor::new(reply)),
            Box::new(Vec::new()),
            None,
            "x",
        )
        .err()
        .expect("refused");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("version 2"), "{err}");
        // Something that is not kura serve at all.
        let mut junk = Vec::new();
        write_frame(&mut junk, &error_response(0, "Welcome to the host!")).unwrap();
        let err = Connection::open(
            Box::new(std::io::Cursor::new(junk)),
            Box::new(Vec::new()),
            None,
            "x",
        )
        .err()
        .expect("refused");
        assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    }

    #[test]
    fn paths_leaving_the_repository_are_refused_and_logged() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(top.path().join("outside"), b"keep").unwrap();
        let frames = vec![
            client_hello(1),
            Encoder::default()
                .byte(Op::Delete as u8)
                .name("../outside")
                .0,
            Encoder::default()
                .byte(Op::Read as u8)
                .name("../outside")
                .byte(0)
                .0,
            Encoder::default()
                .byte(Op::Write as u8)
                .name("data/../../x")
                .0,
            vec![protocol::TAG_MORE, b'z'],
            vec![protocol::TAG_END],
            Encoder::default().byte(Op::List as u8).name("/etc").0,
        ];
        let (outcome, answers, refused) = raw(&root, &frames, false);
        outcome.unwrap();
        // Hello, then one error per request.
        assert_eq!(answers.len(), 5, "{answers:?}");
        for answer in &answers[1..] {
            assert_eq!(answer[0], status_of(ErrorKind::InvalidInput), "{answer:?}");
        }
        assert_eq!(std::fs::read(top.path().join("outside")).unwrap(), b"keep");
        assert!(!top.path().join("x").exists());
        let ops: Vec<_> = refused.iter().map(|r| (r.op, r.path.as_str())).collect();
        assert_eq!(
            ops,
            [
                ("delete", "../outside"),
                ("read", "../outside"),
                ("write", "data/../../x"),
                ("list", "/etc")
            ]
        );
    }

    /// A client over `frames` as a server's answers (after its hello).
    fn scripted(frames: &[Vec<u8>]) -> ServeBackend {
        let mut wire = Vec::new();
        let hello = Encoder::default()
            .byte(0)
            .bytes(protocol::MAGIC)
            .u32(protocol::VERSION)
            .byte(0)
            .0;
        for f in std::iter::once(&hello).chain(frames) {
            write_frame(&mut wire, f).unwrap();
        }
        let wire = Mutex::new(Some(wire));
        let connector: client::Connector = Box::new(move || {
            let wire = wire.lock().unwrap().take().unwrap_or_default();
            Connection::open(
                Box::new(std::io::Cursor::new(wire)),
                Box::new(std::io::sink()),
                None,
                "scripted",
            )
        });
        ServeBackend::over("scripted".into(), connector).unwrap()
    }

    #[test]
    fn a_hostile_server_cannot_overfill_or_escape() {
        let more = |n: usize| [vec![protocol::TAG_MORE], vec![0xEE; n]].concat();
        // Far more than a bounded read's limit.
        let b = scripted(&[vec![0], more(1 << 20), more(1 << 20)]);
        let err = b.read_at_most("snapshots/a", 100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("sent too much"), "{err}");
        // Fewer bytes than the range asked for.
        let b = scripted(&[vec![0], more(3), vec![protocol::TAG_END]]);
        let err = b.read("data/x", Some(0..10)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        // A listed path outside the listed directory.
        let entry = Encoder::default()
            .byte(protocol::TAG_MORE)
            .name("../../etc/passwd")
            .u64(1)
            .0;
        let b = scripted(&[vec![0], entry, vec![protocol::TAG_END]]);
        let err = b.list("snapshots").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        // A status it does not know is an I/O error with the message.
        let b = scripted(&[error_response(99, "odd")]);
        let err = b.delete("data/x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("odd"));
    }

    #[test]
    fn a_hostile_length_ends_the_session_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = Vec::new();
        write_frame(&mut input, &client_hello(1)).unwrap();
        input.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut output = Vec::new();
        let err = serve(
            &LocalBackend::new(dir.path()),
            &mut &input[..],
            &mut output,
            ServeOptions::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn an_aborted_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let frames = vec![
            client_hello(1),
            Encoder::default()
                .byte(Op::Write as u8)
                .name("snapshots/a")
                .0,
            vec![protocol::TAG_MORE, 1, 2, 3],
            vec![protocol::TAG_ABORT],
            Encoder::default().byte(Op::List as u8).name("snapshots").0,
        ];
        let (outcome, answers, _) = raw(dir.path(), &frames, false);
        outcome.unwrap();
        assert_ne!(answers[1][0], 0, "the aborted write fails");
        assert_eq!(answers[2], [0], "the list that follows is answered in step");
        assert_eq!(answers[3], [protocol::TAG_END], "and is empty");
        let backend = LocalBackend::new(dir.path());
        assert!(backend.list("snapshots").unwrap().is_empty());
    }
}
