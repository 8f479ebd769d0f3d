//! Throughput of the backup hot path, one criterion group per stage:
//! chunking, chunk ids (keyed BLAKE3), envelopes (XChaCha20-Poly1305),
//! zstd, and pack building. Every group reports bytes of input per second.
//!
//! Inputs are deterministic (a xorshift stream and generated SQL-like text)
//! so that runs on different days compare the same work. Measurement is
//! kept short (`sample_size(10)`, 3 s) so the whole bench fits in a few
//! minutes on a small CI machine; see `benches/README.md`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};

use kura::algorithms::chunker::Chunker;
use kura::algorithms::compress;
use kura::algorithms::crypto::roles::KeySet;
use kura::algorithms::crypto::session::WriterSession;
use kura::algorithms::crypto::{MasterSecret, Subkeys, keyed_hash};
use kura::chunkstore::pack::{Packer, PackerOptions};
use kura::format::envelope::{self, ObjectType};
use kura::format::pack::PackKind;
use kura::id::{ChunkId, RepoId};
use kura::repository::DEFAULT_CHUNKER;
use kura::repository::sealer::Sealer;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The default average chunk size (`DEFAULT_CHUNKER.avg`).
const CHUNK: usize = 32 * KIB;
/// Size of each chunker input stream.
const STREAM: usize = 32 * MIB;
/// Sealed blobs fed to the packer per iteration: 2 default packs' worth.
const PACK_INPUT: usize = 32 * MIB;

fn subkeys() -> Subkeys {
    MasterSecret::from_bytes([1; 32]).subkeys()
}

/// Deterministic incompressible bytes (xorshift64).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic text shaped like a SQL dump: repetitive keywords and
/// column names, varying numbers, names and timestamps.
fn sql_like(len: usize, seed: u64) -> Vec<u8> {
    const TABLES: [&str; 4] = ["orders", "customers", "invoices", "shipments"];
    const CITIES: [&str; 6] = ["Osaka", "Lyon", "Porto", "Tartu", "Quito", "Perth"];
    const STATUS: [&str; 4] = ["pending", "paid", "shipped", "refunded"];
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::with_capacity(len + 256);
    let mut row = 0u64;
    while out.len() < len {
        let r = next();
        let table = TABLES[(r % 4) as usize];
        let city = CITIES[((r >> 8) % 6) as usize];
        let status = STATUS[((r >> 16) % 4) as usize];
        let amount = (r >> 24) % 1_000_000;
        let (day, hour, min) = ((r >> 44) % 28 + 1, (r >> 50) % 24, (r >> 56) % 60);
        let _ = writeln!(
            out,
            "INSERT INTO {table} (id, customer, city, status, amount, created_at) VALUES \
             ({row}, 'customer_{:05}', '{city}', '{status}', {}.{:02}, '2026-11-{day:02} {hour:02}:{min:02}:00');",
            (r >> 32) % 50_000,
            amount / 100,
            amount % 100,
        );
        row += 1;
    }
    let mut bytes = out.into_bytes();
    bytes.truncate(len);
    bytes
}

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn chunker(c: &mut Criterion) {
    let chunker = Chunker::new(&subkeys().chunker, DEFAULT_CHUNKER);
    let mut group = c.benchmark_group("chunker");
    short(&mut group);
    group.throughput(Throughput::Bytes(STREAM as u64));
    for (name, data) in [
        ("random", pseudo_random(STREAM, 1)),
        ("sql_text", sql_like(STREAM, 2)),
    ] {
        group.bench_with_input(BenchmarkId::new("fastcdc_32MiB", name), &data, |b, data| {
            b.iter(|| chunker.cut_all(black_box(data)));
        });
    }
    group.finish();
}

fn chunk_id(c: &mut Criterion) {
    let key = subkeys().chunk_id;
    let mut group = c.benchmark_group("keyed_blake3");
    short(&mut group);
    for (name, len) in [("32KiB", CHUNK), ("1MiB", MIB)] {
        let data = pseudo_random(len, 3);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
            b.iter(|| keyed_hash(&key, black_box(data)));
        });
    }
    group.finish();
}

fn envelope(c: &mut Criterion) {
    // A data blob: scheme 2, sealed to the admin under one session key.
    let session = WriterSession::new(&subkeys().admin_public).expect("a session");
    let (id, repo) = ([4u8; 32], RepoId([5; 32]));
    let plaintext = pseudo_random(CHUNK, 4);
    let sealed = envelope::seal_to_admin(&session, ObjectType::DataBlob, &id, &repo, &plaintext);
    let mut group = c.benchmark_group("envelope_32KiB");
    short(&mut group);
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("seal", |b| {
        b.iter(|| {
            envelope::seal_to_admin(
                &session,
                ObjectType::DataBlob,
                &id,
                &repo,
                black_box(&plaintext),
            )
        });
    });
    group.bench_function("open", |b| {
        b.iter(|| {
            envelope::open_sealed(
                session.key(),
                ObjectType::DataBlob,
                &id,
                &repo,
                black_box(&sealed),
            )
            .unwrap()
        });
    });
    group.finish();
}

fn zstd_chunks(c: &mut Criterion) {
    // 1 MiB of text compressed chunk by chunk, as the backup path does.
    let text = sql_like(MIB, 5);
    let mut group = c.benchmark_group("zstd_per_32KiB_chunk_sql_text");
    short(&mut group);
    group.throughput(Throughput::Bytes(text.len() as u64));
    for level in [1, 3, 6] {
        group.bench_with_input(BenchmarkId::new("level", level), &level, |b, &level| {
            b.iter(|| {
                for chunk in text.chunks(CHUNK) {
                    black_box(compress::compress(black_box(chunk), level).unwrap());
                }
            });
        });
    }
    // What `compress::compress` would cost with one context kept per thread
    // instead of a fresh one per chunk (`zstd::bulk::compress` builds one).
    let mut reused = zstd::bulk::Compressor::new(3).expect("zstd context");
    group.bench_function("level_3_reused_context", |b| {
        b.iter(|| {
            for chunk in text.chunks(CHUNK) {
                black_box(reused.compress(black_box(chunk)).unwrap());
            }
        });
    });
    group.finish();
}

fn packer(c: &mut Criterion) {
    let keys = KeySet::admin(MasterSecret::from_bytes([1; 32]));
    let sealer =
        Sealer::new(keys, RepoId([6; 32]), DEFAULT_CHUNKER.max as usize).expect("a sealer");
    // Distinct sealed blobs, reused round-robin: the packer does not look
    // inside them, so only their lengths and count matter.
    let blobs: Vec<(ChunkId, Vec<u8>)> = (0..64u64)
        .map(|i| {
            let plain = pseudo_random(CHUNK, 100 + i);
            let id = sealer.chunk_id(&plain);
            let sealed = sealer.seal_group(PackKind::Data, &plain, 0);
            (id, sealed)
        })
        .collect();
    let per_blob = blobs[0].1.len();
    let count = PACK_INPUT / per_blob;
    let raw_len = u32::try_from(CHUNK).expect("chunk fits u32");
    let mut group = c.benchmark_group("packer");
    short(&mut group);
    group.throughput(Throughput::Bytes((count * per_blob) as u64));
    group.bench_function("sealed_32KiB_blobs_into_default_packs", |b| {
        b.iter(|| {
            let mut packer = Packer::new(PackKind::Data, PackerOptions::default());
            let mut finished = 0usize;
            for (id, sealed) in blobs.iter().cycle().take(count) {
                if let Some(pack) = packer.add_group(&sealer, &[(*id, raw_len)], sealed) {
                    finished += black_box(pack.bytes.len());
                }
            }
            finished += packer
                .finish_all(&sealer)
                .iter()
                .map(|p| p.bytes.len())
                .sum::<usize>();
            finished
        });
    });
    group.finish();
}

criterion_group!(hot_path, chunker, chunk_id, envelope, zstd_chunks, packer);
criterion_main!(hot_path);
