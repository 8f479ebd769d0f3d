//! Stores every regular file under a directory through the chunk store,
//! twice, and reads every file back, printing what deduplication saved.
//! Used by `scripts/demo.sh`; snapshots and restore arrive with issue 3.
//!
//! Usage: store_tree REPO DIR [--once]  (password from KURA_PASSWORD)
//! `--once` stores the tree once and does not read it back (for timing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kura::backend::LocalBackend;
use kura::chunkstore::{ChunkRef, ChunkStore, ChunkStoreOptions};
use kura::index::ChunkIndex;
use kura::repo::Repository;

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (repo_path, dir, once) = match args.as_slice() {
        [_, repo, dir] => (repo, dir, false),
        [_, repo, dir, flag] if flag == "--once" => (repo, dir, true),
        _ => return Err("usage: store_tree REPO DIR [--once]".into()),
    };
    let password = std::env::var("KURA_PASSWORD")?;
    let repo = Repository::open(Arc::new(LocalBackend::new(repo_path)), password.as_bytes())?;
    // Cache root as format-spec/06-index.md says: $KURA_CACHE_DIR,
    // $XDG_CACHE_HOME/kura, then ~/.cache/kura.
    let root = std::env::var_os("KURA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kura")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kura")))
        .unwrap_or_else(|| std::env::temp_dir().join("kura-cache"));
    let index = ChunkIndex::open(Some(&kura::index::cache_file(&root, repo.id())))?;
    index.sync(&repo)?;
    let mut paths = Vec::new();
    files(Path::new(dir), &mut paths)?;
    paths.sort();
    let mut stored: Vec<(PathBuf, Vec<ChunkRef>)> = Vec::new();
    for round in 1..=if once { 1 } else { 2 } {
        let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
        let start = Instant::now();
        stored.clear();
        for path in &paths {
            stored.push((path.clone(), store.put_stream(std::fs::File::open(path)?)?));
        }
        store.flush()?;
        let s = store.stats();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "round {round}: {} files, {:.1} MB read, {} chunks, {} new ({:.1} MB stored), {} packs, {:.2} s ({:.0} MB/s)",
            paths.len(),
            s.bytes as f64 / 1e6,
            s.chunks,
            s.chunks_new,
            s.bytes_stored as f64 / 1e6,
            s.packs_written,
            secs,
            s.bytes as f64 / 1e6 / secs
        );
    }
    if once {
        return Ok(());
    }
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    for (path, refs) in &stored {
        let mut data = Vec::new();
        for r in refs {
            data.extend(store.get(&r.id)?);
        }
        if data != std::fs::read(path)? {
            return Err(format!("{} read back differently", path.display()).into());
        }
    }
    println!("read back all {} files: identical", stored.len());
    Ok(())
}
