//! Library error type: one public [`Error`] with a [`ErrorKind`] a caller can
//! match on. Every layer returns it; the CLI maps kinds to exit codes.

use std::fmt;

/// The `tracing` target of the warning a reader gives when it skips one
/// damaged object (an index file, a snapshot) and goes on with the rest.
/// The binary shows these by default, unlike the library's other logging.
pub const DAMAGE_LOG: &str = "kura::damage";

/// Warns (target [`DAMAGE_LOG`]) that `object` (e.g. `index file 3fa2...`)
/// is damaged and was skipped, once per object per process: a command that
/// reads the index or the snapshots twice names the damage once.
pub fn warn_skipped_damage(object: &str, error: &Error) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.get_or_insert_default().insert(object.to_owned()) {
        tracing::warn!(target: DAMAGE_LOG, "{object} skipped: {error}");
    }
}

/// What went wrong, coarsely enough to decide what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An object, or the repository itself, does not exist.
    NotFound,
    /// A create-only write found the name already taken.
    AlreadyExists,
    /// Stored bytes fail authentication, decoding or a consistency check.
    Corrupt,
    /// No key slot opens with the given password.
    WrongPassword,
    /// A key slot asks for KDF parameters outside the accepted range.
    KeySlotRefused,
    /// The repository uses a format version, feature or algorithm this
    /// client does not implement.
    Unsupported,
    /// The repository is locked by another process.
    Locked,
    /// A failure that may go away if retried (timeouts, connection
    /// resets, a server's 5xx answers); the retry decorator retries these.
    Transient,
    /// The storage refused us: bad credentials, or no permission for the
    /// operation. Retrying does not help.
    AccessDenied,
    /// The storage could not be reached at all (connection refused, host
    /// unknown, SSH failed) after the retries.
    Unreachable,
    /// The caller asked for something that cannot be done as asked.
    InvalidInput,
    /// The repository went back since this machine last saw it: a
    /// snapshot or record it saw is gone without a record that forgot it,
    /// the config changed, or a removed key slot returned
    /// (`ops::history`).
    RolledBack,
    /// Any other I/O failure (disk full, permission denied, ...).
    Io,
    /// The repository was opened with a put-only key, and the operation
    /// needs the admin key: decrypting data, trees or snapshot bodies, or
    /// writing admin metadata (prune records, supersedes lists).
    PutOnlyKey,
}

/// The library's error: a kind plus a human-readable message with context.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Shorthand for a [`ErrorKind::Corrupt`] error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// Wraps an `io::Error`, keeping `NotFound`/`AlreadyExists` distinct.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::TimedOut | K::Interrupted | K::ConnectionReset | K::ConnectionAborted => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Io,
        };
        Self::with_source(kind, context, err)
    }

    /// Prefixes the message with more context, keeping kind and source.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
