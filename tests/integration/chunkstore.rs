//! The chunk store: round trips, deduplication, parallel/serial agreement,
//! the cache as a rebuildable copy of the index files and pack headers.

use std::collections::HashSet;
use std::sync::Arc;

use kura::backend::faulty::FaultPlan;
use kura::backend::{Backend, FaultyBackend, MemoryBackend};
use kura::chunkstore::index::ChunkIndex;
use kura::chunkstore::pack::PackerOptions;
use kura::chunkstore::{ChunkRef, ChunkStore, ChunkStoreOptions, DEFAULT_GROUP_SIZE};
use kura::format::layout;
use kura::id::PackId;
use kura::repository::Repository;

use crate::common::{PASSWORD, fast_options, memory_repo, pseudo_random, text_like};

fn small_packs() -> ChunkStoreOptions {
    ChunkStoreOptions {
        packer: PackerOptions {
            target_size: 256 << 10,
            open_packs: 2,
        },
        index_every: 3,
        segment: 1 << 20,
        ..ChunkStoreOptions::default()
    }
}

fn sample_input() -> Vec<u8> {
    let mut data = text_like(3 << 20, 1);
    data.extend(pseudo_random(2 << 20, 2));
    data.extend(text_like(1 << 20, 1)); // repeats the start: dedup within a stream
    data
}

fn restore(store: &ChunkStore<'_>, refs: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in refs {
        let chunk = store.get(&r.id).unwrap();
        assert_eq!(chunk.len(), r.len as usize);
        out.extend(chunk);
    }
    out
}

#[test]
fn stream_round_trip_and_dedup() {
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let data = sample_input();
    let refs = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    assert_eq!(restore(&store, &refs), data);
    let first = store.stats();
    assert!(
        first.chunks_new < first.chunks,
        "the repeated part is deduplicated"
    );
    // Uploads finish in the background, so how many index files are
    // written before the flush depends on timing; at least the flush's.
    // So does how many packs the sealing jobs fill (3 to 5 in 40 runs):
    // each job (a segment's new chunks, in groups of up to 1 MiB) goes
    // into whichever of the two open packs is free, and a pack is
    // finished once it holds 256 KiB; the 2 MiB of random bytes alone
    // fill two.
    assert!(first.packs_written >= 2 && first.index_files_written >= 1);

    let objects_before = backend.list("data").unwrap().len();
    let again = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    assert_eq!(again, refs);
    assert_eq!(
        store.stats().chunks_new,
        first.chunks_new,
        "nothing new the second time"
    );
    assert_eq!(backend.list("data").unwrap().len(), objects_before);
}

#[test]
fn a_new_handle_finds_everything_through_the_index_files() {
    let (backend, repo) = memory_repo();
    let data = sample_input();
    let refs = {
        let index = ChunkIndex::open(None).unwrap();
        let store = ChunkStore::new(&repo, &index, small_packs());
        // Two flushes: at least two index files, whatever the upload timing.
        let (a, b) = data.split_at(data.len() / 2);
        let mut refs = store.put_stream(a).unwrap();
        store.flush().unwrap();
        refs.extend(store.put_stream(b).unwrap());
        store.flush().unwrap();
        refs
    };
    let reopened = Repository::open(backend.clone() as Arc<dyn Backend>, PASSWORD).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    let report = index.sync(&reopened).unwrap();
    assert!(report.index_files_loaded >= 2);
    let store = ChunkStore::new(&reopened, &index, small_packs());
    assert_eq!(restore(&store, &refs), data);
    // Storing the same data again through the new handle adds nothing.
    let (a, b) = data.split_at(data.len() / 2);
    store.put_stream(a).unwrap();
    store.put_stream(b).unwrap();
    assert_eq!(store.stats().chunks_new, 0);
}

#[test]
fn on_disk_cache_survives_reopen_and_follows_deleted_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/index.redb");
    let (backend, repo) = memory_repo();
    let data = text_like(2 << 20, 9);
    {
        let index = ChunkIndex::open(Some(&cache)).unwrap();
        let store = ChunkStore::new(&repo, &index, small_packs());
        store.put_stream(data.as_slice()).unwrap();
        store.flush().unwrap();
    }
    let index = ChunkIndex::open(Some(&cache)).unwrap();
    let known = index.len().unwrap();
    assert!(known > 0);
    assert_eq!(
        index.sync(&repo).unwrap().index_files_loaded,
        0,
        "already cached"
    );
    // An index file disappears (as after a prune): the cache starts over.
    let first = backend.list("index").unwrap()[0].path.clone();
    backend.delete(&first).unwrap();
    let report = index.sync(&repo).unwrap();
    assert!(report.rebuilt);
    assert!(index.len().unwrap() < known);
}

#[test]
fn cache_rebuilds_from_pack_headers_when_index_files_are_lost() {
    let (backend, repo) = memory_repo();
    let data = sample_input();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let refs = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);
    for info in backend.list("index").unwrap() {
        backend.delete(&info.path).unwrap();
    }
    let fresh = ChunkIndex::open(None).unwrap();
    fresh.sync(&repo).unwrap();
    assert!(fresh.is_empty().unwrap());
    let report = fresh.rebuild_from_pack_headers(&repo).unwrap();
    assert!(report.damaged.is_empty() && !report.packs.is_empty());
    let store = ChunkStore::new(&repo, &fresh, small_packs());
    assert_eq!(restore(&store, &refs), data);
}

#[test]
fn parallel_and_single_threaded_give_the_same_ids() {
    let (_backend, repo) = memory_repo();
    let data = sample_input();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let index = ChunkIndex::open(None).unwrap();
            let store = ChunkStore::new(&repo, &index, small_packs());
            let refs = store.put_stream(data.as_slice()).unwrap();
            store.flush().unwrap();
            refs
        })
    };
    let serial = run(1);
    assert_eq!(serial, run(4));
    // The chunker alone, over the whole buffer, agrees with the stream.
    let lens: Vec<u32> = repo
        .chunker()
        .cut_all(&data)
        .iter()
        .map(|r| r.len() as u32)
        .collect();
    assert_eq!(lens, serial.iter().map(|r| r.len).collect::<Vec<_>>());
}

#[test]
fn two_repositories_cut_and_name_the_same_input_differently() {
    let (_b1, r1) = memory_repo();
    let (_b2, r2) = memory_repo();
    let data = text_like(2 << 20, 4);
    let cuts1 = r1.chunker().cut_all(&data);
    let cuts2 = r2.chunker().cut_all(&data);
    assert_ne!(cuts1, cuts2, "cut points differ");
    let ids1: std::collections::HashSet<_> = cuts1
        .iter()
        .map(|c| r1.sealer().chunk_id(&data[c.clone()]))
        .collect();
    let ids2: std::collections::HashSet<_> = cuts2
        .iter()
        .map(|c| r2.sealer().chunk_id(&data[c.clone()]))
        .collect();
    assert!(ids1.is_disjoint(&ids2), "no chunk id is shared");
    // Even the same bytes get a different id.
    assert_ne!(r1.sealer().chunk_id(b"same"), r2.sealer().chunk_id(b"same"));
}

#[test]
fn chunks_are_spread_over_several_packs() {
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let opts = ChunkStoreOptions {
        packer: PackerOptions {
            target_size: 64 << 20,
            open_packs: 2,
        },
        // Every chunk a group: what is spread is groups.
        group_size: 0,
        ..small_packs()
    };
    let store = ChunkStore::new(&repo, &index, opts);
    let refs = store
        .put_stream(pseudo_random(4 << 20, 5).as_slice())
        .unwrap();
    store.flush().unwrap();
    let packs: Vec<_> = refs
        .iter()
        .map(|r| index.lookup(&r.id).unwrap().unwrap().pack)
        .collect();
    let distinct: std::collections::HashSet<_> = packs.iter().collect();
    assert_eq!(distinct.len(), 2, "one stream lands in both open packs");
    // Consecutive chunks do not simply follow each other in one pack.
    let switches = packs.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches > refs.len() / 5,
        "{switches} switches over {} chunks",
        refs.len()
    );
}

#[test]
fn a_crash_at_any_operation_of_a_flush_leaves_a_readable_repository() {
    // Text alone compresses into one small pack: random data makes several.
    let mut data = text_like(512 << 10, 3);
    data.extend(pseudo_random(1 << 20, 3));
    let mut k = 1;
    loop {
        let inner = Arc::new(MemoryBackend::new());
        let faulty = Arc::new(FaultyBackend::new(inner.clone()));
        let repo = Repository::init(
            faulty.clone() as Arc<dyn Backend>,
            PASSWORD,
            &fast_options(),
        )
        .unwrap();
        faulty.set_plan(FaultPlan {
            crash_at: Some(k),
            ..FaultPlan::default()
        });
        let result = {
            let index = ChunkIndex::open(None).unwrap();
            let store = ChunkStore::new(&repo, &index, small_packs());
            store
                .put_stream(data.as_slice())
                .and_then(|refs| store.flush().map(|()| refs))
        };
        let crashed = faulty.crashed();
        // After the "crash", open afresh: everything an index names is readable.
        let repo = Repository::open(inner.clone() as Arc<dyn Backend>, PASSWORD).unwrap();
        let index = ChunkIndex::open(None).unwrap();
        index.sync(&repo).unwrap();
        let store = ChunkStore::new(&repo, &index, small_packs());
        let refs = repo.chunker().cut_all(&data);
        for r in &refs {
            let id = repo.sealer().chunk_id(&data[r.clone()]);
            if index.lookup(&id).unwrap().is_some() {
                assert_eq!(store.get(&id).unwrap(), &data[r.clone()]);
            }
        }
        if !crashed {
            assert!(result.is_ok());
            break;
        }
        assert!(result.is_err(), "a crash is reported");
        k += 1;
    }
    assert!(k > 3, "the crash points covered several operations");
}

#[test]
fn an_index_file_that_supersedes_another_hides_it() {
    use kura::chunkstore::index::{read_index_file, write_index_file};
    use kura::format::index::IndexFile;
    let (backend, repo) = memory_repo();
    let opts = ChunkStoreOptions {
        index_every: 1000,
        ..small_packs()
    };
    let early = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &early, opts);
    store.put_stream(sample_input().as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);
    let listed = backend.list("index").unwrap();
    assert_eq!(listed.len(), 1);
    let old_id = kura::format::layout::parse_index_path(&listed[0].path).unwrap();
    let old = read_index_file(&repo, &old_id).unwrap();
    assert!(old.packs.len() >= 2);
    // As prune would: a new file without the first pack, superseding the old.
    let dropped = &old.packs[0];
    let kept = &old.packs[1];
    let replacement = IndexFile {
        supersedes: vec![old_id],
        packs: old.packs[1..].to_vec(),
    };
    write_index_file(&repo, &replacement, 3).unwrap();
    // A fresh cache never loads the superseded file.
    let fresh = ChunkIndex::open(None).unwrap();
    fresh.sync(&repo).unwrap();
    assert!(fresh.lookup(&dropped.entries[0].id).unwrap().is_none());
    assert!(fresh.lookup(&kept.entries[0].id).unwrap().is_some());
    // A cache that had loaded the old file starts over without it.
    let report = early.sync(&repo).unwrap();
    assert!(report.rebuilt);
    assert!(early.lookup(&dropped.entries[0].id).unwrap().is_none());
    assert!(early.lookup(&kept.entries[0].id).unwrap().is_some());
    // Once the superseded file is deleted, nothing changes.
    backend.delete(&listed[0].path).unwrap();
    assert!(!early.sync(&repo).unwrap().rebuilt);
    assert!(fresh.lookup(&kept.entries[0].id).unwrap().is_some());
}

#[test]
fn distrusted_packs_are_not_deduplicated_against_and_reads_try_every_copy() {
    let (backend, repo) = memory_repo();
    let data = pseudo_random(600 << 10, 31);
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let refs = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);
    let ids: Vec<_> = refs.iter().map(|r| r.id).collect();
    let first: HashSet<PackId> = ids
        .iter()
        .map(|id| index.lookup(id).unwrap().unwrap().pack)
        .collect();
    // Trusting everything, nothing is new.
    let store = ChunkStore::new(&repo, &index, small_packs());
    assert!(store.all_stored(&ids).unwrap());
    store.put_stream(data.as_slice()).unwrap();
    assert_eq!(store.stats().chunks_new, 0);
    drop(store);
    // Distrusting the packs, every chunk is stored again, in new packs.
    let store = ChunkStore::new(&repo, &index, small_packs());
    store.distrust(first.clone());
    assert!(!store.all_stored(&ids).unwrap());
    store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().chunks_new, refs.len() as u64);
    assert!(store.all_stored(&ids).unwrap());
    drop(store);
    for id in &ids {
        assert!(!first.contains(&index.lookup(id).unwrap().unwrap().pack));
        assert_eq!(index.locations(id).unwrap().len(), 2);
    }
    // The new copies are lost: reads fall back to the old ones.
    for info in backend.list("data").unwrap() {
        let pack = kura::format::layout::parse_pack_path(&info.path).unwrap();
        if !first.contains(&pack) {
            backend.delete(&info.path).unwrap();
        }
    }
    let store = ChunkStore::new(&repo, &index, small_packs());
    assert_eq!(restore(&store, &refs), data);
}

#[test]
fn the_cache_remembers_damaged_packs_until_they_are_read_whole() {
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let refs = store.put_stream(&pseudo_random(300 << 10, 41)[..]).unwrap();
    store.flush().unwrap();
    drop(store);
    let pack = index.lookup(&refs[0].id).unwrap().unwrap().pack;
    let gone = PackId([7; 32]);
    index.record_pack_health(&[pack, gone], &[], 1).unwrap();
    // A rebuild of the index part of the cache keeps the marks.
    index.rebuild_from_pack_headers(&repo).unwrap();
    assert_eq!(index.damaged_packs().unwrap(), HashSet::from([pack, gone]));
    index.record_pack_health(&[], &[pack], 2).unwrap();
    assert_eq!(index.damaged_packs().unwrap(), HashSet::from([gone]));
    // Packs the index names but a listing lacks are distrusted too.
    let mut listed: HashSet<PackId> = backend
        .list("data")
        .unwrap()
        .iter()
        .map(|i| kura::format::layout::parse_pack_path(&i.path).unwrap())
        .collect();
    assert!(index.packs_missing_from(&listed).unwrap().is_empty());
    assert_eq!(
        index.distrusted_packs(&listed).unwrap(),
        HashSet::from([gone])
    );
    listed.remove(&pack);
    assert_eq!(index.packs_missing_from(&listed).unwrap(), [pack]);
    assert_eq!(
        index.distrusted_packs(&listed).unwrap(),
        HashSet::from([pack, gone])
    );
}

#[test]
fn reads_of_packs_start_and_end_on_aligned_windows() {
    use kura::backend::HookedBackend;
    use kura::chunkstore::READ_WINDOW;
    use std::sync::Mutex;
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let data = sample_input();
    let refs = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);

    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    let inner: Arc<dyn Backend> = backend.clone();
    let hooked = HookedBackend::new(inner).on_read(move |path, range| {
        if let (true, Some(r)) = (path.starts_with("data/"), range) {
            seen.lock().unwrap().push((path.to_owned(), r.clone()));
        }
    });
    let reader = Repository::open(Arc::new(hooked), PASSWORD).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&reader).unwrap();
    let store = ChunkStore::new(&reader, &index, ChunkStoreOptions::default());
    let ids: Vec<_> = refs.iter().map(|r| r.id).collect();
    let one_by_one = restore(&store, &refs[..5]);
    let mut batched = Vec::new();
    store
        .for_each_chunk(&ids, |_, c| {
            batched.push(c.len());
            Ok(())
        })
        .unwrap();
    assert_eq!(one_by_one, data[..one_by_one.len()]);
    let ranges = ranges.lock().unwrap();
    // Chunks of one group are read once (the store keeps the groups it
    // opened last), so five chunks may take one read; the batch more.
    assert!(ranges.len() > 1, "{ranges:?}");
    for (path, r) in ranges.iter() {
        let size = backend.read(path, None).unwrap().len() as u64;
        assert_eq!(r.start % READ_WINDOW, 0, "{path} {r:?}");
        assert!(
            r.end % READ_WINDOW == 0 || r.end == size,
            "{path} {r:?} of {size}"
        );
    }
}

#[test]
fn reading_a_stream_chunk_by_chunk_opens_each_group_once() {
    use kura::backend::HookedBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let data = text_like(3 << 20, 4);
    let refs = store.put_stream(data.as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);
    let groups: HashSet<_> = refs
        .iter()
        .map(|r| {
            let l = index.lookup(&r.id).unwrap().unwrap();
            (l.pack, l.offset)
        })
        .collect();
    assert!(groups.len() < refs.len() / 4, "{} groups", groups.len());

    let reads = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&reads);
    let inner: Arc<dyn Backend> = backend.clone();
    let hooked = HookedBackend::new(inner).on_read(move |path, _| {
        if path.starts_with("data/") {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let reader = Repository::open(Arc::new(hooked), PASSWORD).unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&reader).unwrap();
    let store = ChunkStore::new(&reader, &index, ChunkStoreOptions::default());
    assert_eq!(restore(&store, &refs), data);
    assert_eq!(reads.load(Ordering::Relaxed), groups.len());
}

/// Small puts (small files) are gathered and sealed together: their
/// chunks share groups, each reads back alone, before the flush (from
/// the open packs) and after it, and a group holds at most a quarter of
/// the group size beyond its last put.
#[test]
fn small_puts_are_sealed_together_and_read_back_alone() {
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let files: Vec<Vec<u8>> = (0..200)
        .map(|i| text_like(3000 + i * 37, i as u64))
        .collect();
    let refs: Vec<Vec<ChunkRef>> = files
        .iter()
        .map(|f| store.put_stream(f.as_slice()).unwrap())
        .collect();
    // Read back while some are still gathered, sealed or in open packs.
    assert_eq!(restore(&store, &refs[199]), files[199]);
    assert_eq!(restore(&store, &refs[3]), files[3]);
    let more = text_like(5000, 999);
    let more_refs = store.put_stream(more.as_slice()).unwrap();
    store.flush().unwrap();
    assert_eq!(restore(&store, &more_refs), more);
    for (f, r) in files.iter().zip(&refs) {
        assert_eq!(&restore(&store, r), f);
    }
    let groups: HashSet<_> = refs
        .iter()
        .flatten()
        .map(|r| {
            let l = index.lookup(&r.id).unwrap().unwrap();
            assert!(l.raw_offset + l.raw_len <= (DEFAULT_GROUP_SIZE / 2) as u32);
            (l.pack, l.offset)
        })
        .collect();
    assert!(groups.len() < files.len() / 10, "{} groups", groups.len());
    drop(store);
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    for (f, r) in files.iter().zip(&refs) {
        assert_eq!(&restore(&store, r), f);
    }
}

/// A chunk fetched from a group opened for a small part of it (as a
/// deduplicated chunk is, by the second file that names it) is kept, so
/// the next files that name it do not open that group again; a chunk of
/// a group read in full is not.
#[test]
fn a_chunk_read_from_a_group_opened_for_it_alone_is_kept() {
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, small_packs());
    let files: Vec<Vec<u8>> = (0..40).map(|i| text_like(3000, i)).collect();
    let refs: Vec<ChunkRef> = files
        .iter()
        .map(|f| {
            let r = store.put_stream(f.as_slice()).unwrap();
            assert_eq!(r.len(), 1);
            r[0]
        })
        .collect();
    store.flush().unwrap();
    drop(store);
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let fetch = |ids: &[kura::id::ChunkId]| {
        let mut out = vec![Vec::new(); ids.len()];
        store
            .for_each_chunk(ids, |k, c| {
                out[k] = c.to_vec();
                Ok(())
            })
            .map(|()| out)
    };
    // One file's chunk alone: a small part of its group.
    assert_eq!(fetch(&[refs[5].id]).unwrap(), [files[5].clone()]);
    let pack = index.lookup(&refs[5].id).unwrap().unwrap().pack;
    assert_eq!(index.lookup(&refs[6].id).unwrap().unwrap().pack, pack);
    backend.delete(&layout::pack_path(&pack)).unwrap();
    // Kept: read without the pack. Its neighbour was not wanted, so it
    // was not kept.
    assert_eq!(fetch(&[refs[5].id]).unwrap(), [files[5].clone()]);
    assert!(fetch(&[refs[6].id]).is_err());
}
