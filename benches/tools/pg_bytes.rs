//! Benchmark helper of `benches/pg.sh` (not part of the library's layers):
//! where a repository's bytes go, and what compressing consecutive new
//! chunks together would store instead of compressing each chunk alone.
//!
//! `pg_bytes packs REPO` (password in `KURA_PASSWORD`) reads every pack
//! header and prints one line per pack kind (data, tree): packs, blobs,
//! the sum of the blobs' stored and raw lengths, and what the packs hold
//! beside blobs (header, trailer, Padmé padding). Totals are cumulative;
//! the script takes differences between nights.
//!
//! `pg_bytes groups [--repo REPO] OLD_DIR... NEW_DIR` chunks every file of
//! the earlier nights' directories (the chunks a repository already holds)
//! and of the new night's, and for the new night's chunks that are new
//! (not in an earlier night, not earlier in this night) prints the zstd-3
//! bytes stored: each chunk alone (what kura does), and groups of
//! consecutive new chunks of one file up to 256 KiB, 1 MiB and 4 MiB raw.
//! It does so at kura's chunk size (with `--repo`, the repository's own
//! keyed chunker, so the cut points are kura's) and at a half and a
//! quarter of it (a fixed key: sizes are alike for any key). A payload is
//! counted at its compressed size, or raw if zstd does not shrink it, as
//! kura's writer does; envelope and index costs are printed apart
//! (`chunk_ids` = 32 bytes a chunk a tree lists).
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kura::algorithms::chunker::{Chunker, ChunkerParams};
use kura::algorithms::compress;
use kura::backend::LocalBackend;
use kura::format::pack::PackKind;
use kura::repository::{DEFAULT_CHUNKER, Repository};

/// zstd level of kura's backup writer.
const LEVEL: i32 = 3;
/// Raw bounds of the compression groups measured.
const GROUP_LIMITS: [usize; 3] = [256 << 10, 1 << 20, 4 << 20];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("packs") if args.len() == 2 => packs(Path::new(&args[1])),
        Some("groups") => groups(&args[1..]),
        _ => bail!("usage: pg_bytes packs REPO | pg_bytes groups [--repo REPO] OLD_DIR... NEW_DIR"),
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
        for e in &header.entries {
            t.blobs += 1;
            t.stored += u64::from(e.stored_len);
            t.raw += u64::from(e.raw_len);
        }
    }
    for (name, t) in [("data", data), ("tree", tree)] {
        println!(
            "{name}\tpacks {}\tblobs {}\tstored {}\traw {}\tsize {}\tbeside_blobs {}",
            t.packs,
            t.blobs,
            t.stored,
            t.raw,
            t.size,
            t.size - t.stored
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
    for divisor in [1, 2, 4] {
        let params = scaled(DEFAULT_CHUNKER, divisor);
        let chunker = match (&repo, divisor) {
            (Some(r), 1) => r.chunker().clone(),
            _ => Chunker::new(&key, params),
        };
        measure(&chunker, divisor, old.iter().flatten(), &new)?;
    }
    Ok(())
}

/// `params` with min, avg and max divided by `divisor`.
fn scaled(params: ChunkerParams, divisor: u32) -> ChunkerParams {
    ChunkerParams {
        min: params.min / divisor,
        avg: params.avg / divisor,
        max: params.max / divisor,
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
    fn add(&mut self, raw: &[u8]) {
        let zstd = compress::compress(raw, LEVEL).map_or(usize::MAX, |z| z.len());
        self.blobs += 1;
        self.stored += zstd.min(raw.len()) as u64;
    }
}

fn measure<'a>(
    chunker: &Chunker,
    divisor: u32,
    old: impl Iterator<Item = &'a PathBuf>,
    new: &[PathBuf],
) -> Result<()> {
    let mut seen = HashSet::new();
    for path in old {
        let data = std::fs::read(path)?;
        for r in chunker.cut_all(&data) {
            seen.insert(*blake3::hash(&data[r]).as_bytes());
        }
    }
    let (mut chunks, mut new_chunks, mut new_raw) = (0u64, 0u64, 0u64);
    let mut alone = Tally::default();
    let mut grouped: Vec<Tally> = GROUP_LIMITS.iter().map(|_| Tally::default()).collect();
    for path in new {
        let data = std::fs::read(path)?;
        let mut open: Vec<Vec<u8>> = GROUP_LIMITS.iter().map(|_| Vec::new()).collect();
        for r in chunker.cut_all(&data) {
            chunks += 1;
            let chunk = &data[r];
            if !seen.insert(*blake3::hash(chunk).as_bytes()) {
                continue;
            }
            new_chunks += 1;
            new_raw += chunk.len() as u64;
            alone.add(chunk);
            for ((group, tally), limit) in open.iter_mut().zip(&mut grouped).zip(GROUP_LIMITS) {
                if !group.is_empty() && group.len() + chunk.len() > limit {
                    tally.add(group);
                    group.clear();
                }
                group.extend_from_slice(chunk);
            }
        }
        for (group, tally) in open.iter().zip(&mut grouped) {
            if !group.is_empty() {
                tally.add(group);
            }
        }
    }
    let p = chunker.params();
    print!(
        "avg/{divisor}\tavg {}\tchunks {chunks}\tnew {new_chunks}\tnew_raw {new_raw}\tchunk_ids {}\talone {} ({} blobs)",
        p.avg,
        32 * chunks,
        alone.stored,
        alone.blobs
    );
    for (tally, limit) in grouped.iter().zip(GROUP_LIMITS) {
        print!(
            "\tgroup{}K {} ({} blobs)",
            limit >> 10,
            tally.stored,
            tally.blobs
        );
    }
    println!();
    Ok(())
}
