//! What the repository must never give away, and what it must never accept.

use std::sync::Arc;

use kura::ErrorKind;
use kura::algorithms::crypto::kdf::KdfParams;
use kura::backend::{Backend, MemoryBackend, write_bytes};
use kura::chunkstore::index::{ChunkIndex, read_index_file};
use kura::chunkstore::pack::{PackerOptions, verify_pack};
use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
use kura::format::config::{self, ConfigHeader};
use kura::format::envelope::ObjectType;
use kura::format::keyslot::KeySlot;
use kura::format::layout;
use kura::format::pack::PackKind;
use kura::id::{IndexId, PackId};
use kura::repository::Repository;
use sha2::Digest;

use crate::common::{PASSWORD, all_objects, memory_repo, text_like};

const CANARY: &[u8] = b"kura-canary-7f3a9c1e-do-not-leak-this-string";

fn store_bytes(repo: &Repository, data: &[u8]) {
    let index = ChunkIndex::open(None).unwrap();
    let opts = ChunkStoreOptions {
        packer: PackerOptions {
            target_size: 64 << 10,
            open_packs: 2,
        },
        ..ChunkStoreOptions::default()
    };
    let store = ChunkStore::new(repo, &index, opts);
    store.put_stream(data).unwrap();
    store
        .put_blob(PackKind::Tree, b"{\"tree\": \"metadata blob\"}")
        .unwrap();
    store.flush().unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn canary_and_its_plain_hashes_never_reach_storage() {
    let (backend, repo) = memory_repo();
    // The canary alone (one small chunk), and inside a larger stream.
    let mut data = CANARY.to_vec();
    store_bytes(&repo, &data);
    data = text_like(300 << 10, 7);
    for i in 0..50 {
        let at = i * 6000;
        data[at..at + CANARY.len()].copy_from_slice(CANARY);
    }
    store_bytes(&repo, &data);
    let needles: Vec<Vec<u8>> = vec![
        CANARY.to_vec(),
        CANARY[..16].to_vec(),
        blake3::hash(CANARY).as_bytes().to_vec(),
        sha2::Sha256::digest(CANARY).to_vec(),
        blake3::hash(CANARY).to_hex().as_bytes().to_vec(),
        hex::encode(sha2::Sha256::digest(CANARY)).into_bytes(),
    ];
    for (path, bytes) in all_objects(backend.as_ref()) {
        for needle in &needles {
            assert!(!contains(&bytes, needle), "{path} contains a canary form");
            assert!(
                !contains(path.as_bytes(), needle),
                "{path} names a canary form"
            );
        }
    }
}

fn read_object(repo: &Repository, path: &str, bytes: &[u8]) -> kura::Result<()> {
    if path == layout::CONFIG {
        config::open_body(bytes, &repo.sealer().keys().shared).map(drop)
    } else if path.starts_with("keys/") {
        KeySlot::decode(bytes)
            .and_then(|s| s.unlock(PASSWORD))
            .map(drop)
    } else if path.starts_with("data/") {
        verify_pack(repo.sealer(), &layout::parse_pack_path(path)?, bytes).map(drop)
    } else if path.starts_with("index/") {
        let id = layout::parse_index_path(path)?;
        repo.sealer()
            .open(ObjectType::Index, id.as_bytes(), bytes, 64 << 20)
            .map(drop)
    } else {
        panic!("unexpected object {path}")
    }
}

#[test]
fn flipping_any_byte_of_any_object_is_detected() {
    let (backend, repo) = memory_repo();
    store_bytes(&repo, &text_like(40 << 10, 3));
    let objects = all_objects(backend.as_ref());
    assert!(
        objects.iter().any(|(p, _)| p.starts_with("data/"))
            && objects.iter().any(|(p, _)| p.starts_with("index/"))
    );
    for (path, bytes) in &objects {
        read_object(&repo, path, bytes)
            .unwrap_or_else(|e| panic!("{path} reads before tampering: {e}"));
        // Key slots cost an Argon2id run per byte: check every 3rd byte there.
        let step = if path.starts_with("keys/") { 3 } else { 1 };
        for i in (0..bytes.len()).step_by(step) {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    read_object(&repo, path, &bad).is_err(),
                    "{path}: flip of byte {i} went unnoticed"
                );
            }
        }
        let mut cut = bytes.clone();
        cut.pop();
        assert!(
            read_object(&repo, path, &cut).is_err(),
            "{path}: truncation went unnoticed"
        );
    }
}

#[test]
fn tampered_blob_is_caught_on_the_chunk_read_path() {
    let (backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let refs = store
        .put_stream(text_like(100 << 10, 8).as_slice())
        .unwrap();
    store.flush().unwrap();
    let loc = index.lookup(&refs[0].id).unwrap().unwrap();
    backend.tamper(&layout::pack_path(&loc.pack), |b| {
        b[loc.offset as usize + 30] ^= 4;
    });
    assert_eq!(
        store.get(&refs[0].id).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn objects_copied_under_another_name_or_type_are_rejected() {
    let (backend, repo) = memory_repo();
    store_bytes(&repo, &text_like(64 << 10, 5));
    let sealer = repo.sealer();
    let packs = backend.list("data").unwrap();
    let pack_path = &packs[0].path;
    let pack = backend.read(pack_path, None).unwrap();
    let pack_id = layout::parse_pack_path(pack_path).unwrap();
    // The same pack under another name.
    let other = PackId::random();
    write_bytes(backend.as_ref(), &layout::pack_path(&other), &pack).unwrap();
    assert_eq!(
        verify_pack(sealer, &other, &pack).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // A blob read as the other blob type, or under another id.
    let header = verify_pack(sealer, &pack_id, &pack).unwrap();
    let e = header.entries[0];
    let blob = &pack[e.offset as usize..(e.offset + e.stored_len) as usize];
    let other_kind = if header.kind == PackKind::Data {
        PackKind::Tree
    } else {
        PackKind::Data
    };
    let open = |kind, id| sealer.open_chunk(kind, id, blob, e.raw_offset, e.raw_len);
    assert!(open(other_kind, &e.id).is_err());
    assert!(open(header.kind, &kura::id::ChunkId([0; 32])).is_err());
    assert!(open(header.kind, &e.id).is_ok());
    // An index file under another name, or read as another type.
    let index_path = &backend.list("index").unwrap()[0].path;
    let index_bytes = backend.read(index_path, None).unwrap();
    let moved = IndexId::random();
    write_bytes(backend.as_ref(), &layout::index_path(&moved), &index_bytes).unwrap();
    assert_eq!(
        read_index_file(&repo, &moved).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let id = layout::parse_index_path(index_path).unwrap();
    assert!(
        sealer
            .open(ObjectType::Snapshot, id.as_bytes(), &index_bytes, 1 << 20)
            .is_err()
    );
    assert!(read_index_file(&repo, &id).is_ok());
}

#[test]
fn objects_of_another_repository_are_rejected() {
    let (b1, r1) = memory_repo();
    store_bytes(&r1, &text_like(64 << 10, 5));
    let (_b2, r2) = memory_repo();
    let path = &b1.list("data").unwrap()[0].path;
    let pack = b1.read(path, None).unwrap();
    let id = layout::parse_pack_path(path).unwrap();
    assert!(verify_pack(r1.sealer(), &id, &pack).is_ok());
    assert!(verify_pack(r2.sealer(), &id, &pack).is_err());
}

#[test]
fn wrong_password_is_its_own_error() {
    let (backend, _repo) = memory_repo();
    let err = Repository::open(backend as Arc<dyn Backend>, b"not the password")
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::WrongPassword);
    assert!(err.to_string().contains("wrong password"));
}

/// Replaces every key slot by one with the given (out-of-policy) parameters,
/// patched into a valid slot's bytes.
fn plant_slot(backend: &MemoryBackend, m_cost: u32, t_cost: u32) {
    for info in backend.list("keys").unwrap() {
        backend.tamper(&info.path, |b| {
            b[44..48].copy_from_slice(&m_cost.to_le_bytes());
            b[48..52].copy_from_slice(&t_cost.to_le_bytes());
        });
    }
}

#[test]
fn key_slots_outside_the_kdf_policy_are_refused() {
    for (m, t) in [
        (1024, 2),
        (19 * 1024, 1),
        (u32::MAX, 2),
        (64 * 1024, 1_000_000),
    ] {
        let (backend, _repo) = memory_repo();
        plant_slot(&backend, m, t);
        let err = Repository::open(backend as Arc<dyn Backend>, PASSWORD)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::KeySlotRefused, "m={m} t={t}: {err}");
    }
    // Creating such a slot is refused too.
    let (_backend, repo) = memory_repo();
    let weak = KdfParams {
        m_cost: 1024,
        ..KdfParams::FLOOR
    };
    assert_eq!(
        repo.add_key(b"x", weak).unwrap_err().kind(),
        ErrorKind::KeySlotRefused
    );
}

#[test]
fn unknown_mandatory_feature_or_newer_version_is_refused() {
    for (offset, value) in [(12usize, 1u8), (19, 0x80), (8, 4), (8, 2), (8, 1)] {
        let (backend, _repo) = memory_repo();
        backend.tamper("config", |b| b[offset] = value);
        let err = Repository::read_header(backend.as_ref()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "byte {offset}");
        let err = Repository::open(backend as Arc<dyn Backend>, PASSWORD)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
    // An unknown compatible feature is fine to the header check, but the
    // header is bound to the body, so changing it is still detected.
    let (backend, _repo) = memory_repo();
    let bytes = backend.read("config", None).unwrap();
    let header = ConfigHeader::decode(&bytes).unwrap();
    assert_eq!(header.compatible_features, 0);
    backend.tamper("config", |b| b[20] = 1);
    assert!(Repository::read_header(backend.as_ref()).is_ok());
    assert_eq!(
        Repository::open(backend as Arc<dyn Backend>, PASSWORD)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn key_management_keeps_the_repository_openable() {
    let (backend, mut repo) = memory_repo();
    let dynb = || backend.clone() as Arc<dyn Backend>;
    let second = repo.add_key(b"second", KdfParams::FLOOR).unwrap();
    assert_eq!(repo.list_keys().unwrap().len(), 2);
    let via_second = Repository::open(dynb(), b"second").unwrap();
    assert_eq!(via_second.current_slot(), second);
    assert_eq!(
        repo.remove_key(&repo.current_slot()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    repo.change_password(b"third", KdfParams::FLOOR).unwrap();
    assert_eq!(
        Repository::open(dynb(), PASSWORD).err().unwrap().kind(),
        ErrorKind::WrongPassword
    );
    Repository::open(dynb(), b"third").unwrap();
    repo.remove_key(&second).unwrap();
    assert_eq!(
        Repository::open(dynb(), b"second").err().unwrap().kind(),
        ErrorKind::WrongPassword
    );
    assert_eq!(repo.list_keys().unwrap().len(), 1);
}

#[test]
fn init_refuses_an_existing_repository() {
    let (backend, _repo) = memory_repo();
    let err = Repository::init(
        backend as Arc<dyn Backend>,
        b"x",
        &crate::common::fast_options(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}
