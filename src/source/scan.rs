//! A quick walk that counts what a backup will read, so that progress can
//! show a total and an estimated time left. It applies the same excludes as
//! the backup and only calls `lstat`; errors are skipped (the backup itself
//! reports them). The counts are an estimate: files may change meanwhile.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::source::exclude::{ExcludeOptions, Excluder};

/// Files and content bytes below `paths`, plus the sizes of `images`.
///
/// # Errors
/// Only exclude patterns that do not compile.
pub fn estimate(
    paths: &[PathBuf],
    images: &[PathBuf],
    excludes: &ExcludeOptions,
) -> Result<(u64, u64)> {
    let excluder = Excluder::new(excludes)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for top in paths {
        let Ok(md) = fs::symlink_metadata(top) else {
            continue;
        };
        let device = md.dev();
        let mut stack = vec![(top.clone(), md)];
        while let Some((path, md)) = stack.pop() {
            if md.is_file() {
                files += 1;
                bytes += md.len();
            } else if md.is_dir()
                && !excluder.marked(&path)
                && !(excludes.one_file_system && md.dev() != device)
            {
                push_children(&path, &excluder, &mut stack);
            }
        }
    }
    for image in images {
        if let Ok(mut f) = fs::File::open(image) {
            files += 1;
            bytes += f.seek(SeekFrom::End(0)).unwrap_or(0);
        }
    }
    Ok((files, bytes))
}

fn push_children(dir: &Path, excluder: &Excluder, stack: &mut Vec<(PathBuf, fs::Metadata)>) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let path = entry.path();
        if excluder.excludes(&path) {
            continue;
        }
        if let Ok(md) = entry.metadata() {
            stack.push((path, md));
        }
    }
}
