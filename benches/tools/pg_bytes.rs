//! Benchmark helper of `benches/pg.sh` (not part of the library's layers):
//! where a repository's bytes go, and what compressing consecutive new
//! chunks together would store instead of compressing each chunk alone.
//!
//! `pg_bytes packs REPO` (password in `KURA_PASSWORD`) reads every pack
//! header and prints one line per pack kind (data, tree): packs, blobs
//! (compression groups), chunks, the sum of the blobs' stored and raw
//! lengths, and what the packs hold
//! beside blobs (header, trailer, Padmé padding). Totals are cumulative;
//! the script takes differences between nights.
//!
//! `pg_bytes keys N FILE...` cuts the files with N chunk keys and prints,
//! per key, the chunk count and what compressing each chunk alone stores:
//! how much a repository's size depends on its (random) chunk key.
//!
//! `pg_bytes groups [--repo REPO] OLD_DIR... NEW_DIR` chunks every file of
//! the earlier nights' directories (the chunks a repository already holds)
//! and of the new night's, and for the new night's chunks that are new
//! (not in an earlier night, not earlier in this night) prints the zstd-3
//! bytes stored: each chunk alone (what kura does), and groups of
//! consecutive new chunks of one file up to 256 KiB, 1 MiB and 4 MiB raw.
//! It does so at kura's chunk size (with `--repo`, the repository's own
//! keyed chunker, so the cut points are kura's) and at twice, a half and a
//! quarter of it (a fixed key: sizes are alike for any key). A payload is
//! counted at its compressed size, or raw if zstd does not shrink it, as
//! kura's writer does; envelope and index costs are printed apart
//! (`chunk_ids` = 32 bytes a chunk a tree lists). With an earlier night,
//! `delta1024K` is the 1 MiB groups each compressed with the previous
//! night's file of the same name, from 256 KiB before the group's span to
//! 256 KiB after it, as a raw-content zstd dictionary (a delta of chain
//! depth 1 against the parent's version).
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kura::algorithms::chunker::{Chunker, ChunkerParams};
use kura::algorithms::compress;
use kura::backend::LocalBackend;
use kura::format::pack::{self, PackKind, group_raw_len};
use kura::repository::{DEFAULT_CHUNKER, Repository};

/// zstd level of kura's backup writer.
const LEVEL: i32 = 3;
/// Raw bounds of the compression groups measured.
const GROUP_LIMITS: [usize; 3] = [256 << 10, 1 << 20, 4 << 20];
/// Chunk sizes measured, as fractions `times / divisor` of kura's default.
const CHUNK_SCALES: [(u32, u32); 4] = [(2, 1), (1, 1), (1, 2), (1, 4)];
/// A delta group's base: the previous night's file of the same name, from
/// this much before the group's span to this much after it.
const DELTA_MARGIN: usize = 256 << 10;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("packs") if args.len() == 2 => packs(Path::new(&args[1])),
        Some("groups") => groups(&args[1..]),
        Some("keys") if args.len() >= 3 => keys(args[1].parse()?, &args[2..]),
        _ => bail!(
            "usage: pg_bytes packs REPO | pg_bytes groups [--repo REPO] OLD_DIR... NEW_DIR | pg_bytes keys N FILE..."
        ),
    }
}

fn open(repo: &Path) -> Result<Repository> {
    let password = std::env::var("KURA_PASSWORD").context("KURA_PASSWORD")?;
    Ok(Repository::open(
        Arc::new(LocalBackend::new(repo)),
        password.as_bytes(),
    )?)
}

/// Cumulative totals of one pack kind.
#[derive(Default)]
struct KindTotals {
    packs: u64,
    blobs: u64,
    chunks: u64,
    stored: u64,
    raw: u64,
    size: u64,
}

fn packs(path: &Path) -> Result<()> {
    let repo = open(path)?;
    let (mut data, mut tree) = (KindTotals::default(), KindTotals::default());
    for (id, size) in repo.list_packs()? {
        let header = repo.read_pack_header(&id, size)?;
        let t = if header.kind == PackKind::Tree {
            &mut tree
        } else {
            &mut data
        };
        t.packs += 1;
        t.size += size;
        // A blob is a group: its stored length counts once, for all the
        // chunks it holds.
        for group in pack::groups(&header.entries) {
            t.blobs += 1;
            t.chunks += group.len() as u64;
            t.stored += u64::from(group[0].stored_len);
            t.raw += group_raw_len(group);
        }
    }
    for (name, t) in [("data", data), ("tree", tree)] {
        println!(
            "{name}\tpacks {}\tblobs {}\tchunks {}\tstored {}\traw {}\tsize {}\tbeside_blobs {}",
            t.packs,
            t.blobs,
            t.chunks,
            t.stored,
            t.raw,
            t.size,
            t.size - t.stored
        );
    }
    Ok(())
}

/// For `n` chunk keys (BLAKE3 of the key's number), one line each: how
/// many chunks kura's default chunker cuts `files` into, how many are of
/// the minimum size, and what compressing each alone at zstd 3 stores.
fn keys(n: u32, files: &[String]) -> Result<()> {
    let data = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    for k in 0..n {
        let chunker = Chunker::new(blake3::hash(&k.to_le_bytes()).as_bytes(), DEFAULT_CHUNKER);
        let (mut chunks, mut at_min, mut alone) = (0u64, 0u64, Tally::default());
        for d in &data {
            for r in chunker.cut_all(d) {
                chunks += 1;
                at_min += u64::from(r.len() == DEFAULT_CHUNKER.min as usize);
                alone.add(&d[r], &[]);
            }
        }
        println!(
            "key {k}\tchunks {chunks}\tat_min {at_min}\talone {}",
            alone.stored
        );
    }
    Ok(())
}

fn groups(args: &[String]) -> Result<()> {
    let (repo, dirs) = match args {
        [flag, repo, rest @ ..] if flag == "--repo" => (Some(open(Path::new(repo))?), rest),
        _ => (None, args),
    };
    let Some((new_dir, old_dirs)) = dirs.split_last() else {
        bail!("groups needs at least the new night's directory")
    };
    let old = old_dirs
        .iter()
        .map(|d| files(Path::new(d)))
        .collect::<Result<Vec<_>>>()?;
    let new = files(Path::new(new_dir))?;
    let key = [7u8; 32];
    for (times, divisor) in CHUNK_SCALES {
        let params = scaled(DEFAULT_CHUNKER, times, divisor);
        let chunker = match (&repo, times * divisor) {
            (Some(r), 1) => r.chunker().clone(),
            _ => Chunker::new(&key, params),
        };
        let base = old_dirs.last().map(Path::new);
        measure(&chunker, old.iter().flatten(), base, &new)?;
    }
    Ok(())
}

/// `params` with min, avg and max multiplied by `times / divisor`.
fn scaled(params: ChunkerParams, times: u32, divisor: u32) -> ChunkerParams {
    ChunkerParams {
        min: params.min * times / divisor,
        avg: params.avg * times / divisor,
        max: params.max * times / divisor,
        normalization: params.normalization,
    }
}

/// The regular files of `dir`, sorted by name.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Stored bytes of one way of compressing the new chunks.
#[derive(Default)]
struct Tally {
    blobs: u64,
    stored: u64,
}

impl Tally {
    /// Counts `raw` compressed with `dictionary` (raw content; empty for
    /// none), or stored raw if zstd does not shrink it.
    fn add(&mut self, raw: &[u8], dictionary: &[u8]) {
        let zstd = if dictionary.is_empty() {
            compress::compress(raw, LEVEL)
        } else {
            zstd::bulk::Compressor::with_dictionary(LEVEL, dictionary)
                .and_then(|mut c| c.compress(raw))
                .ok()
        };
        self.blobs += 1;
        self.stored += zstd.map_or(raw.len(), |z| z.len().min(raw.len())) as u64;
    }
}

/// Consecutive new chunks of one file gathered up to a raw limit, with the
/// span of the file they came from (for the delta's base region).
struct Group {
    limit: usize,
    /// With a base: compress against its bytes around the group's span.
    delta: bool,
    bytes: Vec<u8>,
    span: Range<usize>,
    tally: Tally,
}

impl Group {
    fn new(limit: usize, delta: bool) -> Self {
        Self {
            limit,
            delta,
            bytes: Vec::new(),
            span: 0..0,
            tally: Tally::default(),
        }
    }

    fn push(&mut self, chunk: &[u8], at: Range<usize>, base: &[u8]) {
        if !self.bytes.is_empty() && self.bytes.len() + chunk.len() > self.limit {
            self.flush(base);
        }
        if self.bytes.is_empty() {
            self.span.start = at.start;
        }
        self.span.end = at.end;
        self.bytes.extend_from_slice(chunk);
    }

    fn flush(&mut self, base: &[u8]) {
        if self.bytes.is_empty() {
            return;
        }
        let dictionary = if self.delta {
            let from = self.span.start.saturating_sub(DELTA_MARGIN).min(base.len());
            &base[from..(self.span.end + DELTA_MARGIN).min(base.len())]
        } else {
            &[]
        };
        self.tally.add(&self.bytes, dictionary);
        self.bytes.clear();
    }

    fn label(&self) -> String {
        let kind = if self.delta { "delta" } else { "group" };
        format!("{kind}{}K", self.limit >> 10)
    }
}

/// Chunk hashes of the files in `old`, cut by `chunker`.
fn chunk_set<'a>(
    chunker: &Chunker,
    old: impl Iterator<Item = &'a PathBuf>,
) -> Result<HashSet<[u8; 32]>> {
    let mut seen = HashSet::new();
    for path in old {
        let data = std::fs::read(path)?;
        for r in chunker.cut_all(&data) {
            seen.insert(*blake3::hash(&data[r]).as_bytes());
        }
    }
    Ok(seen)
}

fn measure<'a>(
    chunker: &Chunker,
    old: impl Iterator<Item = &'a PathBuf>,
    base_dir: Option<&Path>,
    new: &[PathBuf],
) -> Result<()> {
    let mut seen = chunk_set(chunker, old)?;
    let (mut chunks, mut new_chunks, mut new_raw) = (0u64, 0u64, 0u64);
    let mut alone = Tally::default();
    let mut groups: Vec<Group> = GROUP_LIMITS.iter().map(|&l| Group::new(l, false)).collect();
    if base_dir.is_some() {
        groups.push(Group::new(1 << 20, true));
    }
    for path in new {
        let data = std::fs::read(path)?;
        let base = match (base_dir, path.file_name()) {
            (Some(dir), Some(name)) => std::fs::read(dir.join(name)).unwrap_or_default(),
            _ => Vec::new(),
        };
        for r in chunker.cut_all(&data) {
            chunks += 1;
            let chunk = &data[r.clone()];
            if !seen.insert(*blake3::hash(chunk).as_bytes()) {
                continue;
            }
            new_chunks += 1;
            new_raw += chunk.len() as u64;
            alone.add(chunk, &[]);
            for group in &mut groups {
                group.push(chunk, r.clone(), &base);
            }
        }
        for group in &mut groups {
            group.flush(&base);
        }
    }
    let p = chunker.params();
    print!(
        "avg {}\tmin {}\tmax {}\tchunks {chunks}\tnew {new_chunks}\tnew_raw {new_raw}\tchunk_ids {}\talone {} ({} blobs)",
        p.avg,
        p.min,
        p.max,
        32 * chunks,
        alone.stored,
        alone.blobs
    );
    for g in &groups {
        print!(
            "\t{} {} ({} blobs)",
            g.label(),
            g.tally.stored,
            g.tally.blobs
        );
    }
    println!();
    Ok(())
}
