//! Source layer: streams stored as one file of a snapshot, a command's
//! standard output (`--stdin-from-command`, a database dump) or standard
//! input: where such a file appears, its metadata, and running the
//! command.
//!
//! Owned invariants: a command's output counts only if the command exited
//! successfully; a failed command is an error carrying the end of its
//! standard error, so that the caller commits nothing. A command never
//! inherits a password: every `KURA_*PASSWORD*` variable
//! ([`is_password_variable`]) is removed from its environment (the kura
//! binary has already taken them out of its own; this holds for any other
//! caller of the library too).

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};

use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::Metadata;

/// Bytes of a failed command's standard error quoted in the error.
const STDERR_TAIL: usize = 4096;

/// Whether the environment variable `name` can hold a password or say
/// where one is: a name starting `KURA_` that contains `PASSWORD`
/// (`KURA_PASSWORD`, `KURA_PASSWORD_FILE`, `KURA_TO_PASSWORD_COMMAND`,
/// `KURA_NEW_PASSWORD`, ...).
pub fn is_password_variable(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with("KURA_") && n.contains("PASSWORD"))
}

/// Runs `cmd` with `sh -c`, standard input closed, and hands its standard
/// output to `consume`, which reads it to the end (or drops it: the command
/// then meets a broken pipe). Standard error is collected meanwhile.
///
/// # Errors
/// [`ErrorKind::Io`] if the command cannot be started or waited for;
/// [`ErrorKind::InvalidInput`] if it exits unsuccessfully, with the end of
/// its standard error; else `consume`'s.
pub fn run_command<T>(cmd: &str, consume: impl FnOnce(ChildStdout) -> Result<T>) -> Result<T> {
    let mut command = Command::new("sh");
    for (name, _) in std::env::vars_os().filter(|(n, _)| is_password_variable(n)) {
        command.env_remove(name);
    }
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let stdout = child.stdout.take().expect("piped");
    let consumed = consume(stdout);
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for {cmd:?}"), e))?;
    let text = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(STDERR_TAIL)..])
            .trim()
            .to_owned();
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("command {cmd:?} failed ({status}); nothing was committed: {tail}"),
        ));
    }
    consumed
}

/// The absolute in-snapshot path of a stream named `name` (`db/site.sql`
/// becomes `/db/site.sql`).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a name with `..` or without a file name.
pub fn stream_path(name: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("stream name {} may not contain ..", name.display()),
                ));
            }
        }
    }
    if out.as_os_str().len() == 1 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a stream needs a file name",
        ));
    }
    Ok(out)
}

/// Metadata of a stream's file (or of a directory leading to it): owned by
/// the backing-up user, timestamped `now` (nanoseconds since the epoch).
pub fn stream_metadata(mode: u32, size: u64, now: i64) -> Metadata {
    let time = (
        now.div_euclid(1_000_000_000),
        u32::try_from(now.rem_euclid(1_000_000_000)).unwrap_or(0),
    );
    Metadata {
        mode,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime: time,
        ctime: time,
        nlink: 1,
        size,
        ..Metadata::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_become_absolute_and_refuse_dotdot() {
        assert_eq!(
            stream_path(Path::new("db/site.sql")).unwrap(),
            PathBuf::from("/db/site.sql")
        );
        assert_eq!(stream_path(Path::new("/./x")).unwrap(), PathBuf::from("/x"));
        for bad in ["../x", "a/../b", "", "/"] {
            let e = stream_path(Path::new(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn a_failed_command_is_an_error_with_its_stderr() {
        let e = run_command("echo oops >&2; exit 3", |mut out| {
            let mut s = Vec::new();
            out.read_to_end(&mut s).unwrap();
            Ok(s)
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("oops"), "{e}");
        let out = run_command("printf hi", |mut out| {
            let mut s = Vec::new();
            out.read_to_end(&mut s).unwrap();
            Ok(s)
        })
        .unwrap();
        assert_eq!(out, b"hi");
    }
}
