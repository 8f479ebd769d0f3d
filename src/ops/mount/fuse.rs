//! Operations layer, `mount`: the FUSE glue. Each kernel request becomes a
//! job for the view's worker threads (so a slow remote read of one file
//! does not hold up a listing of another), answered there; errors become
//! errno values: missing names ENOENT, unreadable data EIO, every write
//! EROFS. Attributes of tree entries are cached by the kernel for an hour
//! (snapshots never change); names in the directories above the snapshots
//! are not cached, so new snapshots show at once.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use super::MountOptions;
use super::content::{SEEK_DATA, SEEK_HOLE};
use super::inodes::{Node, NodeKind, View};
use crate::error::{Error, ErrorKind};
use crate::format::tree::{Content, Entry, Extent, Payload};

/// A request to answer on a worker thread.
pub type Job = Box<dyn FnOnce(&View<'_>) + Send>;

const TREE_TTL: Duration = Duration::from_secs(3600);

/// The kernel's side of the mount: hands each request to the workers.
pub struct KuraFs {
    jobs: mpsc::Sender<Job>,
}

impl KuraFs {
    pub fn new(jobs: mpsc::Sender<Job>) -> Self {
        Self { jobs }
    }

    /// Queues `job`; if the workers are gone the reply is dropped, which
    /// answers EIO.
    fn run(&self, job: impl FnOnce(&View<'_>) + Send + 'static) {
        let _ = self.jobs.send(Box::new(job));
    }
}

/// Mount options: read-only, no devices, no set-uid; others let in only
/// when asked.
pub fn config(options: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("kura".into()),
        MountOption::Subtype("kura".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    config
}

/// The errno a library error answers a request with (and a warning for
/// what is not simply absent).
fn errno(what: &str, e: &Error) -> Errno {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::Corrupt => {
            tracing::warn!("{what}: {e}");
            Errno::EIO
        }
        ErrorKind::InvalidInput => Errno::EINVAL,
        _ => {
            tracing::warn!("{what}: {e}");
            Errno::EIO
        }
    }
}

fn time(t: (i64, u32)) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.1));
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.0.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + nanos
    }
}

/// `st_rdev` as stored (glibc's encoding) in the kernel's 32-bit form.
fn rdev32(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

/// Bytes a file's content occupies (holes take none).
fn stored_bytes(entry: &Entry) -> u64 {
    match &entry.payload {
        Payload::File(Content::Inline(extents)) => extents
            .iter()
            .filter(|e| matches!(e, Extent::Data { .. }))
            .map(Extent::len)
            .sum(),
        _ => entry.meta.size,
    }
}

fn attr(view: &View<'_>, ino: u64, node: &Node) -> FileAttr {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let newest = view.catalog(false).newest_time();
    let dated = time((
        newest.div_euclid(1_000_000_000),
        newest.rem_euclid(1_000_000_000) as u32,
    ));
    let mut a = FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: dated,
        mtime: dated,
        ctime: dated,
        crtime: dated,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    match &node.kind {
        NodeKind::Virtual(_) => {}
        NodeKind::Link(target) => {
            (a.kind, a.perm, a.nlink) = (FileType::Symlink, 0o777, 1);
            a.size = target.len() as u64;
        }
        NodeKind::Tree(e) => tree_attr(&mut a, e),
    }
    a
}

fn tree_attr(a: &mut FileAttr, e: &Entry) {
    let m = &e.meta;
    a.kind = match &e.payload {
        Payload::File(_) => FileType::RegularFile,
        Payload::Dir(_) => FileType::Directory,
        Payload::Symlink(_) => FileType::Symlink,
        Payload::CharDevice(_) => FileType::CharDevice,
        Payload::BlockDevice(_) => FileType::BlockDevice,
        Payload::Fifo => FileType::NamedPipe,
        Payload::Socket => FileType::Socket,
    };
    a.size = match &e.payload {
        Payload::Symlink(t) => t.len() as u64,
        _ => m.size,
    };
    a.blocks = stored_bytes(e).div_ceil(512);
    (a.mtime, a.ctime) = (time(m.mtime), time(m.ctime));
    a.atime = a.mtime;
    a.perm = (m.mode & 0o7777) as u16;
    a.nlink = m.nlink.max(1);
    (a.uid, a.gid) = (m.uid, m.gid);
    if let Payload::CharDevice(d) | Payload::BlockDevice(d) = e.payload {
        a.rdev = rdev32(d);
    }
}

/// How long the kernel may keep a node's name and attributes: an hour
/// inside a snapshot, not at all above (where names change meaning).
fn ttl(view: &View<'_>, node: &Node) -> Duration {
    let stable = |n: &Node| matches!(n.kind, NodeKind::Tree(_));
    let parent_stable = view.node(node.parent).is_some_and(|p| stable(&p));
    if stable(node) && parent_stable {
        TREE_TTL
    } else {
        Duration::ZERO
    }
}

/// Answers an xattr request for `data` (`size` 0 asks for the length).
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

fn xattrs(node: &Node) -> &[crate::format::tree::Xattr] {
    match &node.kind {
        NodeKind::Tree(e) => &e.meta.xattrs,
        _ => &[],
    }
}

impl Filesystem for KuraFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger kernel readahead: fewer, larger requests for a reader.
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.run(move |v| match v.lookup(parent.0, &name) {
            Ok(Some((ino, node))) => {
                reply.entry(&ttl(v, &node), &attr(v, ino, &node), Generation(0));
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&v.path(parent.0), &e)),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.run(move |v| v.forget(ino.0, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.run(move |v| match v.node(ino.0) {
            Some(node) => reply.attr(&ttl(v, &node), &attr(v, ino.0, &node)),
            None => reply.error(Errno::ENOENT),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run(move |v| match v.node(ino.0).as_deref().map(|n| &n.kind) {
            Some(
                NodeKind::Link(t)
                | NodeKind::Tree(Entry {
                    payload: Payload::Symlink(t),
                    ..
                }),
            ) => reply.data(t),
            _ => reply.error(Errno::EINVAL),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        self.run(move |v| match v.open(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) if e.kind() == ErrorKind::InvalidInput => reply.error(Errno::EACCES),
            Err(e) => reply.error(errno(&v.path(ino.0), &e)),
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The view warns about damage with the pack's name itself.
        self.run(move |v| match v.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) if e.kind() == ErrorKind::InvalidInput => reply.error(Errno::EBADF),
            Err(e) => {
                tracing::debug!("{}: {e}", v.path(ino.0));
                reply.error(Errno::EIO);
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // nothing is ever written
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.run(move |v| {
            v.release(fh.0);
            reply.ok();
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.run(move |v| match v.list(ino.0) {
            Ok(Some(entries)) => {
                for (i, (child, node, name)) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = attr(v, *child, node).kind;
                    if reply.add(INodeNo(*child), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Ok(None) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&v.path(ino.0), &e)),
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        self.run(move |v| {
            let Some(node) = v.node(ino.0) else {
                return reply.error(Errno::ENOENT);
            };
            match xattrs(&node).iter().find(|x| x.name == name) {
                Some(x) => reply_xattr(reply, size, &x.value),
                None => reply.error(Errno::ENODATA),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.run(move |v| {
            let Some(node) = v.node(ino.0) else {
                return reply.error(Errno::ENOENT);
            };
            let mut names = Vec::new();
            for x in xattrs(&node) {
                names.extend_from_slice(&x.name);
                names.push(0);
            }
            reply_xattr(reply, size, &names);
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return reply.error(Errno::EINVAL);
        }
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        self.run(move |v| match v.seek(fh.0, offset, whence) {
            Ok(Some(at)) => reply.offset(i64::try_from(at).unwrap_or(i64::MAX)),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) if e.kind() == ErrorKind::InvalidInput => reply.error(Errno::EBADF),
            Err(e) => {
                tracing::debug!("{}: {e}", v.path(ino.0));
                reply.error(Errno::EIO);
            }
        });
    }

    // Every write is refused (the mount is read-only, so the kernel
    // mostly refuses before asking).

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_keep_major_and_minor() {
        // makedev(8, 1) and makedev(259, 70000) in glibc's encoding.
        let glibc = |major: u64, minor: u64| {
            (minor & 0xff)
                | ((major & 0xfff) << 8)
                | ((minor & !0xff) << 12)
                | ((major & !0xfff) << 32)
        };
        assert_eq!(rdev32(glibc(8, 1)), (8 << 8) | 1);
        let r = rdev32(glibc(259, 70_000));
        assert_eq!((r >> 8) & 0xfff, 259);
        assert_eq!((r & 0xff) | ((r >> 12) & !0xff), 70_000);
    }
}
