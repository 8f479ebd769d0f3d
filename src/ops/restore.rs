//! `restore`: writes a snapshot's files, or some of them, below a target
//! directory, with their metadata. Every chunk is authenticated before it
//! is written (the chunk store checks it against its id). Names come from
//! tree blobs whose decoder refuses `/`, `.` and `..`, and nothing already
//! in the target is followed as a symlink, so no name makes restore write
//! outside the target.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

use rayon::prelude::*;

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Entry, Extent, Payload};
use crate::id::ChunkId;
use crate::tree;

/// Where and what to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these paths (absolute, as in the snapshot) and what is
    /// below them; empty means everything.
    pub include: Vec<PathBuf>,
    /// Set owners (needs root); otherwise files belong to the restoring user.
    pub owners: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    /// Metadata that could not be set (owner, xattrs, times).
    pub warnings: Vec<String>,
}

struct Restorer<'s, 'r> {
    store: &'s ChunkStore<'r>,
    options: &'s RestoreOptions,
    include: Vec<Vec<Vec<u8>>>,
    /// First restored path of each multiply linked inode, by (dev, ino).
    first_links: HashMap<(u64, u64), PathBuf>,
    /// Files to write (in parallel, after the walk).
    files: Vec<(PathBuf, Entry)>,
    /// Hard links to make once their first path is written: (first, link).
    links: Vec<(PathBuf, PathBuf)>,
    /// Directories whose metadata is set last, children before parents.
    dirs: Vec<(PathBuf, Entry)>,
    report: RestoreReport,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

/// Removes whatever is at `path` unless it is a directory we can descend
/// into; never follows a symlink.
fn clear_for(path: &Path, want_dir: bool) -> Result<()> {
    let Ok(md) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if md.is_dir() && !md.file_type().is_symlink() {
        if want_dir {
            return Ok(());
        }
        return fs::remove_dir_all(path).map_err(io_err(path));
    }
    fs::remove_file(path).map_err(io_err(path))
}

impl Restorer<'_, '_> {
    /// Whether `comps` is included, and whether something below it may be.
    fn wanted(&self, comps: &[Vec<u8>]) -> (bool, bool) {
        if self.include.is_empty() {
            return (true, true);
        }
        let whole = self.include.iter().any(|inc| comps.starts_with(inc));
        let partly = self.include.iter().any(|inc| inc.starts_with(comps));
        (whole, whole || partly)
    }

    fn directory(&mut self, id: &ChunkId, dir: &Path, comps: &mut Vec<Vec<u8>>) -> Result<()> {
        for entry in tree::load_directory(self.store, id)? {
            comps.push(entry.name.clone());
            let (whole, partly) = self.wanted(comps);
            let path = dir.join(OsStr::from_bytes(&entry.name));
            if whole {
                self.entry(&entry, &path, comps)?;
            } else if partly && let Payload::Dir(sub) = &entry.payload {
                clear_for(&path, true)?;
                fs::create_dir_all(&path).map_err(io_err(&path))?;
                self.directory(sub, &path, comps)?;
            }
            comps.pop();
        }
        Ok(())
    }

    fn entry(&mut self, entry: &Entry, path: &Path, comps: &mut Vec<Vec<u8>>) -> Result<()> {
        let m = &entry.meta;
        let is_dir = matches!(entry.payload, Payload::Dir(_));
        clear_for(path, is_dir)?;
        match &entry.payload {
            Payload::Dir(id) => {
                self.report.dirs += 1;
                if !path.is_dir() {
                    fs::create_dir(path).map_err(io_err(path))?;
                }
                self.directory(id, path, comps)?;
                self.dirs.push((path.to_path_buf(), entry.clone()));
                return Ok(());
            }
            Payload::File(_) => {
                self.report.files += 1;
                if m.nlink > 1 {
                    if let Some(first) = self.first_links.get(&(m.dev, m.ino)) {
                        self.links.push((first.clone(), path.to_path_buf()));
                        return Ok(());
                    }
                    self.first_links.insert((m.dev, m.ino), path.to_path_buf());
                }
                self.files.push((path.to_path_buf(), entry.clone()));
                return Ok(());
            }
            Payload::Symlink(target) => {
                self.report.others += 1;
                symlink(OsStr::from_bytes(target), path).map_err(io_err(path))?;
            }
            Payload::CharDevice(_) | Payload::BlockDevice(_) | Payload::Fifo | Payload::Socket => {
                self.report.others += 1;
                let kind = match entry.payload {
                    Payload::CharDevice(_) => SFlag::S_IFCHR,
                    Payload::BlockDevice(_) => SFlag::S_IFBLK,
                    Payload::Fifo => SFlag::S_IFIFO,
                    _ => SFlag::S_IFSOCK,
                };
                let rdev = if let Payload::CharDevice(r) | Payload::BlockDevice(r) = entry.payload {
                    r
                } else {
                    0
                };
                if let Err(e) = mknod(path, kind, Mode::from_bits_truncate(0o600), rdev) {
                    self.warn(format!(
                        "{}: cannot create special file: {e}",
                        path.display()
                    ));
                    return Ok(());
                }
            }
        }
        let warnings = set_metadata(entry, path, self.options.owners);
        self.report.warnings.extend(warnings);
        Ok(())
    }

    /// Writes the collected files in parallel, then the hard links, then
    /// the directories' metadata (after their contents, so their times stay).
    fn finish(&mut self) -> Result<()> {
        let store = self.store;
        let owners = self.options.owners;
        let results: Vec<Result<(u64, Vec<String>)>> = std::mem::take(&mut self.files)
            .into_par_iter()
            .map(|(path, entry)| {
                let Payload::File(content) = &entry.payload else {
                    return Err(Error::corrupt("only files are queued for writing"));
                };
                let extents = tree::load_extents(store, content, entry.meta.size)?;
                let bytes = write_file(store, &path, &extents, entry.meta.size)?;
                Ok((bytes, set_metadata(&entry, &path, owners)))
            })
            .collect();
        for r in results {
            let (bytes, warnings) = r?;
            self.report.bytes += bytes;
            self.report.warnings.extend(warnings);
        }
        for (first, link) in std::mem::take(&mut self.links) {
            fs::hard_link(&first, &link).map_err(io_err(&link))?;
        }
        for (path, entry) in std::mem::take(&mut self.dirs) {
            let warnings = set_metadata(&entry, &path, owners);
            self.report.warnings.extend(warnings);
        }
        Ok(())
    }

    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.report.warnings.push(message);
    }
}

/// Writes a file's extents; holes are skipped, so the file is sparse.
/// Returns the data bytes written.
fn write_file(store: &ChunkStore<'_>, path: &Path, extents: &[Extent], size: u64) -> Result<u64> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut pos = 0u64;
    let mut written = 0u64;
    for e in extents {
        match *e {
            Extent::Hole { len } => pos += len,
            Extent::Data { id, len } => {
                let data = store.get(&id)?;
                if data.len() != len as usize {
                    return Err(Error::corrupt(format!(
                        "chunk {id} has another length than its tree says"
                    )));
                }
                file.seek(SeekFrom::Start(pos)).map_err(io_err(path))?;
                file.write_all(&data).map_err(io_err(path))?;
                pos += u64::from(len);
                written += u64::from(len);
            }
        }
    }
    file.set_len(size).map_err(io_err(path))?;
    Ok(written)
}

/// Owner, mode, xattrs and times, in that order (chown clears setuid bits,
/// and times must come last). Returns what could not be set.
fn set_metadata(entry: &Entry, path: &Path, owners: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let m = &entry.meta;
    let is_link = matches!(entry.payload, Payload::Symlink(_));
    if owners {
        let flag = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let (uid, gid) = (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)));
        if let Err(e) = fchownat(nix::fcntl::AT_FDCWD, path, uid, gid, flag) {
            warnings.push(format!("{}: cannot set owner: {e}", path.display()));
        }
    }
    if !is_link && let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(m.mode)) {
        warnings.push(format!("{}: cannot set mode: {e}", path.display()));
    }
    for x in &m.xattrs {
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name), &x.value) {
            let name = String::from_utf8_lossy(&x.name);
            warnings.push(format!("{}: cannot set xattr {name}: {e}", path.display()));
        }
    }
    let ts = |(sec, nsec): (i64, u32)| TimeSpec::new(sec, i64::from(nsec));
    let times = utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts(m.mtime),
        &ts(m.mtime),
        UtimensatFlags::NoFollowSymlink,
    );
    if let Err(e) = times {
        warnings.push(format!("{}: cannot set times: {e}", path.display()));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    warnings
}

/// Restores the tree `root` of a snapshot below `options.target`.
///
/// # Errors
/// A missing or damaged blob, or a target that cannot be written.
pub fn restore(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    fs::create_dir_all(&options.target).map_err(io_err(&options.target))?;
    let include = options
        .include
        .iter()
        .map(|p| {
            p.components()
                .skip(1)
                .map(|c| c.as_os_str().as_bytes().to_vec())
                .collect()
        })
        .collect();
    let mut r = Restorer {
        store,
        options,
        include,
        first_links: HashMap::new(),
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        report: RestoreReport::default(),
    };
    r.directory(root, &options.target, &mut Vec::new())?;
    r.finish()?;
    if r.report.files + r.report.dirs + r.report.others == 0 && !options.include.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no path of the snapshot matches the includes",
        ));
    }
    Ok(r.report)
}
