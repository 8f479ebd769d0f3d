//! Operations layer: `drill`, a restore rehearsal. Picks a random sample
//! of the regular files of a snapshot (and always the paths it is told to
//! include, such as database dumps), reads each back as a restore does,
//! every chunk authenticated and checked against its id, and compares it
//! with the file on this machine where that file still has the size and
//! mtime the snapshot recorded. A file that reads back wrong, or differs
//! from an unchanged source, is a failure; a source that changed since is
//! only counted.
//!
//! Owned invariant: a drill writes nothing to the repository or to the
//! sources; it reads.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::chunkstore::ChunkStore;
use crate::error::Result;
use crate::format::tree::{Entry, Payload};
use crate::id::ChunkId;
use crate::snapshot::tree;
use crate::snapshot::walk::{Step, TreeWalk};

/// What to drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// How many files to pick at random (besides `include`).
    pub sample: usize,
    /// Paths in the snapshot always drilled, `/`-separated from the root
    /// (e.g. `/db/site.sql`); one not in the snapshot is a failure.
    pub include: Vec<Vec<u8>>,
    /// Seed of the random choice (the report names it, so a drill can be
    /// repeated exactly).
    pub seed: u64,
    /// Compare with the files on this machine where they are unchanged.
    pub compare_source: bool,
}

/// How one drilled file compared with the file on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceCheck {
    /// Same size and mtime as recorded, and the same bytes.
    Same,
    /// Same size and mtime as recorded, but other bytes: a failure.
    Differs,
    /// Changed since the snapshot (or gone): not compared.
    Changed,
    /// Not compared (a stream, or comparing was not asked for).
    NotCompared,
}

/// One drilled file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrilledFile {
    #[serde(serialize_with = "serialize_path")]
    pub path: Vec<u8>,
    pub size: u64,
    /// Read back whole, every chunk authentic.
    pub read_back: bool,
    pub source: SourceCheck,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

fn serialize_path<S: serde::Serializer>(p: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(p))
}

impl DrilledFile {
    pub fn failed(&self) -> bool {
        !self.read_back || self.source == SourceCheck::Differs
    }
}

/// What a drill found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DrillReport {
    /// Regular files in the snapshot.
    pub files_in_snapshot: u64,
    pub seed: u64,
    pub files: Vec<DrilledFile>,
    /// Bytes read back.
    pub bytes: u64,
}

impl DrillReport {
    pub fn ok(&self) -> bool {
        !self.files.iter().any(DrilledFile::failed)
    }
}

/// Drills the snapshot whose root tree is `root`.
///
/// # Errors
/// A snapshot whose trees cannot be listed; file-level problems are
/// failures in the report, not errors.
pub fn drill(
    store: &ChunkStore<'_>,
    root: &ChunkId,
    options: &DrillOptions,
) -> Result<DrillReport> {
    let mut picked: Vec<(Vec<u8>, Entry)> = Vec::new();
    let mut included: Vec<Option<(Vec<u8>, Entry)>> = vec![None; options.include.len()];
    let mut rng = options.seed | 1;
    let mut seen = 0u64;
    let mut walk = TreeWalk::new(store);
    walk.start_tree(*root, Vec::new());
    while let Some(step) = walk.next_step() {
        let (path, entry) = match step {
            Step::Entry { path, entry } if matches!(entry.payload, Payload::File(_)) => {
                (path, entry)
            }
            Step::Unreadable { error, .. } => return Err(error),
            _ => continue,
        };
        if let Some(i) = options.include.iter().position(|p| *p == path) {
            included[i] = Some((path, entry));
            continue;
        }
        seen += 1;
        // Reservoir sampling: each file ends up picked with equal chance.
        if picked.len() < options.sample {
            picked.push((path, entry));
        } else if let Ok(j) = usize::try_from(next(&mut rng) % seen)
            && j < options.sample
        {
            picked[j] = (path, entry);
        }
    }
    let mut report = DrillReport {
        files_in_snapshot: seen + included.iter().flatten().count() as u64,
        seed: options.seed,
        ..DrillReport::default()
    };
    for (path, found) in options.include.iter().zip(included) {
        match found {
            Some((path, entry)) => report.files.push(drill_file(store, path, &entry, false)),
            None => report.files.push(DrilledFile {
                path: path.clone(),
                size: 0,
                read_back: false,
                source: SourceCheck::NotCompared,
                error: Some("not in the snapshot".into()),
            }),
        }
    }
    picked.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, entry) in picked {
        report
            .files
            .push(drill_file(store, path, &entry, options.compare_source));
    }
    report.bytes = report
        .files
        .iter()
        .filter(|f| f.read_back)
        .map(|f| f.size)
        .sum();
    Ok(report)
}

/// xorshift64: enough to pick files; not for secrets.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Reads one file back and compares it with its source.
fn drill_file(store: &ChunkStore<'_>, path: Vec<u8>, entry: &Entry, compare: bool) -> DrilledFile {
    let Payload::File(content) = &entry.payload else {
        unreachable!("only regular files are drilled");
    };
    let mut hasher = HashingWriter::default();
    let read = tree::write_content(store, content, entry.meta.size, &mut hasher);
    let mut out = DrilledFile {
        path,
        size: entry.meta.size,
        read_back: false,
        source: SourceCheck::NotCompared,
        error: None,
    };
    match read {
        Ok(n) if n == entry.meta.size => out.read_back = true,
        Ok(n) => out.error = Some(format!("read back {n} bytes of {}", entry.meta.size)),
        Err(e) => out.error = Some(e.to_string()),
    }
    if out.read_back && compare {
        out.source = compare_source(&out.path, entry, &hasher.hash.finalize());
        if out.source == SourceCheck::Differs {
            out.error = Some("differs from the unchanged file on this machine".into());
        }
    }
    out
}

/// How the file at `path` on this machine compares with what was read.
fn compare_source(path: &[u8], entry: &Entry, read: &blake3::Hash) -> SourceCheck {
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return SourceCheck::Changed;
    };
    let mtime = {
        use std::os::unix::fs::MetadataExt;
        (md.mtime(), u32::try_from(md.mtime_nsec()).unwrap_or(0))
    };
    if !md.is_file() || md.len() != entry.meta.size || mtime != entry.meta.mtime {
        return SourceCheck::Changed;
    }
    match hash_file(path) {
        Ok(h) if h == *read => SourceCheck::Same,
        Ok(_) => SourceCheck::Differs,
        Err(_) => SourceCheck::Changed,
    }
}

fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Hashes what is written to it.
#[derive(Default)]
struct HashingWriter {
    hash: blake3::Hasher,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
