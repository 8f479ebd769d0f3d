//! `restore`: writes a snapshot's files, or some of them, below a target
//! directory, with their metadata. Every chunk is authenticated before it
//! is written (the chunk store checks it against its id). Names come from
//! tree blobs whose decoder refuses `/`, `.` and `..`, and nothing already
//! in the target is followed as a symlink, so no name makes restore write
//! outside the target.
//!
//! A restore that is run again over its own, interrupted output does not
//! rewrite files already restored intact: a regular file of the right size
//! whose every data extent hashes to its chunk id (keyed BLAKE3 of the bytes
//! on disk) and whose holes read as zeros is kept, and only its metadata is
//! set. Anything else at a file's path is removed and written anew.
//!
//! Large files are written by several threads at once, in groups of
//! extents at their offsets; holes are skipped, so files stay sparse.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

use rayon::prelude::*;

use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Entry, Extent, Payload};
use crate::id::ChunkId;
use crate::ops::progress::{NoProgress, Progress};
use crate::snapshot::tree;

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
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    /// Files already present and intact (an earlier run wrote them).
    pub files_intact: u64,
    /// Metadata that could not be set (owner, xattrs, times).
    pub warnings: Vec<String>,
}

struct Restorer<'s, 'r> {
    store: &'s ChunkStore<'r>,
    progress: &'s dyn Progress,
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
        let is_file = matches!(entry.payload, Payload::File(_));
        // A regular file already there is checked (and kept if intact)
        // when contents are written.
        if !(is_file && is_regular(path)) {
            clear_for(path, is_dir)?;
        }
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
        let (store, progress) = (self.store, self.progress);
        let owners = self.options.owners;
        let total = self.files.iter().map(|(_, e)| e.meta.size).sum();
        progress.set_total(self.files.len() as u64, total);
        // Small files go in batches of about WRITE_GROUP bytes whose chunks
        // are fetched together (neighbours in a pack with one read: a file
        // of one chunk would otherwise cost a request of its own); a large
        // file is a batch by itself, written by several threads.
        let results: Vec<Result<Vec<FileOutcome>>> = batches(std::mem::take(&mut self.files))
            .into_par_iter()
            .map(|batch| restore_batch(store, progress, owners, batch))
            .collect();
        let results = results
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten();
        for (bytes, warnings) in results {
            match bytes {
                Some(b) => self.report.bytes += b,
                None => self.report.files_intact += 1,
            }
            self.report.warnings.extend(warnings);
        }
        for (first, link) in std::mem::take(&mut self.links) {
            if same_inode(&first, &link) {
                continue;
            }
            clear_for(&link, false)?;
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

/// Data bytes per task when one file is written by several threads.
const WRITE_GROUP: u64 = 8 << 20;

/// What writing does with a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holes {
    /// Leave it (a new file: it stays sparse).
    Skip,
    /// Make it read as zeros (a device or an old file being overwritten).
    Zero,
}

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Extents with their offsets, in groups of about [`WRITE_GROUP`] data
/// bytes, so one large file is written by several threads.
fn extent_groups(extents: &[Extent]) -> Vec<Vec<(u64, Extent)>> {
    let mut groups = vec![Vec::new()];
    let (mut pos, mut in_group) = (0u64, 0u64);
    for e in extents {
        if in_group >= WRITE_GROUP {
            groups.push(Vec::new());
            in_group = 0;
        }
        groups.last_mut().expect("one group").push((pos, *e));
        pos += e.len();
        if let Extent::Data { len, .. } = e {
            in_group += u64::from(*len);
        }
    }
    groups
}

/// Writes `extents` into `file` at their offsets (in parallel for large
/// files). Every chunk is authenticated by the store before it is written.
/// Returns the data bytes written.
fn write_extents(
    store: &ChunkStore<'_>,
    progress: &dyn Progress,
    file: &File,
    path: &Path,
    extents: &[Extent],
    holes: Holes,
) -> Result<u64> {
    extent_groups(extents)
        .into_par_iter()
        .map(|group| {
            let mut data = Vec::with_capacity(group.len());
            for (pos, e) in group {
                match e {
                    Extent::Hole { len } => {
                        progress.bytes(len);
                        if holes == Holes::Zero {
                            zero_range(file, pos, len).map_err(io_err(path))?;
                        }
                    }
                    Extent::Data { id, len } => data.push((id, len, pos)),
                }
            }
            // The group's chunks in one go, written as they come: neighbours
            // in a pack are read together (one request each run, which is
            // what a remote repository needs), and only one run is held.
            let ids: Vec<ChunkId> = data.iter().map(|(id, _, _)| *id).collect();
            let mut written = 0u64;
            store.for_each_chunk(&ids, |k, chunk| {
                let (id, len, pos) = data[k];
                progress.bytes(u64::from(len));
                written += write_chunk(file, path, chunk, &id, len, pos)?;
                Ok(())
            })?;
            Ok(written)
        })
        .sum()
}

/// Makes `len` bytes at `pos` read as zeros: punched out where the file
/// system or device supports it (no space used, or a discard), else
/// written.
fn zero_range(file: &File, pos: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags as F, fallocate};
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let (Ok(off), Ok(n)) = (i64::try_from(pos), i64::try_from(len)) else {
        return Err(std::io::Error::other("range beyond 2^63"));
    };
    if fallocate(
        file,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        off,
        n,
    )
    .is_ok()
    {
        return Ok(());
    }
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], pos + done)?;
        done += n;
    }
    Ok(())
}

/// Writes a new file from its extents; holes are skipped, so it is sparse.
/// Returns the data bytes written.
/// What restoring one file did: data bytes written (`None`: it was
/// already intact), and warnings about its metadata.
type FileOutcome = (Option<u64>, Vec<String>);

/// Splits the queued files into batches: consecutive small files up to
/// [`WRITE_GROUP`] bytes together, each large file alone.
fn batches(files: Vec<(PathBuf, Entry)>) -> Vec<Vec<(PathBuf, Entry)>> {
    let mut out: Vec<Vec<(PathBuf, Entry)>> = Vec::new();
    let mut open: Vec<(PathBuf, Entry)> = Vec::new();
    let mut open_bytes = 0u64;
    for (path, entry) in files {
        let size = entry.meta.size;
        if size >= WRITE_GROUP {
            out.push(vec![(path, entry)]);
            continue;
        }
        if open_bytes + size > WRITE_GROUP && !open.is_empty() {
            out.push(std::mem::take(&mut open));
            open_bytes = 0;
        }
        open_bytes += size;
        open.push((path, entry));
    }
    if !open.is_empty() {
        out.push(open);
    }
    out
}

/// Restores one batch (see [`batches`]).
fn restore_batch(
    store: &ChunkStore<'_>,
    progress: &dyn Progress,
    owners: bool,
    batch: Vec<(PathBuf, Entry)>,
) -> Result<Vec<FileOutcome>> {
    let mut todo = Vec::with_capacity(batch.len());
    for (path, entry) in batch {
        let Payload::File(content) = &entry.payload else {
            return Err(Error::corrupt("only files are queued for writing"));
        };
        let extents = tree::load_extents(store, content, entry.meta.size)?;
        let intact = already_intact(store, &path, &entry, &extents);
        todo.push((path, entry, extents, intact));
    }
    if let [(path, entry, extents, false)] = todo.as_slice() {
        if entry.meta.size >= WRITE_GROUP {
            clear_for(path, false)?;
            let bytes = write_file(store, progress, path, extents, entry.meta.size)?;
            progress.file_done();
            return Ok(vec![(Some(bytes), set_metadata(entry, path, owners))]);
        }
    }
    let ids: Vec<ChunkId> = todo
        .iter()
        .filter(|(_, _, _, intact)| !intact)
        .flat_map(|(_, _, extents, _)| extents.iter())
        .filter_map(|e| match e {
            Extent::Data { id, .. } => Some(*id),
            Extent::Hole { .. } => None,
        })
        .collect();
    let mut chunks = store.get_many(&ids)?.into_iter();
    let mut out = Vec::with_capacity(todo.len());
    for (path, entry, extents, intact) in todo {
        let bytes = if intact {
            progress.bytes(entry.meta.size);
            None
        } else {
            clear_for(&path, false)?;
            Some(write_fetched(
                progress,
                &path,
                &extents,
                entry.meta.size,
                &mut chunks,
            )?)
        };
        progress.file_done();
        out.push((bytes, set_metadata(&entry, &path, owners)));
    }
    Ok(out)
}

/// Writes `data`, the chunk of extent `id` of `len` bytes, at `pos`;
/// returns the bytes written.
fn write_chunk(
    file: &File,
    path: &Path,
    data: &[u8],
    id: &ChunkId,
    len: u32,
    pos: u64,
) -> Result<u64> {
    if data.len() != len as usize {
        return Err(Error::corrupt(format!(
            "chunk {id} has another length than its tree says"
        )));
    }
    file.write_all_at(data, pos).map_err(io_err(path))?;
    Ok(u64::from(len))
}

/// Creates the new file `path`, `size` bytes long (sparse until written).
fn create_sized(path: &Path, size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    file.set_len(size).map_err(io_err(path))?;
    Ok(file)
}

/// Writes a new file from chunks already fetched, in extent order.
fn write_fetched(
    progress: &dyn Progress,
    path: &Path,
    extents: &[Extent],
    size: u64,
    chunks: &mut impl Iterator<Item = Vec<u8>>,
) -> Result<u64> {
    let file = create_sized(path, size)?;
    let (mut pos, mut written) = (0u64, 0u64);
    for e in extents {
        progress.bytes(e.len());
        if let Extent::Data { id, len } = *e {
            let data = chunks
                .next()
                .ok_or_else(|| Error::corrupt("fewer chunks than extents"))?;
            written += write_chunk(&file, path, &data, &id, len, pos)?;
        }
        pos += e.len();
    }
    Ok(written)
}

fn write_file(
    store: &ChunkStore<'_>,
    progress: &dyn Progress,
    path: &Path,
    extents: &[Extent],
    size: u64,
) -> Result<u64> {
    let file = create_sized(path, size)?;
    write_extents(store, progress, &file, path, extents, Holes::Skip)
}

/// Whether the regular file at `path` already holds `entry`'s content:
/// the right size, each data extent hashing to its chunk id, each hole
/// reading as zeros (only the file's data ranges inside a hole are read).
/// A file with other hard links is only trusted when the entry has them
/// too, so metadata is never set on an inode shared with a file elsewhere.
fn already_intact(store: &ChunkStore<'_>, path: &Path, entry: &Entry, extents: &[Extent]) -> bool {
    let Ok(md) = fs::symlink_metadata(path) else {
        return false;
    };
    if !md.is_file() || md.len() != entry.meta.size || (md.nlink() > 1 && entry.meta.nlink < 2) {
        return false;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    let data = crate::source::data_ranges(&file, md.len());
    let mut buf = Vec::new();
    let mut pos = 0u64;
    for e in extents {
        let ok = match *e {
            Extent::Data { id, len } => {
                buf.resize(len as usize, 0);
                file.read_exact_at(&mut buf, pos).is_ok() && store.chunk_id(&buf) == id
            }
            Extent::Hole { len } => data.iter().all(|&(start, n)| {
                let (a, b) = (start.max(pos), (start + n).min(pos + len));
                a >= b || reads_zeros(&file, a, b - a)
            }),
        };
        if !ok {
            return false;
        }
        pos += e.len();
    }
    true
}

fn reads_zeros(file: &File, pos: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], pos + done).is_err()
            || buf[..n].iter().any(|&b| b != 0)
        {
            return false;
        }
        done += n as u64;
    }
    true
}

/// One file of a snapshot, typically a disk image, and where to write it.
#[derive(Debug, Clone, Default)]
pub struct ImageRestoreOptions {
    /// The file in the snapshot, e.g. `/dev/vdb` (with or without the
    /// leading `/`).
    pub path: PathBuf,
    /// A block device or a regular file ([`write_image`]).
    pub to: PathBuf,
}

/// What [`restore_image`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageRestoreReport {
    /// The image's size.
    pub size: u64,
    /// Data bytes written (holes not counted).
    pub bytes: u64,
}

/// Finds `options.path` in the snapshot tree `root` and writes it to
/// `options.to` as [`write_image`] does.
///
/// # Errors
/// [`ErrorKind::NotFound`] if the snapshot has no such path; as
/// [`write_image`].
pub fn restore_image(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &ImageRestoreOptions,
    progress: &dyn Progress,
) -> Result<ImageRestoreReport> {
    let entry = tree::lookup(store, *root, &super::snapshot_path(&options.path))?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such path in the snapshot"))?;
    let bytes = write_image(store, &entry, &options.to, progress)?;
    Ok(ImageRestoreReport {
        size: entry.meta.size,
        bytes,
    })
}

/// Writes one file of a snapshot, typically a disk image, to `dest`:
/// onto a block device in place (holes are zeroed; the device must be at
/// least as large as the image), or into a regular file, created or
/// replaced, with holes left sparse. The data is synced before returning.
/// Returns the data bytes written.
///
/// # Errors
/// `InvalidInput` if the entry is not a regular file, `dest` is neither a
/// block device nor a regular file, or the device is too small; missing or
/// damaged blobs; write errors.
pub fn write_image(
    store: &ChunkStore<'_>,
    entry: &Entry,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let Payload::File(content) = &entry.payload else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file in the snapshot",
        ));
    };
    let size = entry.meta.size;
    let extents = tree::load_extents(store, content, size)?;
    progress.set_total(1, size);
    let err = io_err(dest);
    // A device is written in place and its holes zeroed; a file is created
    // (or replaced) at full length, so its holes stay sparse.
    let (file, holes) = match fs::metadata(dest) {
        Ok(md) if md.file_type().is_block_device() => {
            let mut file = OpenOptions::new().write(true).open(dest).map_err(&err)?;
            let capacity = file.seek(SeekFrom::End(0)).map_err(&err)?;
            if capacity < size {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} holds {capacity} bytes; the image has {size}",
                        dest.display()
                    ),
                ));
            }
            (file, Holes::Zero)
        }
        Ok(md) if !md.is_file() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is neither a block device nor a regular file",
                    dest.display()
                ),
            ));
        }
        _ => {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(dest)
                .map_err(&err)?;
            file.set_len(size).map_err(&err)?;
            (file, Holes::Skip)
        }
    };
    let written = write_extents(store, progress, &file, dest, &extents, holes)?;
    file.sync_all().map_err(&err)?;
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
    restore_with_progress(store, root, options, &NoProgress)
}

/// [`restore`], reporting progress to `progress` (the total is set once
/// the tree has been walked, before contents are written).
///
/// # Errors
/// As [`restore`].
pub fn restore_with_progress(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // A file (or anything but a directory) at the target is the caller's
    // mistake, not a name clash in the repository (AlreadyExists, exit 16).
    if fs::symlink_metadata(&options.target).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the restore target {} exists and is not a directory",
                options.target.display()
            ),
        ));
    }
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
        progress,
        options,
        include,
        first_links: HashMap::new(),
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        report: RestoreReport::default(),
    };
    r.directory(root, &options.target, &mut Vec::new())?;
    // Files are written by more threads than cores when the repository
    // is remote: most of their time is waiting for reads.
    super::with_io_threads(store.read_concurrency(), || r.finish())?;
    if r.report.files + r.report.dirs + r.report.others == 0 && !options.include.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no path of the snapshot matches the includes",
        ));
    }
    Ok(r.report)
}
