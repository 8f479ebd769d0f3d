//! Benchmark helper of `benches/bigindex.sh` (not part of the library's
//! layers): gives a local repository an index of N entries without backing
//! up N chunks' worth of data.
//!
//! `big_index REPO N [--per-pack P] [--packs-per-file F]` opens REPO (or
//! initialises it, at the weakest Argon2id parameters a client accepts,
//! if it holds no repository yet), password in `KURA_PASSWORD`, and adds N
//! synthetic data chunks: packs of P chunks (default 256, what an 8 MiB
//! pack of 32 KiB chunks holds) named by index files of F packs each
//! (default 32, what a backup writes: `ChunkStoreOptions::index_every`).
//!
//! The entries are real, so every later command stays correct: chunk i's
//! plaintext is 16 bytes (a random run tag and i), its id the repository's
//! keyed hash of them (so ids are spread like real ones, and no backup of
//! other data deduplicates against them), sealed by the repository's
//! sealer into packs assembled by `format::pack::assemble` (padding,
//! sealed header, trailer) and written create-only; the index files go
//! through `chunkstore::index::write_index_file`. So `check` and `check
//! --read-data` find nothing wrong, and prune sees N unreferenced chunks
//! (no snapshot names them). The index cache is not touched: the first
//! command afterwards syncs it from the N entries.
//!
//! Prints what it wrote (entries, packs, index files, largest index file
//! in bytes) and how long it took.
//!
//! `big_index sync REPO CACHE_ROOT` opens the index cache of REPO under
//! CACHE_ROOT as every command does (`ops::session::open_index`) and syncs
//! it with the repository's index files, printing the seconds each took
//! and how many index files were loaded: cold with an empty CACHE_ROOT,
//! warm with one a command filled. It allocates with jemalloc, as kura
//! does, so that its peak RSS is the sync's in kura.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use kura::algorithms::crypto::kdf::KdfParams;
use kura::backend::LocalBackend;
use kura::chunkstore::index::write_index_file;
use kura::chunkstore::index::{CACHE_BYTES, ChunkIndex, cache_file};
use kura::format::index::{IndexFile, IndexedPack, MAX_LEN};
use kura::format::pack::{self, PackEntry, PackHeader, PackKind};
use kura::id::PackId;
use kura::repository::{InitOptions, Repository};
use rayon::prelude::*;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes of a synthetic chunk's plaintext: run tag (8) and number (8).
const CHUNK_LEN: usize = 16;

struct Plan {
    entries: u64,
    per_pack: u64,
    packs_per_file: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: big_index REPO N [--per-pack P] [--packs-per-file F] | big_index sync REPO CACHE_ROOT";
    if let [sync, repo, root] = args.as_slice() {
        if sync == "sync" {
            return sync_cache(Path::new(repo), Path::new(root));
        }
    }
    let (Some(repo), Some(n)) = (args.first(), args.get(1)) else {
        bail!(usage);
    };
    let mut plan = Plan {
        entries: n.parse().context("N")?,
        per_pack: 256,
        packs_per_file: 32,
    };
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value: u64 = rest.next().context(usage)?.parse()?;
        match flag.as_str() {
            "--per-pack" => plan.per_pack = value,
            "--packs-per-file" => plan.packs_per_file = value,
            _ => bail!(usage),
        }
    }
    ensure!(plan.per_pack > 0 && plan.packs_per_file > 0, usage);
    let repo = open_or_init(Path::new(repo))?;
    let started = Instant::now();
    let written = write_entries(&repo, &plan)?;
    println!(
        "entries {}\tpacks {}\tindex_files {}\tlargest_index_file {}\tseconds {:.1}",
        plan.entries,
        written.packs,
        written.files,
        written.largest_file,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens and syncs the index cache as a command does, timing both.
fn sync_cache(repo: &Path, root: &Path) -> Result<()> {
    let repo = open_or_init(repo)?;
    let started = Instant::now();
    let index = ChunkIndex::open_with_cache(Some(&cache_file(root, repo.id())), CACHE_BYTES)?;
    let opened = started.elapsed().as_secs_f64();
    let report = index.sync(&repo)?;
    println!(
        "open_seconds {opened:.2}\tsync_seconds {:.2}\tindex_files_loaded {}\tentries {}",
        started.elapsed().as_secs_f64() - opened,
        report.index_files_loaded,
        index.len()?
    );
    Ok(())
}

fn open_or_init(path: &Path) -> Result<Repository> {
    let password = std::env::var("KURA_PASSWORD").context("KURA_PASSWORD")?;
    let backend = Arc::new(LocalBackend::new(path));
    if path.join("config").exists() {
        return Ok(Repository::open(backend, password.as_bytes())?);
    }
    let options = InitOptions {
        kdf: KdfParams::FLOOR,
        ..InitOptions::default()
    };
    Ok(Repository::init(backend, password.as_bytes(), &options)?)
}

#[derive(Default)]
struct Written {
    packs: u64,
    files: u64,
    largest_file: usize,
}

/// Writes `plan.entries` chunks, one index file at a time (its packs in
/// parallel), so memory holds one index file's packs at most.
fn write_entries(repo: &Repository, plan: &Plan) -> Result<Written> {
    let tag: [u8; 8] = rand_tag();
    let per_file = plan.per_pack * plan.packs_per_file;
    let mut written = Written::default();
    let mut first = 0;
    while first < plan.entries {
        let end = (first + per_file).min(plan.entries);
        let starts: Vec<u64> = (first..end).step_by(to_usize(plan.per_pack)).collect();
        let packs = starts
            .par_iter()
            .map(|&start| write_pack(repo, tag, start..(start + plan.per_pack).min(end)))
            .collect::<Result<Vec<_>>>()?;
        let file = IndexFile {
            supersedes: Vec::new(),
            packs,
        };
        let len = file.encode().len();
        ensure!(
            len <= MAX_LEN,
            "an index file of {len} bytes is over the format's {MAX_LEN}: use fewer packs per file"
        );
        write_index_file(repo, &file, 3)?;
        written.packs += file.packs.len() as u64;
        written.files += 1;
        written.largest_file = written.largest_file.max(len);
        first = end;
    }
    Ok(written)
}

/// Seals chunks `numbers` into one data pack and writes it.
fn write_pack(
    repo: &Repository,
    tag: [u8; 8],
    numbers: std::ops::Range<u64>,
) -> Result<IndexedPack> {
    let sealer = repo.sealer();
    let mut blobs = Vec::new();
    let mut entries = Vec::new();
    for i in numbers {
        let mut plaintext = [0u8; CHUNK_LEN];
        plaintext[..8].copy_from_slice(&tag);
        plaintext[8..].copy_from_slice(&i.to_le_bytes());
        let id = sealer.chunk_id(&plaintext);
        // One chunk per group, as a tree pack holds them; the index has
        // one entry per chunk either way.
        let sealed = sealer.seal_group(PackKind::Data, &plaintext, 0);
        entries.push(PackEntry {
            id,
            offset: u32::try_from(blobs.len())?,
            stored_len: u32::try_from(sealed.len())?,
            raw_offset: 0,
            raw_len: u32::try_from(CHUNK_LEN)?,
        });
        blobs.extend_from_slice(&sealed);
    }
    let id = PackId::random();
    let header = PackHeader {
        kind: PackKind::Data,
        entries,
    };
    let bytes = pack::assemble(blobs, &header, sealer.keys(), &id, sealer.repo());
    repo.write_pack(&id, &bytes)?;
    Ok(IndexedPack {
        id,
        kind: PackKind::Data,
        size: bytes.len() as u64,
        entries: header.entries,
    })
}

/// A tag that makes this run's chunks differ from any other run's.
fn rand_tag() -> [u8; 8] {
    let id = PackId::random();
    id.as_bytes()[..8].try_into().expect("8 bytes")
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("fits in usize")
}
