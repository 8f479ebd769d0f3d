//! SFTP backend: a repository in a directory on an SSH server.
//!
//! The connection is OpenSSH's own `ssh` client in multiplex mode (the
//! `openssh` crate), so `~/.ssh/config` applies: host aliases, keys,
//! ports, jump hosts. The SFTP protocol runs over it with
//! `openssh-sftp-client`, the client opendal's SFTP service is built on.
//! kura talks to it directly because create-only atomic writes need
//! `hardlink@openssh.com`, which opendal's SFTP service does not expose
//! (its rename is `posix-rename@openssh.com`, which overwrites, and its
//! create-only write makes a torn upload visible under the final name).
//!
//! How each operation meets the backend contract is in
//! format-spec/07-layout-and-writes.md ("How the remote backends meet the
//! contract"). The async client runs on a small tokio runtime owned by the
//! backend; callers stay synchronous and may call from many threads at
//! once: their requests are pipelined over the one connection.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::metadata::Permissions;
use openssh_sftp_client::{Sftp, SftpOptions};
use tokio::io::AsyncSeekExt;

use super::{Backend, ObjectInfo, check_path};
use crate::error::{Error, ErrorKind, Result};

/// Mode of every object kura creates on the server (as a local
/// repository's, `super::local::FILE_MODE`).
const OBJECT_MODE: u16 = 0o600;
/// Mode of every directory kura creates on the server.
const DIR_MODE: u16 = 0o700;

/// Where an SFTP repository is: `sftp://[user@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpLocation {
    pub user: Option<String>,
    /// A host name or an alias from `~/.ssh/config`.
    pub host: String,
    pub port: Option<u16>,
    /// Relative to the login directory, or absolute (written `//path` in
    /// the URL).
    pub path: String,
    /// An ssh configuration file used instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    /// How long one request, or connecting, may take.
    pub timeout: Duration,
}

impl SftpLocation {
    /// The destination as `ssh` takes it.
    fn destination(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match self.port {
            Some(port) => format!("ssh://{user}{}:{port}", self.host),
            None => format!("{user}{}", self.host),
        }
    }

    /// The location as a URL.
    pub fn url(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("sftp://{user}{}{port}/{}", self.host, self.path)
    }
}

/// Bytes written to the server per request batch.
const WRITE_PIECE: usize = 1 << 20;

/// A repository on an SFTP server.
pub struct SftpBackend {
    location: SftpLocation,
    /// Absolute repository root on the server.
    root: PathBuf,
    runtime: tokio::runtime::Runtime,
    /// The live connection; `None` after it failed, until the next request
    /// reconnects.
    conn: Mutex<Option<Arc<Sftp>>>,
    /// Where `ssh` keeps its control socket (private to this process).
    control_dir: tempfile_dir::TempDir,
    can_hardlink: bool,
    can_fsync: bool,
}

/// A private directory removed on drop, for the ssh control socket.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<Self> {
            use std::os::unix::fs::DirBuilderExt;
            let mut suffix = [0u8; 8];
            getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
            let dir = std::env::temp_dir().join(format!("kura-ssh-{}", hex::encode(suffix)));
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
            Ok(Self(dir))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Maps an error of the connection itself (setting up the session).
fn connect_error(location: &SftpLocation, e: &dyn std::fmt::Display) -> Error {
    let text = e.to_string();
    let denied = [
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "No RSA host key",
        "host key",
    ]
    .iter()
    .any(|m| text.contains(m));
    let (kind, hint) = if denied {
        (
            ErrorKind::AccessDenied,
            "the server refused the login or its host key is not known (connect once with `ssh` to check and accept the key; kura never adds host keys)",
        )
    } else {
        (
            ErrorKind::Unreachable,
            "could not connect (is the host name, port and ~/.ssh/config entry right, and the server up?)",
        )
    };
    Error::new(kind, format!("sftp {}: {hint}: {text}", location.url()))
}

/// Whether an SFTP error means the connection is gone (so reconnect).
fn is_connection_error(e: &openssh_sftp_client::Error) -> bool {
    use openssh_sftp_client::Error as E;
    !matches!(
        e,
        E::SftpError(..) | E::UnsupportedExtension(_) | E::BufferTooLong(_)
    )
}

fn sftp_error(context: &str, e: &openssh_sftp_client::Error) -> Error {
    use openssh_sftp_client::Error as E;
    let kind = match e {
        E::SftpError(SftpErrorKind::NoSuchFile, _) => ErrorKind::NotFound,
        E::SftpError(SftpErrorKind::PermDenied, _) => ErrorKind::AccessDenied,
        E::SftpError(..) | E::UnsupportedExtension(_) | E::BufferTooLong(_) => ErrorKind::Io,
        E::IOError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ErrorKind::Corrupt,
        _ => ErrorKind::Transient,
    };
    Error::new(kind, format!("{context}: {e}"))
}

impl SftpBackend {
    /// Connects (early: a wrong host, key or path fails here, with a
    /// clear error) and resolves the repository root.
    ///
    /// # Errors
    /// [`ErrorKind::Unreachable`], [`ErrorKind::AccessDenied`], or an SFTP
    /// error resolving the path.
    pub fn connect(location: SftpLocation) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kura-sftp")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the SFTP client runtime", e))?;
        let control_dir = tempfile_dir::TempDir::new()
            .map_err(|e| Error::io("creating a directory for the ssh control socket", e))?;
        let sftp = runtime.block_on(open_session(&location, control_dir.path()))?;
        let root = runtime.block_on(async {
            let mut fs = sftp.fs();
            let home = fs
                .canonicalize(".")
                .await
                .map_err(|e| sftp_error("resolving the login directory", &e))?;
            Ok::<_, Error>(if location.path.starts_with('/') {
                PathBuf::from(&location.path)
            } else {
                home.join(&location.path)
            })
        })?;
        let can_hardlink = sftp.support_hardlink();
        let can_fsync = sftp.support_fsync();
        if !can_hardlink {
            tracing::warn!(
                "sftp {}: the server lacks hardlink@openssh.com; create-only writes check the name, then rename",
                location.url()
            );
        }
        Ok(Self {
            location,
            root,
            runtime,
            conn: Mutex::new(Some(Arc::new(sftp))),
            control_dir,
            can_hardlink,
            can_fsync,
        })
    }

    fn full(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }

    /// The connection, reconnecting if the last one failed. A failure to
    /// reconnect is transient: the server was there before.
    fn sftp(&self) -> Result<Arc<Sftp>> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sftp) = conn.as_ref() {
            return Ok(Arc::clone(sftp));
        }
        let sftp = self
            .runtime
            .block_on(open_session(&self.location, self.control_dir.path()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Transient,
                    format!("reconnecting after a lost connection: {e}"),
                )
            })?;
        let sftp = Arc::new(sftp);
        *conn = Some(Arc::clone(&sftp));
        Ok(sftp)
    }

    /// Runs one request; a connection-level failure drops the connection
    /// so that the next request (a retry) reconnects.
    fn run<T, F>(&self, what: &str, op: impl FnOnce(Arc<Sftp>) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, RequestError>>,
    {
        let sftp = self.sftp()?;
        let outcome = self.runtime.block_on(async {
            match tokio::time::timeout(self.location.timeout, op(Arc::clone(&sftp))).await {
                Ok(r) => r,
                Err(_) => Err(RequestError::TimedOut),
            }
        });
        match outcome {
            Ok(v) => Ok(v),
            Err(RequestError::Kura(e)) => Err(e),
            Err(RequestError::Sftp(e)) => {
                if is_connection_error(&e) {
                    self.drop_connection(&sftp);
                }
                Err(sftp_error(&format!("{}: {what}", self.location.url()), &e))
            }
            Err(RequestError::TimedOut) => {
                self.drop_connection(&sftp);
                Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "{}: {what}: no answer from the server in {} s",
                        self.location.url(),
                        self.location.timeout.as_secs_f32()
                    ),
                ))
            }
        }
    }

    fn drop_connection(&self, failed: &Arc<Sftp>) {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
            *conn = None;
        }
    }
}

/// What a request future fails with.
enum RequestError {
    Sftp(openssh_sftp_client::Error),
    Kura(Error),
    TimedOut,
}

impl From<openssh_sftp_client::Error> for RequestError {
    fn from(e: openssh_sftp_client::Error) -> Self {
        Self::Sftp(e)
    }
}

/// Connects, logs in and starts the SFTP subsystem, all within the
/// location's timeout (a server that accepts the connection and then says
/// nothing, stopped or overloaded, is unreachable, not a hang).
async fn open_session(location: &SftpLocation, control_dir: &Path) -> Result<Sftp> {
    tokio::time::timeout(
        location.timeout,
        open_session_unbounded(location, control_dir),
    )
    .await
    .unwrap_or_else(|_| {
        Err(connect_error(
            location,
            &format!("no answer within {} s", location.timeout.as_secs_f32()),
        ))
    })
}

async fn open_session_unbounded(location: &SftpLocation, control_dir: &Path) -> Result<Sftp> {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(KnownHosts::Strict)
        // A kura killed mid-run leaves no ssh master behind for long.
        .control_persist(ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).expect("non-zero"),
        ))
        .control_directory(control_dir)
        .connect_timeout(location.timeout.min(Duration::from_secs(20)))
        .server_alive_interval(Duration::from_secs(15));
    if let Some(config) = &location.config_file {
        builder.config_file(config);
    }
    let session = builder
        .connect(location.destination())
        .await
        .map_err(|e| connect_error(location, &ErrorChain(&e)))?;
    Sftp::from_session(session, SftpOptions::default())
        .await
        .map_err(|e| connect_error(location, &ErrorChain(&e)))
}

/// Displays an error with its sources (ssh's own message is a source).
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

fn is_missing(e: &openssh_sftp_client::Error) -> bool {
    matches!(
        e,
        openssh_sftp_client::Error::SftpError(SftpErrorKind::NoSuchFile, _)
    )
}

/// Refuses, before opening it, anything at `full` that is not a regular
/// file: the server's open of a FIFO would block its only thread, and
/// with it the session. Anything but a file at an object's name is damage
/// to that object.
async fn ensure_regular(sftp: &Sftp, full: &std::path::Path) -> Result<(), RequestError> {
    let meta = sftp.fs().metadata(full).await?;
    match meta.file_type() {
        Some(t) if t.is_file() => Ok(()),
        _ => Err(RequestError::Kura(Error::corrupt(format!(
            "{}: not a regular file",
            full.display()
        )))),
    }
}

/// Directories listed at once: `data/` has up to 256 subdirectories, and
/// one at a time would cost a round trip each.
const LIST_PARALLEL: usize = 16;

/// Lists `dir` (absolute) recursively, paths relative to the root as
/// `rel/...`, one level at a time with the directories of a level listed
/// concurrently. Hidden names are skipped.
async fn list_into(
    sftp: &Sftp,
    dir: PathBuf,
    rel: String,
) -> std::result::Result<Vec<ObjectInfo>, RequestError> {
    let mut out = Vec::new();
    let mut level = vec![(dir, rel)];
    while !level.is_empty() {
        let listed: Vec<_> = futures_util::stream::iter(level)
            .map(|(dir, rel)| list_one(sftp, dir, rel))
            .buffer_unordered(LIST_PARALLEL)
            .collect()
            .await;
        level = Vec::new();
        for one in listed {
            let (files, dirs) = one?;
            out.extend(files);
            level.extend(dirs);
        }
    }
    Ok(out)
}

type Listed = (Vec<ObjectInfo>, Vec<(PathBuf, String)>);

/// One directory's files, and its subdirectories to list next.
async fn list_one(
    sftp: &Sftp,
    dir: PathBuf,
    rel: String,
) -> std::result::Result<Listed, RequestError> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut fs = sftp.fs();
    let handle = match fs.open_dir(&dir).await {
        Ok(d) => d,
        // A missing directory below the root is an empty one.
        Err(e) if is_missing(&e) => return Ok((files, dirs)),
        Err(e) => return Err(e.into()),
    };
    let mut entries = std::pin::pin!(handle.read_dir());
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        let Some(name) = entry.filename().to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = entry.metadata();
        match meta.file_type() {
            Some(t) if t.is_dir() && !super::is_object_name(name) => {
                dirs.push((dir.join(name), child));
            }
            Some(t) if t.is_file() => files.push(ObjectInfo {
                path: child,
                size: meta.len().unwrap_or(0),
            }),
            // A FIFO, socket, device, link or directory at an object's
            // name is listed (size 0), as on the local backend, so readers
            // meet it and report it as damage to that object.
            _ => files.push(ObjectInfo {
                path: child,
                size: 0,
            }),
        }
    }
    Ok((files, dirs))
}

impl Backend for SftpBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let full = self.full(dir);
        let dir_owned = dir.to_owned();
        let what = format!("listing {}", full.display());
        let mut out = self.run(&what, |sftp| async move {
            // The repository root must exist; a missing subdirectory is
            // an empty one.
            sftp.fs().metadata(&root).await.map_err(|e| {
                if is_missing(&e) {
                    RequestError::Kura(Error::new(
                        ErrorKind::NotFound,
                        format!("{}: no such directory", root.display()),
                    ))
                } else {
                    e.into()
                }
            })?;
            list_into(&sftp, full, dir_owned).await
        })?;
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let full = self.full(path);
        let what = format!("reading {path}");
        self.run(&what, |sftp| async move {
            match range {
                None => {
                    ensure_regular(&sftp, &full).await?;
                    Ok(sftp.fs().read(&full).await?.to_vec())
                }
                Some(r) => {
                    if r.start > r.end {
                        return Err(RequestError::Kura(Error::corrupt(format!(
                            "{}: range {}..{} is reversed",
                            full.display(),
                            r.start,
                            r.end
                        ))));
                    }
                    ensure_regular(&sftp, &full).await?;
                    let mut file = sftp.open(&full).await?;
                    let len = usize::try_from(r.end - r.start).unwrap_or(usize::MAX);
                    if len == 0 {
                        let size = file.metadata().await?.len().unwrap_or(0);
                        return if r.end <= size {
                            Ok(Vec::new())
                        } else {
                            Err(RequestError::Kura(past_end(&full, &r, size)))
                        };
                    }
                    file.seek(std::io::SeekFrom::Start(r.start))
                        .await
                        .map_err(|e| RequestError::Sftp(e.into()))?;
                    match file.read_all(len, BytesMut::with_capacity(len)).await {
                        Ok(b) => Ok(b.to_vec()),
                        Err(openssh_sftp_client::Error::IOError(io))
                            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
                        {
                            let size = file.metadata().await?.len().unwrap_or(0);
                            Err(RequestError::Kura(past_end(&full, &r, size)))
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            }
        })
    }

    /// `fstat` on the open handle, then a read of at most `limit` bytes.
    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let full = self.full(path);
        let what = format!("reading {path}");
        self.run(&what, |sftp| async move {
            ensure_regular(&sftp, &full).await?;
            let mut file = sftp.open(&full).await?;
            let size = file.metadata().await?.len().unwrap_or(0);
            if size > limit {
                return Err(RequestError::Kura(super::oversized(
                    path,
                    Some(size),
                    limit,
                )));
            }
            let len = usize::try_from(size).unwrap_or(usize::MAX);
            if len == 0 {
                return Ok(Vec::new());
            }
            Ok(file
                .read_all(len, BytesMut::with_capacity(len))
                .await?
                .to_vec())
        })
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        // The reader is consumed once, before any request: a failing
        // source writes nothing.
        let bytes = super::read_source(path, data)?;
        self.write_bytes(path, &bytes)
    }

    fn write_bytes(&self, path: &str, bytes: &[u8]) -> Result<()> {
        check_path(path)?;
        let target = self.full(path);
        let parent = target
            .parent()
            .map_or_else(|| self.root.clone(), Path::to_path_buf);
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object")
            .to_owned();
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        let temp = parent.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
        let (hardlink, fsync) = (self.can_hardlink, self.can_fsync);
        let what = format!("writing {path}");
        self.run(&what, |sftp| async move {
            let mut file = match sftp
                .options()
                .write(true)
                .create_new(true)
                .open(&temp)
                .await
            {
                Ok(f) => f,
                Err(e) if is_missing(&e) => {
                    create_dirs(&sftp, &parent).await?;
                    sftp.options()
                        .write(true)
                        .create_new(true)
                        .open(&temp)
                        .await?
                }
                Err(e) => return Err(e.into()),
            };
            // The server creates files with its own umask (0644 from
            // OpenSSH's default 0666): objects are the user's alone, as
            // a local repository's are. A server that refuses the mode
            // change still gets the object.
            if let Err(e) = file.set_permissions(Permissions::from(OBJECT_MODE)).await {
                tracing::debug!("sftp: mode of {} not set: {e}", temp.display());
            }
            let written = async {
                for piece in bytes.chunks(WRITE_PIECE) {
                    file.write_all(piece).await?;
                }
                if fsync {
                    file.sync_all().await?;
                }
                file.close().await
            }
            .await;
            let mut fs = sftp.fs();
            if let Err(e) = written {
                let _ = fs.remove_file(&temp).await;
                return Err(e.into());
            }
            let linked = if hardlink {
                fs.hard_link(&temp, &target).await
            } else {
                match fs.metadata(&target).await {
                    Ok(_) => {
                        let _ = fs.remove_file(&temp).await;
                        return Err(RequestError::Kura(Error::new(
                            ErrorKind::AlreadyExists,
                            format!("{} already exists", target.display()),
                        )));
                    }
                    Err(e) if is_missing(&e) => fs.rename(&temp, &target).await,
                    Err(e) => Err(e),
                }
            };
            match linked {
                Ok(()) => {
                    if hardlink {
                        let _ = fs.remove_file(&temp).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    let _ = fs.remove_file(&temp).await;
                    // link(2) refuses an existing name with a failure.
                    if matches!(
                        e,
                        openssh_sftp_client::Error::SftpError(SftpErrorKind::Failure, _)
                    ) && fs.metadata(&target).await.is_ok()
                    {
                        return Err(RequestError::Kura(Error::new(
                            ErrorKind::AlreadyExists,
                            format!("{} already exists", target.display()),
                        )));
                    }
                    Err(e.into())
                }
            }
        })
    }

    fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path);
        let what = format!("deleting {path}");
        self.run(&what, |sftp| async move {
            match sftp.fs().remove_file(&full).await {
                Ok(()) => Ok(()),
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn describe(&self) -> String {
        self.location.url()
    }

    fn concurrency(&self) -> usize {
        8
    }

    fn exclusive_create(&self) -> Result<bool> {
        Ok(self.can_hardlink)
    }
}

fn past_end(path: &Path, r: &Range<u64>, size: u64) -> Error {
    Error::corrupt(format!(
        "{}: range {}..{} reaches past the end ({size} bytes)",
        path.display(),
        r.start,
        r.end
    ))
}

/// Creates `dir` and whatever of its parents is missing (`mkdir -p`).
async fn create_dirs(sftp: &Sftp, dir: &Path) -> std::result::Result<(), RequestError> {
    let mut fs = sftp.fs();
    let mut missing = Vec::new();
    let mut at = dir.to_path_buf();
    loop {
        match fs.metadata(&at).await {
            Ok(_) => break,
            Err(e) if is_missing(&e) => {
                missing.push(at.clone());
                if !at.pop() || at.as_os_str().is_empty() {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    for d in missing.iter().rev() {
        let made = fs
            .dir_builder()
            .permissions(Permissions::from(DIR_MODE))
            .create(d)
            .await;
        if let Err(e) = made {
            // Another writer may have made it meanwhile.
            if fs.metadata(d).await.is_err() {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
