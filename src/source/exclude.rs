//! Excludes: which paths a backup leaves out. Patterns are globs
//! (`*`, `?`, `[..]`, `**`) as [`PathGlobs`] reads them: one starting with
//! `/` is matched against the whole absolute path, another one with a `/`
//! against the end of the path at any depth, one without against the file
//! name at any depth (as restic does). A directory holding a file named in `if_present` is left
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

/// Compiled path globs, shared by excludes and `find`: a pattern starting
/// with `/` matches the whole absolute path; another pattern with a `/`
/// matches the path's last components at any depth (`www/cache` is
/// `**/www/cache`); a pattern without `/` matches the file name. A trailing
/// `/` is ignored. `*` and `?` never match `/`.
pub struct PathGlobs {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl PathGlobs {
    /// Compiles `patterns`; `what` names them in errors.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming a pattern that is not a glob.
    pub fn new(patterns: &[String], what: &str) -> Result<Self> {
        let invalid = |e: String| Error::new(ErrorKind::InvalidInput, e);
        let (mut by_path, mut by_name) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let is_path = trimmed.contains('/');
            let text = if is_path && !trimmed.starts_with('/') {
                format!("**/{trimmed}")
            } else {
                trimmed.to_owned()
            };
            let glob = GlobBuilder::new(&text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| invalid(format!("{what} {p:?}: {e}")))?;
            if is_path {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| invalid(format!("{what}s: {e}")));
        Ok(Self {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    /// Whether the absolute `path`, whose file name is `name`, matches.
    pub fn is_match(&self, path: &Path, name: &std::ffi::OsStr) -> bool {
        self.by_name.is_match(name) || self.by_path.is_match(path)
    }

    /// Whether some pattern looks at the path, not only the name.
    pub fn uses_paths(&self) -> bool {
        !self.by_path.is_empty()
    }
}

/// Compiled [`ExcludeOptions`].
pub struct Excluder {
    globs: PathGlobs,
    if_present: Vec<String>,
}

impl Excluder {
    /// Compiles the patterns.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming a pattern that is not a glob.
    pub fn new(options: &ExcludeOptions) -> Result<Self> {
        Ok(Self {
            globs: PathGlobs::new(&options.patterns, "exclude pattern")?,
            if_present: options.if_present.clone(),
        })
    }

    /// Whether `path` (absolute) is left out by a pattern.
    pub fn excludes(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| self.globs.is_match(path, n))
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
        // A relative path pattern matches the end of the path at any depth.
        let rel = Excluder::new(&ExcludeOptions {
            patterns: vec!["www/cache".into()],
            ..ExcludeOptions::default()
        })
        .unwrap();
        assert!(rel.excludes(Path::new("/srv/www/cache")));
        assert!(!rel.excludes(Path::new("/srv/www/cache/x")));
        assert!(!rel.excludes(Path::new("/srv/mywww/cache")));
        assert!(
            Excluder::new(&ExcludeOptions {
                patterns: vec!["[".into()],
                ..ExcludeOptions::default()
            })
            .is_err()
        );
    }
}
