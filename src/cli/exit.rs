//! Layer 6 (CLI): the one table of exit codes. Each row is a code, the
//! library error kinds that end a run with it, and the one-line meaning
//! the README's "Exit codes" table gives; `tests/integration/exit_codes.rs`
//! reads that table and fails unless it says exactly this, so the two
//! cannot drift. The file names only `kura::` items: that test compiles it
//! as it is.

use kura::ErrorKind;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
/// Bad command line (clap's own exit code).
pub const USAGE: u8 = 2;
pub const INCOMPLETE: u8 = 3;
pub const NOT_FOUND: u8 = 10;
pub const LOCKED: u8 = 11;
pub const WRONG_PASSWORD: u8 = 12;
pub const UNSUPPORTED: u8 = 13;
pub const CORRUPT: u8 = 14;
pub const KEY_SLOT_REFUSED: u8 = 15;
pub const ALREADY_EXISTS: u8 = 16;
pub const ACCESS_DENIED: u8 = 17;
pub const UNREACHABLE: u8 = 18;
pub const PUT_ONLY_KEY: u8 = 19;
pub const ROLLED_BACK: u8 = 20;
pub const ATTENTION: u8 = 21;

/// One documented exit code.
pub struct ExitCodeRow {
    pub code: u8,
    /// The error kinds that exit with this code; an error that is not a
    /// library error exits [`ERROR`].
    pub kinds: &'static [ErrorKind],
    /// The README's wording, markdown as written there (read by the test
    /// that compares the two).
    #[allow(dead_code)]
    pub meaning: &'static str,
}

/// Every exit code kura gives, in the README's order.
pub const TABLE: &[ExitCodeRow] = &[
    row(OK, &[], "success"),
    row(
        ERROR,
        &[ErrorKind::Io, ErrorKind::InvalidInput, ErrorKind::Transient],
        "any other error (I/O, no password given, bad argument)",
    ),
    row(USAGE, &[], "bad command line"),
    row(
        INCOMPLETE,
        &[],
        "backup saved a snapshot, but some files could not be read \
         (each is warned about; the snapshot is marked incomplete)",
    ),
    row(
        NOT_FOUND,
        &[ErrorKind::NotFound],
        "repository (or an object named) not found",
    ),
    row(
        LOCKED,
        &[ErrorKind::Locked],
        "repository locked, or another `kura run` of the same profile is running on this machine",
    ),
    row(
        WRONG_PASSWORD,
        &[ErrorKind::WrongPassword],
        "wrong password",
    ),
    row(
        UNSUPPORTED,
        &[ErrorKind::Unsupported],
        "repository version, feature or algorithm not supported by this kura",
    ),
    row(
        CORRUPT,
        &[ErrorKind::Corrupt],
        "stored data corrupt or tampered with (for `check`: damage found; \
         a check that could not run exits with another code)",
    ),
    row(
        KEY_SLOT_REFUSED,
        &[ErrorKind::KeySlotRefused],
        "key slot refused: its Argon2id parameters are outside the accepted range",
    ),
    row(
        ALREADY_EXISTS,
        &[ErrorKind::AlreadyExists],
        "already exists (e.g. `init` over a repository)",
    ),
    row(
        ACCESS_DENIED,
        &[ErrorKind::AccessDenied],
        "access denied by the storage: bad credentials, no credentials, \
         or no permission (nothing was written)",
    ),
    row(
        UNREACHABLE,
        &[ErrorKind::Unreachable],
        "storage unreachable: connection refused, unknown host, SSH failed, \
         or the server went away and retries did not bring it back",
    ),
    row(
        PUT_ONLY_KEY,
        &[ErrorKind::PutOnlyKey],
        "the key is put-only: it can back up, but this command needs the admin key",
    ),
    row(
        ROLLED_BACK,
        &[ErrorKind::RolledBack],
        "the repository went back since this machine last saw it: a snapshot or \
         prune record it saw is gone with no record that forgot it, its config \
         changed, or a removed key slot is back (`backup` still saved its snapshot)",
    ),
    row(
        ATTENTION,
        &[],
        "`kura status`: backups need attention (the last success is too old, the last \
         run failed, or the last check found damage or is too old); it says which",
    ),
];

const fn row(code: u8, kinds: &'static [ErrorKind], meaning: &'static str) -> ExitCodeRow {
    ExitCodeRow {
        code,
        kinds,
        meaning,
    }
}

/// The exit code of a library error of `kind`: its row in [`TABLE`], or
/// [`ERROR`] for a kind no row names.
pub fn for_kind(kind: ErrorKind) -> u8 {
    TABLE
        .iter()
        .find(|row| row.kinds.contains(&kind))
        .map_or(ERROR, |row| row.code)
}
