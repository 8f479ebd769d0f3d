//! Excludes: which paths a backup leaves out. Patterns are globs
//! (`*`, `?`, `[..]`, `**`); one with a `/` is matched against the whole
//! absolute path, one without against the file name at any depth (as
//! restic does). A directory holding a file named in `if_present` is left
//! out with everything below it. With `one_file_system`, a directory on
//! another file system than the backed-up path it lies under is kept as an
//! empty directory (the mount point), as restic does.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, ErrorKind, Result};

/// What to leave out of a backup.
#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    pub patterns: Vec<String>,
    /// Leave out directories that contain a file of this name.
    pub if_present: Vec<String>,
    /// Do not descend into directories on another file system than the
    /// path given; their mount points are kept as empty directories.
    pub one_file_system: bool,
}

/// Compiled [`ExcludeOptions`].
pub struct Excluder {
    by_path: GlobSet,
    by_name: GlobSet,
    if_present: Vec<String>,
}

impl Excluder {
    /// Compiles the patterns.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming a pattern that is not a glob.
    pub fn new(options: &ExcludeOptions) -> Result<Self> {
        let (mut by_path, mut by_name) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in &options.patterns {
            let glob = GlobBuilder::new(p.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("exclude pattern {p:?}: {e}"),
                    )
                })?;
            if p.trim_end_matches('/').contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("exclude patterns: {e}")))
        };
        Ok(Self {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
            if_present: options.if_present.clone(),
        })
    }

    /// Whether `path` (absolute) is left out by a pattern.
    pub fn excludes(&self, path: &Path) -> bool {
        self.by_path.is_match(path) || path.file_name().is_some_and(|n| self.by_name.is_match(n))
    }

    /// Whether directory `dir` holds a marker file that leaves it out.
    pub fn marked(&self, dir: &Path) -> bool {
        self.if_present
            .iter()
            .any(|m| dir.join(m).symlink_metadata().is_ok())
    }
}

/// Reads patterns from a file: one per line; blank lines and lines
/// starting with `#` are skipped.
///
/// # Errors
/// The file cannot be read.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let ex = Excluder::new(&ExcludeOptions {
            patterns: vec![
                "*.log".into(),
                "/srv/www/cache".into(),
                "/srv/**/tmp/*".into(),
                "node_modules/".into(),
            ],
            ..ExcludeOptions::default()
        })
        .unwrap();
        assert!(ex.excludes(Path::new("/srv/www/error.log")));
        assert!(ex.excludes(Path::new("/var/log/deep/a.log")));
        assert!(!ex.excludes(Path::new("/srv/www/error.log.gz")));
        assert!(ex.excludes(Path::new("/srv/www/cache")));
        assert!(!ex.excludes(Path::new("/srv/www/cache2")));
        assert!(ex.excludes(Path::new("/srv/a/b/tmp/x")));
        assert!(!ex.excludes(Path::new("/srv/a/b/tmp/x/y")));
        assert!(ex.excludes(Path::new("/srv/app/node_modules")));
        assert!(
            Excluder::new(&ExcludeOptions {
                patterns: vec!["[".into()],
                ..ExcludeOptions::default()
            })
            .is_err()
        );
    }
}
