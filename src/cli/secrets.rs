//! Layer 6 (CLI): how the kura process holds its secrets. Owns two
//! invariants, both set up in `main` before any password is read and
//! before any thread exists:
//!
//! - The process is not dumpable and its core size limit is 0
//!   ([`harden_process`]): no core file can hold the master secret, and
//!   another process of the same user can neither ptrace kura nor read its
//!   `/proc/PID/mem` or `/proc/PID/environ` (only root can). Children
//!   inherit the core limit of 0; they are dumpable again after `exec`.
//! - No child inherits a password: every `KURA_*PASSWORD*` variable
//!   (`KURA_PASSWORD`, `_FILE`, `_COMMAND`, `KURA_TO_PASSWORD*`,
//!   `KURA_NEW_PASSWORD*`) is taken out of the process environment
//!   ([`take_password_variables`]) after clap has read its own and kept
//!   here for [`super::password`], so a dump command, the password command
//!   and ssh all start without them. The initial environment block that
//!   the kernel shows in `/proc/PID/environ` still holds them; the first
//!   invariant makes that file root's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

use zeroize::Zeroizing;

/// The password variables taken out of the environment, with their values.
static TAKEN: OnceLock<Vec<(OsString, Zeroizing<Vec<u8>>)>> = OnceLock::new();

/// Makes the process non-dumpable and sets its core size limit to 0,
/// soft and hard. A failure is only warned about: it costs this defence,
/// not the backup.
pub fn harden_process() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("could not make kura non-dumpable (prctl PR_SET_DUMPABLE): {e}");
    }
    let core = nix::sys::resource::Resource::RLIMIT_CORE;
    if let Err(e) = nix::sys::resource::setrlimit(core, 0, 0) {
        tracing::warn!("could not disable core dumps (setrlimit RLIMIT_CORE): {e}");
    }
}

/// Takes every `KURA_*PASSWORD*` variable out of the process environment
/// and keeps its value for [`password_variable`]. Call once, from `main`,
/// after the command line is parsed (clap reads `KURA_PASSWORD_FILE` and
/// `KURA_PASSWORD_COMMAND` itself) and before anything starts a thread.
/// If another thread exists after all, nothing is removed (that would
/// not be sound) and a warning says so.
pub fn take_password_variables() {
    let names: Vec<OsString> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| kura::source::command::is_password_variable(name))
        .collect();
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads != 1 {
        tracing::warn!(
            "{threads} threads at start-up: the KURA_*PASSWORD* variables stay in \
             the environment and children inherit them"
        );
        return;
    }
    let mut taken = Vec::with_capacity(names.len());
    for name in names {
        if let Some(value) = std::env::var_os(&name) {
            taken.push((name.clone(), Zeroizing::new(value.into_vec())));
        }
        remove_from_environment(&name);
    }
    let _ = TAKEN.set(taken);
}

/// `std::env::remove_var`, unsafe since edition 2024 because another
/// thread could read the environment meanwhile.
#[allow(unsafe_code)]
fn remove_from_environment(name: &std::ffi::OsStr) {
    // SAFETY: called only from `take_password_variables`, which checked
    // that this is the process's one thread: nothing reads or writes the
    // environment concurrently.
    unsafe { std::env::remove_var(name) };
}

/// The value `name` had at start-up if it was a password variable taken
/// out of the environment, else its value in the environment now.
pub fn password_variable(name: &str) -> Option<Zeroizing<Vec<u8>>> {
    let taken = TAKEN
        .get()
        .and_then(|t| t.iter().find(|(n, _)| n == name))
        .map(|(_, v)| v.clone());
    taken.or_else(|| std::env::var_os(name).map(|v| Zeroizing::new(v.into_vec())))
}
