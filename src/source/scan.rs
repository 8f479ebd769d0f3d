//! Source layer: a quick walk that counts what a backup will read, so that
//! progress can show a total and an estimated time left. It walks with the
//! backup's own [`Walker`], so it leaves out exactly what the backup
//! leaves out, and only calls `lstat`; errors are skipped (the backup
//! itself reports them). The counts are an estimate: files may change
//! meanwhile.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::source::exclude::ExcludeOptions;
use crate::source::walk::{Found, Visitor, Walker};

/// Files and content bytes below `paths`, plus the sizes of `images`.
///
/// # Errors
/// Only exclude patterns that do not compile.
pub fn estimate(
    paths: &[PathBuf],
    images: &[PathBuf],
    excludes: &ExcludeOptions,
) -> Result<(u64, u64)> {
    let mut walker = Walker::new(excludes)?;
    let mut count = Count::default();
    for top in paths {
        let Ok(md) = fs::symlink_metadata(top) else {
            continue;
        };
        walker.walk(&mut count, top, &md, None)?;
    }
    for image in images {
        if let Ok(mut f) = fs::File::open(image) {
            count.files += 1;
            count.bytes += f.seek(SeekFrom::End(0)).unwrap_or(0);
        }
    }
    Ok((count.files, count.bytes))
}

/// Regular files seen and their sizes.
#[derive(Default)]
struct Count {
    files: u64,
    bytes: u64,
}

impl Visitor for Count {
    type Entry = ();
    type Known = ();
    type Dir = ();

    fn unreadable(&mut self, _path: &Path, _error: &io::Error) {}

    fn leaf(&mut self, found: &Found<'_>, _known: Option<&()>) -> Result<Option<()>> {
        if found.lstat.is_file() {
            self.files += 1;
            self.bytes += found.lstat.len();
        }
        Ok(Some(()))
    }

    fn enter(&mut self, _found: &Found<'_>, _known: Option<&()>) -> Result<()> {
        Ok(())
    }

    fn known_children(&mut self, _path: &Path, _dir: &()) -> Result<HashMap<Vec<u8>, ()>> {
        Ok(HashMap::new())
    }

    fn leave(&mut self, _found: &Found<'_>, _dir: (), _children: Vec<()>) -> Result<()> {
        Ok(())
    }
}
