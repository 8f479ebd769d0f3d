//! The checks behind kura's fuzz targets, one function per decoder, and the
//! seed inputs of `corpus/`. The targets in `fuzz_targets/` only call these,
//! so the same checks can replay the corpus and the regressions on stable
//! (`cargo run --release --example replay`).
//!
//! Every check asserts the decoders' contract (format/mod.rs): no panic,
//! every failure is `Corrupt` or `Unsupported`, and whatever decodes
//! re-encodes to something that decodes to the same value. Where the
//! encoding is canonical (every byte is a field, a checked constant or
//! checked zero padding) the check also asserts `encode(decode(x)) == x`.

use std::sync::{Once, OnceLock};

use kura::ErrorKind;
use kura::algorithms::crypto::kdf::KdfParams;
use kura::algorithms::crypto::{AeadKey, MasterSecret, NONCE_LEN, Subkeys};
use kura::format::config::{self, ConfigBody, ConfigHeader};
use kura::format::envelope::{self, ObjectType};
use kura::format::frame;
use kura::format::index::IndexFile;
use kura::format::keyslot::KeySlot;
use kura::format::pack::{self, PackHeader};
use kura::format::prune::PruneRecord;
use kura::format::snapshot::{CopyOf, RawPath, Snapshot, Summary};
use kura::format::tree::{Content, Entry, Extent, Metadata, Payload, TreeBlob};
use kura::id::{PackId, RepoId};
use kura::repository::sealer::Sealer;

/// The fixed key every target opens envelopes with (and, as a master
/// secret, derives the pack target's subkeys from).
pub const KEY: [u8; 32] = [7; 32];
pub const REPO: RepoId = RepoId([8; 32]);
/// Object id of the envelopes in the `envelope` target.
pub const OBJECT_ID: [u8; 32] = [9; 32];
pub const PACK_ID: PackId = PackId([10; 32]);
/// Decompression limit for frames (kept small so fuzzing stays fast).
pub const FRAME_LIMIT: usize = 256 << 10;

fn key() -> AeadKey {
    AeadKey(KEY)
}

/// Seals and opens packs' blobs and headers under subkeys of [`KEY`].
fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        let keys = kura::algorithms::crypto::roles::KeySet::admin(MasterSecret::from_bytes(KEY));
        Sealer::new(keys, REPO, kura::repository::DEFAULT_CHUNKER.max as usize).expect("a sealer")
    })
}

fn subkeys() -> Subkeys {
    MasterSecret::from_bytes(KEY).subkeys()
}

/// Decoders fail only with the kinds format/mod.rs promises.
fn assert_decode_error(result: &kura::Error) {
    assert!(
        matches!(result.kind(), ErrorKind::Corrupt | ErrorKind::Unsupported),
        "decoder failed with kind {:?}: {result}",
        result.kind()
    );
}

/// `KeySlot::decode`. The slot is fixed-size and every byte is a field or
/// a checked constant, so the encoding is canonical.
pub fn keyslot(data: &[u8]) {
    let slot = match KeySlot::decode(data) {
        Ok(slot) => slot,
        Err(e) => return assert_decode_error(&e),
    };
    assert_eq!(slot.encode(), data, "key slot encoding is canonical");
    assert_eq!(
        KeySlot::decode(&slot.encode()).expect("re-encoded slot decodes"),
        slot
    );
    // The policy is checked before Argon2id runs, so out-of-policy slots are
    // refused cheaply; in-policy ones would run the KDF, too slow to fuzz.
    if slot.params.check_policy().is_err() {
        let err = slot
            .unlock(b"pw")
            .expect_err("out-of-policy slot must not unlock");
        assert_eq!(err.kind(), ErrorKind::KeySlotRefused);
    }
}

/// `envelope::open` and `frame::decode`. The first byte picks the mode:
/// even, the rest is an envelope opened under the fixed key and ids; odd,
/// the rest is a frame that is sealed, opened and decoded (a fuzzer cannot
/// forge a tag, so this is how frame contents are reached through `open`).
pub fn envelope(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = key();
    if mode % 2 == 0 {
        match envelope::open(&key, ObjectType::Index, &OBJECT_ID, &REPO, rest) {
            Ok(plain) => {
                let nonce: [u8; NONCE_LEN] = rest[1..=NONCE_LEN]
                    .try_into()
                    .expect("opened envelope has a nonce");
                let again = envelope::seal_with_nonce(
                    &key,
                    &nonce,
                    ObjectType::Index,
                    &OBJECT_ID,
                    &REPO,
                    &plain,
                );
                assert_eq!(
                    again, rest,
                    "re-sealing with the same nonce gives the same envelope"
                );
                frame_checks(&plain);
            }
            Err(e) => assert_decode_error(&e),
        }
    } else {
        let nonce = [mode; NONCE_LEN];
        let sealed =
            envelope::seal_with_nonce(&key, &nonce, ObjectType::Index, &OBJECT_ID, &REPO, rest);
        assert_eq!(sealed.len(), rest.len() + envelope::OVERHEAD);
        let opened = envelope::open(&key, ObjectType::Index, &OBJECT_ID, &REPO, &sealed)
            .expect("own envelope opens");
        assert_eq!(opened, rest);
        assert!(envelope::open(&key, ObjectType::PackHeader, &OBJECT_ID, &REPO, &sealed).is_err());
        frame_checks(rest);
    }
}

fn frame_checks(framed: &[u8]) {
    let content = match frame::decode(framed, FRAME_LIMIT) {
        Ok(content) => content,
        Err(e) => return assert_decode_error(&e),
    };
    assert!(content.len() <= FRAME_LIMIT);
    if framed[0] == frame::CODEC_RAW {
        assert_eq!(
            frame::encode(&content, 0),
            framed,
            "a raw frame is canonical"
        );
    }
    for level in [0, 1] {
        let again = frame::decode(&frame::encode(&content, level), content.len())
            .expect("re-encoded frame decodes");
        assert_eq!(again, content);
    }
}

/// `PackHeader::decode_plaintext` and `pack::decode_trailer`; then the rest
/// read as a whole pack: `pack::open_whole`, and where the sealed header
/// opens, `pack::check_layout` and `kura::chunkstore::pack::verify_pack` (the fuzzer
/// can change blobs and padding under an authentic header). Input:
/// `blobs_end` u64 LE, then the header plaintext or pack.
pub fn pack_header(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let blobs_end = u64::from_le_bytes(*head);
    match PackHeader::decode_plaintext(rest, blobs_end) {
        Ok(header) => {
            let encoded = header.encode_plaintext();
            assert_eq!(encoded, rest, "pack header plaintext is canonical");
            let again = PackHeader::decode_plaintext(&encoded, blobs_end)
                .expect("re-encoded header decodes");
            assert_eq!(again, header);
            let mut next_free = 0u64;
            for e in &header.entries {
                assert!(u64::from(e.offset) >= next_free);
                next_free = u64::from(e.offset) + u64::from(e.stored_len);
            }
            assert!(next_free <= blobs_end);
        }
        Err(e) => assert_decode_error(&e),
    }
    let trailer = &rest[rest.len().saturating_sub(pack::TRAILER_LEN)..];
    for pack_len in [rest.len() as u64, blobs_end] {
        match pack::decode_trailer(trailer, pack_len) {
            Ok(len) => {
                assert!(len as usize <= pack::MAX_HEADER_LEN);
                assert!(u64::from(len) + pack::TRAILER_LEN as u64 <= pack_len);
                assert_eq!(&trailer[..4], len.to_le_bytes());
            }
            Err(e) => assert_decode_error(&e),
        }
    }
    whole_pack(rest);
}

fn whole_pack(bytes: &[u8]) {
    let sealer = sealer();
    let header = match pack::open_whole(&sealer.keys().shared, &PACK_ID, &REPO, bytes) {
        Ok(header) => header,
        Err(e) => return assert_decode_error(&e),
    };
    let layout = pack::check_layout(sealer.keys(), &PACK_ID, &header, bytes);
    if let Err(e) = &layout {
        assert_decode_error(e);
    }
    match kura::chunkstore::pack::verify_pack(sealer, &PACK_ID, bytes) {
        Ok(verified) => {
            assert!(
                layout.is_ok(),
                "verify_pack accepted a pack whose layout is damaged"
            );
            assert_eq!(verified, header);
        }
        Err(e) => assert_decode_error(&e),
    }
}

/// `IndexFile::decode`. Only `decode(encode(decode(x))) == decode(x)` is
/// asserted, not byte equality with the input.
pub fn index_file(data: &[u8]) {
    let file = match IndexFile::decode(data) {
        Ok(file) => file,
        Err(e) => return assert_decode_error(&e),
    };
    let again = IndexFile::decode(&file.encode()).expect("re-encoded index file decodes");
    assert_eq!(again, file);
    for p in &file.packs {
        let mut next_free = 0u64;
        for e in &p.entries {
            assert!(u64::from(e.offset) >= next_free);
            next_free = u64::from(e.offset) + u64::from(e.stored_len);
        }
        assert!(next_free <= p.size);
    }
}

/// `TreeBlob::decode`. The tree encoding is canonical (format-spec/10), so
/// whatever decodes must re-encode to exactly the input.
pub fn tree(data: &[u8]) {
    match TreeBlob::decode(data) {
        Ok(blob) => assert_eq!(blob.encode(), data, "tree encoding is canonical"),
        Err(e) => assert_decode_error(&e),
    }
}

/// `Snapshot::decode` (JSON, so not canonical): whatever decodes
/// re-encodes to something that decodes to the same snapshot, and its ids
/// parse (decode checks them; a snapshot that decodes must never fail
/// later on its tree or parent id).
pub fn snapshot(data: &[u8]) {
    let snap = match Snapshot::decode(data) {
        Ok(snap) => snap,
        Err(e) => return assert_decode_error(&e),
    };
    let again = Snapshot::decode(&snap.encode()).expect("re-encoded snapshot decodes");
    assert_eq!(again, snap);
    snap.tree_id().expect("a decoded snapshot has a tree id");
    snap.parent_id()
        .expect("a decoded snapshot's parent id parses");
    for p in &snap.paths {
        p.to_bytes().expect("a decoded snapshot's paths decode");
    }
}

/// `author::verify`, as an admin reader runs it on the frame content of an
/// index file: it never panics; content shorter than a block is `Corrupt`;
/// otherwise the body is the content minus 36 bytes, and the block verifies
/// exactly when it is the block of its named writer's key over that body.
pub fn author(data: &[u8]) {
    use kura::algorithms::crypto::roles::KeySet;
    use kura::format::author::{self, Authenticity, BLOCK_LEN};
    let admin = KeySet::admin(MasterSecret::from_bytes(KEY));
    match author::verify(&admin, ObjectType::Index, &OBJECT_ID, data) {
        Err(e) => {
            assert!(data.len() < BLOCK_LEN);
            assert_decode_error(&e);
        }
        Ok((body, who)) => {
            assert_eq!(body, &data[..data.len() - BLOCK_LEN]);
            let key = admin
                .mac_key_of(who.writer.id())
                .expect("the admin derives every key");
            let mut resealed = body.to_vec();
            author::seal_as(
                who.writer.id(),
                &key,
                ObjectType::Index,
                &OBJECT_ID,
                &mut resealed,
            );
            let verified = who.authenticity == Authenticity::Verified;
            assert_eq!(
                verified,
                resealed == data,
                "verified exactly when the block is right"
            );
        }
    }
}

/// `PruneRecord::decode`. Every byte is a field, a count or a checked
/// constant, and trailing bytes are refused, so the encoding is canonical;
/// no pack is condemned twice.
pub fn prune_record(data: &[u8]) {
    let record = match PruneRecord::decode(data) {
        Ok(record) => record,
        Err(e) => return assert_decode_error(&e),
    };
    assert_eq!(record.encode(), data, "prune record encoding is canonical");
    let packs: std::collections::HashSet<_> = record.condemned.iter().map(|(p, _)| p).collect();
    assert_eq!(
        packs.len(),
        record.condemned.len(),
        "a pack condemned twice"
    );
}

/// `ConfigHeader::decode` and `config::open_body`. The first byte picks the
/// mode: even, the rest is a whole config object opened under the fixed
/// key; odd, the rest is the body's frame (JSON inside), sealed under a
/// fixed v1 header and then opened.
pub fn config(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        config_object(rest);
    } else {
        check_object_id_derivation();
        let header = v1_header();
        let h = header.encode();
        let object_id = *blake3::hash(&h).as_bytes();
        let sealed = envelope::seal_with_nonce(
            &key(),
            &[mode; NONCE_LEN],
            ObjectType::Config,
            &object_id,
            &REPO,
            rest,
        );
        let mut object = h.to_vec();
        object.extend_from_slice(&sealed);
        config_object(&object);
    }
}

fn config_object(bytes: &[u8]) {
    let header = match ConfigHeader::decode(bytes) {
        Ok(header) => header,
        Err(e) => return assert_decode_error(&e),
    };
    assert_eq!(
        header.encode()[..],
        bytes[..config::HEADER_LEN],
        "config header is canonical"
    );
    assert_eq!(
        ConfigHeader::decode(&header.encode()).expect("re-encoded header decodes"),
        header
    );
    let body = match config::open_body(bytes, &key()) {
        Ok(body) => body,
        Err(e) => return assert_decode_error(&e),
    };
    body.check().expect("an opened body passed its checks");
    let again = config::open_body(&config::encode(&header, &body, &key()), &key())
        .expect("re-encoded config opens");
    assert_eq!(again, body);
}

fn v1_header() -> ConfigHeader {
    ConfigHeader {
        version: config::VERSION,
        mandatory_features: 0,
        compatible_features: 0,
        repo: REPO,
    }
}

/// The odd mode re-implements the config's object id (BLAKE3 of the clear
/// header); if the library changes it, every odd input would fail
/// authentication and the mode would silently test nothing. Fail loudly.
fn check_object_id_derivation() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        let header = v1_header();
        let object = config::encode(
            &header,
            &ConfigBody::v2(
                kura::repository::DEFAULT_CHUNKER,
                &subkeys().admin_public,
                1_764_115_200,
            ),
            &key(),
        );
        let object_id = *blake3::hash(&header.encode()).as_bytes();
        let sealed = &object[config::HEADER_LEN..];
        envelope::open(&key(), ObjectType::Config, &object_id, &REPO, sealed)
            .expect("config object id is BLAKE3 of the clear header, as this target assumes");
    });
}

/// Seed inputs: `(target, file name, bytes)`, small valid objects for each
/// target and mode.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use kura::format::index::IndexedPack;
    use kura::format::pack::{PackEntry, PackKind};
    use kura::id::{ChunkId, IndexId};

    let master = MasterSecret::from_bytes([5; 32]);
    let slot = KeySlot::create_with(
        &master,
        b"pw",
        REPO,
        KdfParams::FLOOR,
        1_790_000_000,
        [1; 32],
        [2; NONCE_LEN],
    )
    .expect("floor parameters are within policy");

    let text = b"INSERT INTO orders VALUES (1, 'customer_00042', 'Osaka', 12.50);\n".repeat(8);
    let envelope_sealed = envelope::seal_with_nonce(
        &key(),
        &[3; NONCE_LEN],
        ObjectType::Index,
        &OBJECT_ID,
        &REPO,
        &frame::encode(&text, 3),
    );

    let entries = |n: u32| -> Vec<PackEntry> {
        (0..n)
            .map(|i| PackEntry {
                id: ChunkId([i as u8; 32]),
                offset: i * 100,
                stored_len: 100,
                raw_offset: 0,
                raw_len: 150,
            })
            .collect()
    };
    let header = PackHeader {
        kind: PackKind::Data,
        entries: entries(3),
    };
    let whole_pack = {
        let sealer = sealer();
        let (mut blobs, mut entries) = (Vec::new(), Vec::new());
        // Two groups: two chunks compressed together, then an empty one.
        for group in [&[&b"first blob"[..], &text[..]][..], &[b""]] {
            let sealed = sealer.seal_group(PackKind::Data, &group.concat(), 3);
            let (offset, stored_len) = (blobs.len() as u32, sealed.len() as u32);
            let mut raw_offset = 0;
            for plain in group {
                entries.push(PackEntry {
                    id: sealer.chunk_id(plain),
                    offset,
                    stored_len,
                    raw_offset,
                    raw_len: plain.len() as u32,
                });
                raw_offset += plain.len() as u32;
            }
            blobs.extend_from_slice(&sealed);
        }
        let header = PackHeader {
            kind: PackKind::Data,
            entries,
        };
        pack::assemble_with_nonce(
            blobs,
            &header,
            sealer.keys(),
            &PACK_ID,
            &REPO,
            &[4; NONCE_LEN],
        )
    };

    let index = IndexFile {
        supersedes: vec![IndexId([11; 32])],
        packs: vec![
            IndexedPack {
                id: PackId([12; 32]),
                kind: PackKind::Data,
                size: 4096,
                entries: entries(3),
            },
            IndexedPack {
                id: PackId([13; 32]),
                kind: PackKind::Tree,
                size: 1 << 20,
                entries: Vec::new(),
            },
        ],
    };

    let body = ConfigBody::v2(
        kura::repository::DEFAULT_CHUNKER,
        &subkeys().admin_public,
        1_764_115_200,
    );
    let json = serde_json_body(&body);

    let mut authored = b"an index file's payload".to_vec();
    kura::format::author::seal(
        &kura::algorithms::crypto::roles::KeySet::admin(MasterSecret::from_bytes(KEY)),
        ObjectType::Index,
        &OBJECT_ID,
        &mut authored,
    );

    vec![
        ("keyslot", "floor_params", slot.encode()),
        ("author", "admin_block", authored),
        (
            "envelope",
            "sealed_zstd_frame",
            prefixed(0, &envelope_sealed),
        ),
        (
            "envelope",
            "zstd_frame",
            prefixed(1, &frame::encode(&text, 3)),
        ),
        (
            "envelope",
            "raw_frame",
            prefixed(1, &frame::encode(b"hello, kura", 0)),
        ),
        (
            "pack_header",
            "three_entries",
            [300u64.to_le_bytes().to_vec(), header.encode_plaintext()].concat(),
        ),
        (
            "pack_header",
            "whole_pack",
            [300u64.to_le_bytes().to_vec(), whole_pack].concat(),
        ),
        ("index_file", "two_packs", index.encode()),
        ("index_file", "empty", IndexFile::default().encode()),
        ("tree", "directory", sample_tree().encode()),
        (
            "tree",
            "extent_list",
            TreeBlob::ExtentList(vec![
                Extent::Data {
                    id: kura::id::ChunkId([1; 32]),
                    len: 4096,
                },
                Extent::Hole { len: 1 << 20 },
            ])
            .encode(),
        ),
        (
            "config",
            "object",
            prefixed(
                0,
                &config::encode_with_nonce(&v1_header(), &body, &key(), &[5; NONCE_LEN]),
            ),
        ),
        (
            "config",
            "body_frame",
            prefixed(1, &frame::encode(&json, 0)),
        ),
        ("snapshot", "nightly", sample_snapshot(false).encode()),
        (
            "snapshot",
            "copy_with_raw_path",
            sample_snapshot(true).encode(),
        ),
        ("prune_record", "two_condemned", sample_record().encode()),
        ("prune_record", "empty", PruneRecord::default().encode()),
    ]
}

/// The JSON of a config body as `config::encode` writes it, recovered by
/// opening an encoded object (the fuzz crate does not depend on serde_json).
fn serde_json_body(body: &ConfigBody) -> Vec<u8> {
    let header = v1_header();
    let object = config::encode(&header, body, &key());
    let object_id = *blake3::hash(&header.encode()).as_bytes();
    let framed = envelope::open(
        &key(),
        ObjectType::Config,
        &object_id,
        &REPO,
        &object[config::HEADER_LEN..],
    )
    .expect("own config opens");
    frame::decode(&framed, config::MAX_BODY_LEN).expect("own frame decodes")
}

fn sample_tree() -> TreeBlob {
    let meta = Metadata {
        mode: 0o644,
        nlink: 1,
        size: 10,
        user: b"root".to_vec(),
        ..Metadata::default()
    };
    TreeBlob::Directory(vec![
        Entry {
            name: b"a.txt".to_vec(),
            meta: meta.clone(),
            payload: Payload::File(Content::Inline(vec![Extent::Data {
                id: kura::id::ChunkId([2; 32]),
                len: 10,
            }])),
        },
        Entry {
            name: b"link".to_vec(),
            meta: Metadata { size: 0, ..meta },
            payload: Payload::Symlink(b"a.txt".to_vec()),
        },
    ])
}

fn sample_snapshot(copy: bool) -> Snapshot {
    let mut paths = vec![RawPath::from_bytes(b"/srv/www")];
    if copy {
        paths.push(RawPath::from_bytes(b"/srv/\xff\xfe"));
    }
    Snapshot {
        version: kura::format::snapshot::VERSION,
        tree: kura::id::ChunkId([1; 32]).to_hex(),
        parent: copy.then(|| kura::id::SnapshotId([2; 32]).to_hex()),
        time: 1_764_115_200_000_000_000,
        end_time: 1_764_115_260_000_000_000,
        hostname: "web1".into(),
        username: "root".into(),
        paths,
        tags: vec!["nightly".into()],
        program: "kura 0.1.0".into(),
        incomplete: copy,
        summary: Summary::default(),
        copy_of: copy.then(|| CopyOf::new(&REPO, &kura::id::SnapshotId([3; 32]))),
    }
}

fn sample_record() -> PruneRecord {
    PruneRecord {
        created: 1_790_000_000,
        grace: 3600,
        seen_index: vec![kura::id::IndexId([14; 32])],
        seen_orphans: vec![PackId([15; 32])],
        condemned: vec![(PackId([16; 32]), 8 << 20), (PackId([17; 32]), 4096)],
        forgotten: vec![kura::id::SnapshotId([18; 32])],
    }
}

fn prefixed(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

/// Runs the check of `target` on `data`; `None` for an unknown target.
pub fn run(target: &str, data: &[u8]) -> Option<()> {
    match target {
        "keyslot" => keyslot(data),
        "envelope" => envelope(data),
        "pack_header" => pack_header(data),
        "index_file" => index_file(data),
        "config" => config(data),
        "tree" => tree(data),
        "snapshot" => snapshot(data),
        "prune_record" => prune_record(data),
        _ => return None,
    }
    Some(())
}

/// Every target, by the name of its `fuzz_targets/` file.
pub const TARGETS: [&str; 8] = [
    "keyslot",
    "envelope",
    "pack_header",
    "index_file",
    "config",
    "tree",
    "snapshot",
    "prune_record",
];
