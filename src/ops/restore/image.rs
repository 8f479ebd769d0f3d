//! Layer 5, part of `restore`: one file of a snapshot, typically a disk
//! image, written to a block device in place or to a regular file. The
//! destination is named by the caller and opened by path, but a symlink
//! at its last component is not followed (`O_NOFOLLOW`) unless root owns
//! it and it leads to a block device, as udev's `/dev/disk/by-id/...`
//! names do: a link another user planted (say in `/tmp`) is refused,
//! whatever it points at.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::contents::{Holes, write_lists};
use crate::chunkstore::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Entry, Payload};
use crate::id::ChunkId;
use crate::ops::progress::Progress;
use crate::snapshot::tree;

/// The block device a symlink at `link` leads to, if root owns the link
/// (`md`, not followed) and it resolves to a block device.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for any other symlink.
fn device_behind_link(link: &Path, md: &fs::Metadata) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let refused = |why: &str| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a symlink {why}, not followed: give the device or file itself",
                link.display()
            ),
        )
    };
    if md.uid() != 0 {
        return Err(refused("that root does not own"));
    }
    let resolved = fs::canonicalize(link).map_err(|_| refused("that leads nowhere"))?;
    match fs::symlink_metadata(&resolved) {
        Ok(target) if target.file_type().is_block_device() => Ok(resolved),
        _ => Err(refused("to something other than a block device")),
    }
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
    let entry = tree::lookup(store, *root, &crate::ops::snapshot_path(&options.path))?
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
    progress.set_total(1, size);
    let shown = dest.display().to_string();
    let err = |e| Error::io(shown.clone(), e);
    // A device is written in place and its holes zeroed; a file is created
    // (or replaced) at full length, so its holes stay sparse.
    let nofollow = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    let (dest, found) = match fs::symlink_metadata(dest) {
        Ok(md) if md.file_type().is_symlink() => {
            let device = device_behind_link(dest, &md)?;
            let found = fs::symlink_metadata(&device);
            (device, found)
        }
        found => (dest.to_path_buf(), found),
    };
    let dest = dest.as_path();
    let (file, holes) = match found {
        Ok(md) if md.file_type().is_block_device() => {
            let mut file = OpenOptions::new()
                .write(true)
                .custom_flags(nofollow)
                .open(dest)
                .map_err(&err)?;
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
                .custom_flags(nofollow)
                .open(dest)
                .map_err(&err)?;
            file.set_len(size).map_err(&err)?;
            (file, Holes::Skip)
        }
    };
    let lists = tree::extent_lists(store, content, size);
    let written = write_lists(store, progress, &file, &shown, lists, holes)?;
    file.sync_all().map_err(&err)?;
    Ok(written.bytes)
}
