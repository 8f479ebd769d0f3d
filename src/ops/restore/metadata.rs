//! Layer 5, part of `restore`: owners, modes, xattrs and times of what
//! restore made. Owns two rules. Metadata is set on the open descriptor
//! of a file or directory (`fchown`, `fchmod`, `fsetxattr`, `futimens`),
//! and for a symlink or special file by its name relative to its
//! directory's descriptor without following it, so no call reaches
//! outside the target. And privileges are not restored by accident:
//! setuid and setgid bits of regular files and `security.capability`
//! xattrs are dropped (and counted) unless owners are restored, the
//! restore runs as root and the caller asked to keep them.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{
    AtFlags, CWD, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, chmodat, chownat,
    fchmod, fchown, fsetxattr, futimens, openat, setxattr, utimensat,
};

use crate::format::tree::{Entry, Payload};

/// The xattr that gives a file capabilities when executed.
const CAPABILITY: &[u8] = b"security.capability";

/// Setuid and setgid.
const SET_ID: u32 = 0o6000;

/// What restore sets of the snapshot's metadata.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Set owners (root only; otherwise files belong to the restoring user).
    pub owners: bool,
    /// Keep setuid/setgid bits and file capabilities: only when owners are
    /// set, by root, and asked for.
    pub keep_privileges: bool,
}

impl Policy {
    pub fn new(owners: bool, keep_setuid: bool) -> Self {
        let root = nix::unistd::geteuid().is_root();
        Self {
            owners,
            keep_privileges: owners && keep_setuid && root,
        }
    }
}

/// What setting one entry's metadata dropped, and what could not be set.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub setuid_dropped: bool,
    pub capability_dropped: bool,
    pub warnings: Vec<String>,
}

impl Applied {
    fn check(&mut self, what: &str, shown: &dyn Fn() -> String, result: rustix::io::Result<()>) {
        if let Err(e) = result {
            let message = format!(
                "{}: cannot set {what}: {}",
                shown(),
                std::io::Error::from(e)
            );
            tracing::warn!("{message}");
            self.warnings.push(message);
        }
    }
}

/// The mode to set: without setuid/setgid on a regular file unless the
/// policy keeps them.
fn mode_of(entry: &Entry, policy: Policy, applied: &mut Applied) -> Mode {
    let mut mode = entry.meta.mode & 0o7777;
    if matches!(entry.payload, Payload::File(_)) && mode & SET_ID != 0 && !policy.keep_privileges {
        mode &= !SET_ID;
        applied.setuid_dropped = true;
    }
    Mode::from_raw_mode(mode)
}

fn times_of(entry: &Entry) -> Timestamps {
    let (sec, nsec) = entry.meta.mtime;
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn ids_of(entry: &Entry) -> (Option<Uid>, Option<Gid>) {
    let m = &entry.meta;
    (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
}

/// The xattrs to set, each with whether it is; a capability is dropped
/// unless the policy keeps privileges.
fn xattrs_of<'e>(
    entry: &'e Entry,
    policy: Policy,
    applied: &mut Applied,
) -> Vec<(&'e OsStr, &'e [u8])> {
    let mut out = Vec::with_capacity(entry.meta.xattrs.len());
    for x in &entry.meta.xattrs {
        if x.name == CAPABILITY && !policy.keep_privileges {
            applied.capability_dropped = true;
        } else {
            out.push((OsStr::from_bytes(&x.name), x.value.as_slice()));
        }
    }
    out
}

/// Owner, mode, xattrs and times of a regular file or directory, on its
/// open descriptor, in that order: a change of owner clears setuid bits
/// and capabilities, and times must come last.
pub(super) fn on_fd(
    fd: BorrowedFd<'_>,
    entry: &Entry,
    policy: Policy,
    shown: &dyn Fn() -> String,
) -> Applied {
    let mut a = Applied::default();
    if policy.owners {
        let (uid, gid) = ids_of(entry);
        a.check("owner", shown, fchown(fd, uid, gid));
    }
    let mode = mode_of(entry, policy, &mut a);
    a.check("mode", shown, fchmod(fd, mode));
    for (name, value) in xattrs_of(entry, policy, &mut a) {
        let what = format!("xattr {}", name.to_string_lossy());
        a.check(
            &what,
            shown,
            fsetxattr(fd, name, value, XattrFlags::empty()),
        );
    }
    a.check("times", shown, futimens(fd, &times_of(entry)));
    a
}

/// The same for a symlink or special file `name` in `dir`, never
/// following it: owner and times by name with `AT_SYMLINK_NOFOLLOW`;
/// mode and xattrs through an `O_PATH` descriptor of the name itself
/// (its `/proc/self/fd` link leads to that inode, not through it).
pub(super) fn at_name(
    dir: BorrowedFd<'_>,
    name: &[u8],
    entry: &Entry,
    policy: Policy,
    shown: &dyn Fn() -> String,
) -> Applied {
    let mut a = Applied::default();
    let n = OsStr::from_bytes(name);
    if policy.owners {
        let (uid, gid) = ids_of(entry);
        a.check(
            "owner",
            shown,
            chownat(dir, n, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
        );
    }
    let is_link = matches!(entry.payload, Payload::Symlink(_));
    let xattrs = xattrs_of(entry, policy, &mut a);
    if !is_link || !xattrs.is_empty() {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(dir, n, flags, Mode::empty()) {
            Ok(fd) => {
                let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
                if !is_link {
                    let mode = mode_of(entry, policy, &mut a);
                    a.check(
                        "mode",
                        shown,
                        chmodat(CWD, proc.as_str(), mode, AtFlags::empty()),
                    );
                }
                for (x, value) in xattrs {
                    let what = format!("xattr {}", x.to_string_lossy());
                    a.check(
                        &what,
                        shown,
                        setxattr(proc.as_str(), x, value, XattrFlags::empty()),
                    );
                }
            }
            Err(e) => a.check("mode or xattrs", shown, Err(e)),
        }
    }
    a.check(
        "times",
        shown,
        utimensat(dir, n, &times_of(entry), AtFlags::SYMLINK_NOFOLLOW),
    );
    a
}
