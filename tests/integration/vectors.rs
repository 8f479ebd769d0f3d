//! Golden tests against `format-spec/vectors/`. The vectors are generated
//! from fixed inputs by this module: with `KURA_WRITE_VECTORS=1` it writes
//! them, otherwise it requires the files to match byte for byte, decodes
//! every positive case and checks every negative case fails as named.

use std::path::PathBuf;

use kura::algorithms::chunker::{Chunker, gear_table};
use kura::algorithms::crypto::MasterSecret;
use kura::algorithms::crypto::kdf::KdfParams;
use kura::algorithms::crypto::roles::KeySet;
use kura::algorithms::crypto::session::{WriterSession, admin_session_key};
use kura::format::author;
use kura::format::config::{self, ChunkerParams, ConfigBody, ConfigHeader};
use kura::format::envelope::{self, ObjectType, aad};
use kura::format::frame;
use kura::format::index::{IndexFile, IndexedPack};
use kura::format::keyslot::KeySlot;
use kura::format::pack::{self, PackEntry, PackHeader, PackKind};
use kura::format::prune::PruneRecord;
use kura::format::tree::{Content, Entry, Extent, Metadata, Payload, TreeBlob, Xattr};
use kura::id::{ChunkId, IndexId, PackId, RepoId};
use kura::repository::DEFAULT_CHUNKER;
use serde_json::{Value, json};

pub(crate) fn master() -> MasterSecret {
    MasterSecret::from_bytes(std::array::from_fn(|i| i as u8))
}

/// The writer session of every scheme-2 vector: ephemeral secret e = 5e..
pub(crate) fn session() -> WriterSession {
    WriterSession::with_secret(
        x25519_dalek::StaticSecret::from([0x5e; 32]),
        &master().subkeys().admin_public,
    )
    .unwrap()
}

fn admin_sealer() -> kura::repository::sealer::Sealer {
    kura::repository::sealer::Sealer::new(
        KeySet::admin(master()),
        repo_id(),
        DEFAULT_CHUNKER.max as usize,
    )
    .unwrap()
}

pub(crate) fn repo_id() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

pub(crate) const PASSWORD: &[u8] = b"kura test vector password";

pub(crate) fn case(name: &str, expect: &str, fields: Value) -> Value {
    let mut v = json!({ "name": name, "expect": expect });
    v.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    v
}

pub(crate) fn file(description: &str, inputs: Value, cases: Vec<Value>) -> Value {
    json!({ "format": "kura v3", "description": description, "inputs": inputs, "cases": cases })
}

pub(crate) fn kind_name(r: kura::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

pub(crate) fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1;
    b
}

fn keyslot_vectors() -> Value {
    let keys = master().subkeys();
    let slot = KeySlot::create_with(
        &master(),
        PASSWORD,
        repo_id(),
        KdfParams::FLOOR,
        1_764_115_200,
        [0x33; 32],
        [0x44; 24],
    )
    .unwrap();
    let bytes = slot.encode();
    let patch = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        hex::encode(b)
    };
    let positive = case(
        "floor parameters",
        "ok",
        json!({ "password": hex::encode(PASSWORD), "slot": hex::encode(&bytes), "master": hex::encode(master().as_bytes()) }),
    );
    let neg = |name: &str, expect: &str, slot: String, password: &[u8]| {
        case(
            name,
            expect,
            json!({ "password": hex::encode(password), "slot": slot }),
        )
    };
    file(
        "subkeys derived from the master secret, and a key slot wrapping it (Argon2id at the policy floor)",
        json!({
            "master": hex::encode(master().as_bytes()),
            "repository_id": hex::encode(repo_id().0),
            "K_id": hex::encode(keys.chunk_id), "K_cdc": hex::encode(keys.chunker),
            "K_pad": hex::encode(keys.padding), "K_shared": hex::encode(keys.shared.0),
            "K_admin": hex::encode(*master().admin_mac()),
            "a": hex::encode(master().admin_x25519().to_bytes()), "A": hex::encode(keys.admin_public),
            "K_w(1)": hex::encode(*master().writer_mac(1)),
            "salt": hex::encode([0x33; 32]), "nonce": hex::encode([0x44; 24]), "created": 1_764_115_200u64,
            "m_cost": KdfParams::FLOOR.m_cost, "t_cost": KdfParams::FLOOR.t_cost, "p_cost": KdfParams::FLOOR.p_cost,
        }),
        vec![
            positive,
            neg(
                "wrong password",
                "WrongPassword",
                hex::encode(&bytes),
                b"wrong",
            ),
            neg(
                "m_cost below floor",
                "KeySlotRefused",
                patch(44, &1024u32.to_le_bytes()),
                PASSWORD,
            ),
            neg(
                "m_cost above ceiling",
                "KeySlotRefused",
                patch(44, &(4u32 << 20).to_le_bytes()),
                PASSWORD,
            ),
            neg(
                "t_cost 17",
                "KeySlotRefused",
                patch(48, &17u32.to_le_bytes()),
                PASSWORD,
            ),
            neg("role 2", "Unsupported", patch(41, &[2]), PASSWORD),
            neg(
                "role 1 on a role-0 slot's length",
                "Corrupt",
                patch(41, &[1]),
                PASSWORD,
            ),
            neg("reserved byte set", "Corrupt", patch(42, &[1]), PASSWORD),
            neg(
                "flipped wrapped byte",
                "WrongPassword",
                hex::encode(flip(&bytes, 130)),
                PASSWORD,
            ),
            neg(
                "flipped created byte",
                "WrongPassword",
                hex::encode(flip(&bytes, 56)),
                PASSWORD,
            ),
            neg("truncated", "Corrupt", hex::encode(&bytes[..175]), PASSWORD),
        ],
    )
}

fn check_keyslot(c: &Value) -> String {
    let slot = hex::decode(c["slot"].as_str().unwrap()).unwrap();
    let password = hex::decode(c["password"].as_str().unwrap()).unwrap();
    kind_name(
        KeySlot::decode(&slot)
            .and_then(|s| s.unlock(&password))
            .and_then(|keys| match c.get("master") {
                Some(want)
                    if keys.master().map(|m| hex::encode(m.as_bytes())).as_deref()
                        != want.as_str() =>
                {
                    Err(kura::Error::corrupt("wrong master"))
                }
                _ => Ok(()),
            }),
    )
}

fn envelope_vectors() -> Value {
    let keys = master().subkeys();
    let session = session();
    let text =
        b"kura envelope vector: the same line again, the same line again, the same line again.\n"
            .repeat(4);
    let id = ChunkId(kura::algorithms::crypto::keyed_hash(&keys.chunk_id, &text));
    let framed = frame::encode(&text, 3);
    let env = envelope::seal_to_admin_with_nonce(
        &session,
        &[0x55; 24],
        ObjectType::DataBlob,
        id.as_bytes(),
        &repo_id(),
        &framed,
    );
    let raw_framed = frame::encode(b"short", 0);
    let raw_id = ChunkId(kura::algorithms::crypto::keyed_hash(
        &keys.chunk_id,
        b"short",
    ));
    let raw_env = envelope::seal_to_admin_with_nonce(
        &session,
        &[0x66; 24],
        ObjectType::TreeBlob,
        raw_id.as_bytes(),
        &repo_id(),
        &raw_framed,
    );
    let index_env = envelope::seal_with_nonce(
        &keys.shared,
        &[0x67; 24],
        ObjectType::Index,
        raw_id.as_bytes(),
        &repo_id(),
        &raw_framed,
    );
    let c = |name: &str, expect: &str, ty: ObjectType, oid: &ChunkId, e: &[u8], plain: &[u8]| {
        case(
            name,
            expect,
            json!({ "object_type": ty as u8, "object_id": oid.to_hex(), "envelope": hex::encode(e), "plaintext": hex::encode(plain) }),
        )
    };
    let mut scheme1 = env.clone();
    scheme1[0] = 1;
    let mut low_order = env.clone();
    low_order[1..33].fill(0);
    let mut over_limit = raw_framed.clone();
    over_limit[1..5].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let over_env = envelope::seal_to_admin_with_nonce(
        &session,
        &[0x66; 24],
        ObjectType::TreeBlob,
        raw_id.as_bytes(),
        &repo_id(),
        &over_limit,
    );
    file(
        "envelopes around frames: data and tree blobs in scheme 2 (sealed to the admin; session e = 5e.., K_s below), an index file in scheme 1 under K_shared. zstd payload bytes depend on the compressor: writers need not reproduce them, readers must decode them",
        json!({
            "repository_id": hex::encode(repo_id().0),
            "a": hex::encode(master().admin_x25519().to_bytes()), "A": hex::encode(keys.admin_public),
            "e": hex::encode([0x5e; 32]), "E": hex::encode(session.ephemeral_public()),
            "K_s": hex::encode(session.key().0), "K_shared": hex::encode(keys.shared.0),
            "aad_data_blob": hex::encode(aad(ObjectType::DataBlob, id.as_bytes(), &repo_id())),
            "aad_index": hex::encode(aad(ObjectType::Index, raw_id.as_bytes(), &repo_id())),
            "frame_zstd": hex::encode(&framed), "frame_raw": hex::encode(&raw_framed),
        }),
        vec![
            c(
                "data blob, zstd frame",
                "ok",
                ObjectType::DataBlob,
                &id,
                &env,
                &text,
            ),
            c(
                "tree blob, raw frame",
                "ok",
                ObjectType::TreeBlob,
                &raw_id,
                &raw_env,
                b"short",
            ),
            c(
                "index file, scheme 1",
                "ok",
                ObjectType::Index,
                &raw_id,
                &index_env,
                b"short",
            ),
            c(
                "tag flipped",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &flip(&env, env.len() - 1),
                &text,
            ),
            c(
                "nonce flipped",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &flip(&env, 35),
                &text,
            ),
            c(
                "E flipped",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &flip(&env, 5),
                &text,
            ),
            c(
                "low-order E",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &low_order,
                &text,
            ),
            c(
                "read as another type",
                "Corrupt",
                ObjectType::TreeBlob,
                &id,
                &env,
                &text,
            ),
            c(
                "read under another id",
                "Corrupt",
                ObjectType::DataBlob,
                &raw_id,
                &env,
                &text,
            ),
            c(
                "scheme 1 byte on a data blob",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &scheme1,
                &text,
            ),
            c(
                "raw_len over the tree limit",
                "Corrupt",
                ObjectType::TreeBlob,
                &raw_id,
                &over_env,
                b"short",
            ),
            c(
                "truncated",
                "Corrupt",
                ObjectType::DataBlob,
                &id,
                &env[..60],
                &text,
            ),
        ],
    )
}

fn check_envelope(c: &Value) -> String {
    let sealer = admin_sealer();
    let env = hex::decode(c["envelope"].as_str().unwrap()).unwrap();
    let id = ChunkId::from_hex(c["object_id"].as_str().unwrap()).unwrap();
    let object_type = match c["object_type"].as_u64().unwrap() {
        3 => ObjectType::DataBlob,
        4 => ObjectType::TreeBlob,
        _ => ObjectType::Index,
    };
    let want = hex::decode(c["plaintext"].as_str().unwrap()).unwrap();
    // The codecs of chapter 03 as they are (envelope, then frame, then the
    // id), not the repository layer's reading, which reports an unknown
    // scheme in an accepted repository as damage to the object.
    let limit = match object_type {
        ObjectType::DataBlob => DEFAULT_CHUNKER.max as usize,
        _ => kura::repository::sealer::MAX_TREE_BLOB,
    };
    let opened = if object_type == ObjectType::Index {
        envelope::open(
            &sealer.keys().shared,
            object_type,
            id.as_bytes(),
            &repo_id(),
            &env,
        )
    } else {
        envelope::sealed_ephemeral(object_type, id.as_bytes(), &env)
            .and_then(|e| admin_session_key(&master().admin_x25519(), &e))
            .and_then(|k| envelope::open_sealed(&k, object_type, id.as_bytes(), &repo_id(), &env))
    };
    let opened = opened
        .and_then(|framed| frame::decode(&framed, limit))
        .and_then(|p| {
            if object_type != ObjectType::Index && sealer.chunk_id(&p) != id {
                Err(kura::Error::corrupt("blob does not match its id"))
            } else if p == want {
                Ok(())
            } else {
                Err(kura::Error::corrupt("plaintext differs"))
            }
        });
    kind_name(opened)
}

fn chunker_stream() -> Vec<u8> {
    let mut data = vec![0u8; 1 << 20];
    blake3::Hasher::new()
        .update(b"kura v1 chunker vector stream")
        .finalize_xof()
        .fill(&mut data);
    // Make half of it text-like so both masks see realistic input.
    for (i, b) in data.iter_mut().enumerate().skip(1 << 19) {
        *b = b"abcdefgh ijklmn\n"[(i * 7 + usize::from(*b % 3)) % 16];
    }
    data
}

/// `[offset, length, chunk id]` of every chunk of `data` under the vector keys.
fn chunk_list(data: &[u8], params: ChunkerParams) -> Vec<Value> {
    let keys = master().subkeys();
    Chunker::new(&keys.chunker, params)
        .cut_all(data)
        .into_iter()
        .map(|r| {
            let id = kura::algorithms::crypto::keyed_hash(&keys.chunk_id, &data[r.clone()]);
            json!([r.start, r.len(), hex::encode(id)])
        })
        .collect()
}

fn chunker_vectors() -> Value {
    let keys = master().subkeys();
    let data = chunker_stream();
    let small = ChunkerParams {
        min: 2048,
        avg: 8192,
        max: 32768,
        normalization: 2,
    };
    let cuts = |p: ChunkerParams| chunk_list(&data, p);
    let gear: Vec<String> = gear_table(&keys.chunker)
        .iter()
        .map(|g| format!("{g:016x}"))
        .collect();
    file(
        "keyed gear table from K_cdc, and cut points [offset, length, chunk id] of a 1 MiB stream: the first half is BLAKE3 XOF of \"kura v1 chunker vector stream\", the second half replaces each byte b at position i by \"abcdefgh ijklmn\\n\"[(7i + b mod 3) mod 16]",
        json!({ "K_cdc": hex::encode(keys.chunker), "K_id": hex::encode(keys.chunk_id), "gear": gear, "stream_blake3": blake3::hash(&data).to_hex().to_string() }),
        vec![
            case(
                "default parameters",
                "ok",
                json!({ "params": DEFAULT_CHUNKER, "chunks": cuts(DEFAULT_CHUNKER) }),
            ),
            case(
                "small, normalization 2",
                "ok",
                json!({ "params": small, "chunks": cuts(small) }),
            ),
        ],
    )
}

/// A data pack of two groups: the first holds two chunks, the second one.
fn sample_pack() -> (PackId, PackHeader, Vec<u8>) {
    let keys = master().subkeys();
    let pack_id = PackId(std::array::from_fn(|i| 0x70 + i as u8));
    let mut blobs = Vec::new();
    let mut entries = Vec::new();
    let groups: [&[&[u8]]; 2] = [
        &[b"first chunk", b"second chunk, a little longer"],
        &[b"third"],
    ];
    for (g, chunks) in groups.iter().enumerate() {
        let sealed = envelope::seal_to_admin_with_nonce(
            &session(),
            &[g as u8; 24],
            ObjectType::DataBlob,
            &kura::format::pack::GROUP_OBJECT_ID,
            &repo_id(),
            &frame::encode(&chunks.concat(), 0),
        );
        let mut raw_offset = 0;
        for text in *chunks {
            entries.push(PackEntry {
                id: ChunkId(kura::algorithms::crypto::keyed_hash(&keys.chunk_id, text)),
                offset: blobs.len() as u32,
                stored_len: sealed.len() as u32,
                raw_offset,
                raw_len: text.len() as u32,
            });
            raw_offset += text.len() as u32;
        }
        blobs.extend(sealed);
    }
    let header = PackHeader {
        kind: PackKind::Data,
        entries,
    };
    let bytes = pack::assemble_with_nonce(blobs, &header, &keys, &pack_id, &repo_id(), &[0x77; 24]);
    (pack_id, header, bytes)
}

fn pack_vectors() -> Value {
    let (pack_id, header, bytes) = sample_pack();
    let keys = master().subkeys();
    let n = bytes.len();
    let mut bad_magic = bytes.clone();
    bad_magic[n - 1] = b'X';
    let mut huge_len = bytes.clone();
    huge_len[n - 8..n - 4].copy_from_slice(&(n as u32).to_le_bytes());
    let blobs_end = header.entries[2].offset as usize + header.entries[2].stored_len as usize;
    let with_header = |h: &PackHeader| {
        pack::assemble_with_nonce(
            bytes[..blobs_end].to_vec(),
            h,
            &keys,
            &pack_id,
            &repo_id(),
            &[0x77; 24],
        )
    };
    let mut overlapping = header.clone();
    overlapping.entries[2].offset -= 1;
    let bad_header = with_header(&overlapping);
    // The first group's boundary between its chunks moved by one byte:
    // the header's rules hold, but neither chunk hashes to its id.
    let mut shifted = header.clone();
    shifted.entries[0].raw_len -= 1;
    shifted.entries[1].raw_offset -= 1;
    shifted.entries[1].raw_len += 1;
    let shifted = with_header(&shifted);
    // A chunk past its group's end: the group is shorter than its chunks.
    let mut past_end = header.clone();
    past_end.entries[1].raw_len += 1;
    let past_end = with_header(&past_end);
    // A gap between two chunks of the group (refused by the header rules).
    let mut gap = header.clone();
    gap.entries[1].raw_offset += 1;
    let gap = with_header(&gap);
    let c = |name: &str, expect: &str, id: &PackId, b: &[u8]| {
        case(
            name,
            expect,
            json!({ "pack_id": id.to_hex(), "pack": hex::encode(b) }),
        )
    };
    file(
        "a data pack of two raw-frame groups (two chunks, then one) with its padding (keyed by K_pad), sealed header and trailer",
        json!({ "repository_id": hex::encode(repo_id().0), "header_plaintext": hex::encode(header.encode_plaintext()), "header_nonce": hex::encode([0x77; 24]),
                "padme": [[1000, kura::format::padme(1000)], [1_000_000, kura::format::padme(1_000_000)], [17_000_000, kura::format::padme(17_000_000)]] }),
        vec![
            c("two groups, three chunks", "ok", &pack_id, &bytes),
            c("under another pack id", "Corrupt", &PackId([0; 32]), &bytes),
            c("bad trailer magic", "Corrupt", &pack_id, &bad_magic),
            c(
                "header length larger than the pack",
                "Corrupt",
                &pack_id,
                &huge_len,
            ),
            c("overlapping groups", "Corrupt", &pack_id, &bad_header),
            c(
                "chunk boundary moved within its group",
                "Corrupt",
                &pack_id,
                &shifted,
            ),
            c("chunk past its group's end", "Corrupt", &pack_id, &past_end),
            c("gap between chunks of a group", "Corrupt", &pack_id, &gap),
            c(
                "flipped padding byte",
                "Corrupt",
                &pack_id,
                &flip(
                    &bytes,
                    header.entries[2].offset as usize + header.entries[2].stored_len as usize,
                ),
            ),
            c("flipped blob byte", "Corrupt", &pack_id, &flip(&bytes, 40)),
            c("truncated", "Corrupt", &pack_id, &bytes[..n - 1]),
        ],
    )
}

fn check_pack(c: &Value) -> String {
    let sealer = admin_sealer();
    let id = PackId::from_hex(c["pack_id"].as_str().unwrap()).unwrap();
    let bytes = hex::decode(c["pack"].as_str().unwrap()).unwrap();
    kind_name(kura::chunkstore::pack::verify_pack(&sealer, &id, &bytes).map(drop))
}

fn index_vectors() -> Value {
    let (pack_id, header, bytes) = sample_pack();
    let file_ = IndexFile {
        supersedes: vec![],
        packs: vec![IndexedPack {
            id: pack_id,
            kind: PackKind::Data,
            size: bytes.len() as u64,
            entries: header.entries.clone(),
        }],
    };
    let payload = file_.encode();
    let patch = |at: usize, v: &[u8]| {
        let mut b = payload.clone();
        b[at..at + v.len()].copy_from_slice(v);
        hex::encode(b)
    };
    let mut trailing = payload.clone();
    trailing.push(0);
    let index_id = [0x99u8; 32];
    let mut authored = payload.clone();
    author::seal(
        &KeySet::admin(master()),
        ObjectType::Index,
        &index_id,
        &mut authored,
    );
    let sealed = envelope::seal_with_nonce(
        &master().subkeys().shared,
        &[0x88; 24],
        ObjectType::Index,
        &index_id,
        &repo_id(),
        &frame::encode_padded(&authored, 0),
    );
    let c = |name: &str, expect: &str, p: String| case(name, expect, json!({ "payload": p }));
    file(
        "an index file naming the pack of pack.json; `sealed` is the whole object (payload, then the admin's author block, in a padded raw frame (codec 2), type 6, K_shared, nonce 88..)",
        json!({ "index_id": hex::encode(index_id), "sealed": hex::encode(sealed) }),
        vec![
            c("one pack", "ok", hex::encode(&payload)),
            c("version 1 (format 2)", "Unsupported", patch(0, &[1])),
            c("version 3", "Unsupported", patch(0, &[3])),
            c(
                "pack count too large",
                "Corrupt",
                patch(5, &1000u32.to_le_bytes()),
            ),
            c("pack kind 3", "Corrupt", patch(9 + 32, &[3])),
            c(
                "pack size smaller than its entries",
                "Corrupt",
                patch(9 + 33, &10u64.to_le_bytes()),
            ),
            c("trailing bytes", "Corrupt", hex::encode(trailing)),
        ],
    )
}

fn check_index(c: &Value) -> String {
    kind_name(IndexFile::decode(&hex::decode(c["payload"].as_str().unwrap()).unwrap()).map(drop))
}

fn prune_vectors() -> Value {
    let record = PruneRecord {
        created: 1_800_000_000,
        grace: 3600,
        seen_index: vec![IndexId([0x99; 32])],
        seen_orphans: vec![PackId([0x77; 32])],
        condemned: vec![(PackId([0x55; 32]), 4096), (PackId([0x66; 32]), 8192)],
        forgotten: vec![kura::id::SnapshotId([0x22; 32])],
    };
    let payload = record.encode();
    let patch = |at: usize, v: &[u8]| {
        let mut b = payload.clone();
        b[at..at + v.len()].copy_from_slice(v);
        hex::encode(b)
    };
    let mut trailing = payload.clone();
    trailing.push(0);
    let mut twice = record.clone();
    twice.condemned[1].0 = twice.condemned[0].0;
    let record_id = [0x44u8; 32];
    let mut authored = payload.clone();
    author::seal(
        &KeySet::admin(master()),
        ObjectType::PruneRecord,
        &record_id,
        &mut authored,
    );
    let sealed = envelope::seal_with_nonce(
        &master().subkeys().shared,
        &[0x33; 24],
        ObjectType::PruneRecord,
        &record_id,
        &repo_id(),
        &frame::encode_padded(&authored, 0),
    );
    let c = |name: &str, expect: &str, p: String| case(name, expect, json!({ "payload": p }));
    // Offsets: version 0, created 1, grace 9, index count 17, ids 21,
    // orphan count 53, ids 57, condemned count 89, entries 93, forgotten
    // count 173, ids 177.
    file(
        "a prune record (chapter 12); `sealed` is the whole object (payload, then the admin's author block, in a padded raw frame (codec 2), type 8, K_shared, nonce 33..)",
        json!({ "record_id": hex::encode(record_id), "sealed": hex::encode(sealed) }),
        vec![
            c(
                "one index file, one orphan, two condemned packs, one forgotten snapshot",
                "ok",
                hex::encode(&payload),
            ),
            c("version 1", "Unsupported", patch(0, &[1])),
            c("version 3", "Unsupported", patch(0, &[3])),
            c(
                "forgotten count too large",
                "Corrupt",
                patch(173, &2u32.to_le_bytes()),
            ),
            c(
                "index count too large",
                "Corrupt",
                patch(17, &1000u32.to_le_bytes()),
            ),
            c(
                "condemned count too large",
                "Corrupt",
                patch(89, &3u32.to_le_bytes()),
            ),
            c(
                "a pack condemned twice",
                "Corrupt",
                hex::encode(twice.encode()),
            ),
            c("trailing bytes", "Corrupt", hex::encode(trailing)),
            c(
                "truncated",
                "Corrupt",
                hex::encode(&payload[..payload.len() - 1]),
            ),
        ],
    )
}

fn check_prune(c: &Value) -> String {
    kind_name(PruneRecord::decode(&hex::decode(c["payload"].as_str().unwrap()).unwrap()).map(drop))
}

fn config_vectors() -> Value {
    let keys = master().subkeys();
    let header = ConfigHeader {
        version: 3,
        mandatory_features: 0,
        compatible_features: 0,
        repo: repo_id(),
    };
    let body = ConfigBody::v2(DEFAULT_CHUNKER, &keys.admin_public, 1_764_115_200);
    let bytes = config::encode_with_nonce(&header, &body, &keys.shared, &[0x12; 24]);
    let patch = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        hex::encode(b)
    };
    let mut other_alg = body.clone();
    other_alg.compression = "lz4".into();
    let mut odd = body.clone();
    odd.chunker.params.min += 1;
    let c = |name: &str, expect: &str, b: String| case(name, expect, json!({ "config": b }));
    file(
        "the config object: clear header, then the body envelope (type 1, object id BLAKE3(header), raw frame, nonce 12..)",
        json!({ "K_shared": hex::encode(keys.shared.0), "body_json": serde_json::to_string(&body).unwrap() }),
        vec![
            c("default v3", "ok", hex::encode(&bytes)),
            c("bad magic", "Corrupt", patch(0, b"X")),
            c("version 1 (an earlier kura)", "Unsupported", patch(8, &[1])),
            c("version 2 (an earlier kura)", "Unsupported", patch(8, &[2])),
            c("version 4", "Unsupported", patch(8, &[4])),
            c("unknown mandatory feature", "Unsupported", patch(12, &[1])),
            c(
                "compatible feature bit changed after sealing",
                "Corrupt",
                patch(20, &[1]),
            ),
            c(
                "unknown algorithm",
                "Unsupported",
                hex::encode(config::encode_with_nonce(
                    &header,
                    &other_alg,
                    &keys.shared,
                    &[0x12; 24],
                )),
            ),
            c(
                "odd min",
                "Corrupt",
                hex::encode(config::encode_with_nonce(
                    &header,
                    &odd,
                    &keys.shared,
                    &[0x12; 24],
                )),
            ),
        ],
    )
}

fn check_config(c: &Value) -> String {
    let bytes = hex::decode(c["config"].as_str().unwrap()).unwrap();
    kind_name(config::open_body(&bytes, &master().subkeys().shared).map(drop))
}

fn tree_entry(name: &[u8], payload: Payload, size: u64) -> Entry {
    Entry {
        name: name.to_vec(),
        meta: Metadata {
            mode: 0o640,
            uid: 33,
            gid: 33,
            user: b"www-data".to_vec(),
            group: b"www-data".to_vec(),
            mtime: (1_764_115_200, 123_456_789),
            ctime: (1_764_115_201, 5),
            dev: 2049,
            ino: 131_077,
            nlink: 1,
            size,
            xattrs: vec![Xattr {
                name: b"user.origin".to_vec(),
                value: b"upload".to_vec(),
            }],
        },
        payload,
    }
}

fn tree_vectors() -> Value {
    let id = |n: u8| ChunkId([n; 32]);
    let sparse = Payload::File(Content::Inline(vec![
        Extent::Data {
            id: id(1),
            len: 4096,
        },
        Extent::Hole { len: 1 << 20 },
        Extent::Data { id: id(2), len: 10 },
    ]));
    let entries = vec![
        tree_entry(
            b"caf\xe9-latin1.txt",
            Payload::File(Content::Inline(vec![])),
            0,
        ),
        tree_entry(b"disk.img", sparse, 4096 + (1 << 20) + 10),
        tree_entry(b"fifo", Payload::Fifo, 0),
        tree_entry(b"link", Payload::Symlink(b"../etc/site.conf".to_vec()), 0),
        tree_entry(b"null", Payload::CharDevice(0x0103), 0),
        tree_entry(b"theme", Payload::Dir(id(3)), 0),
    ];
    let dir = TreeBlob::Directory(entries.clone());
    let encode = |b: &TreeBlob| hex::encode(b.encode());
    let c = |name: &str, expect: &str, bytes: String| case(name, expect, json!({ "tree": bytes }));
    let mut unsorted = entries.clone();
    unsorted.swap(0, 1);
    let mut bad_size = entries.clone();
    bad_size[1].meta.size += 1;
    let mut bad_nsec = entries.clone();
    bad_nsec[0].meta.mtime.1 = 1_000_000_000;
    let holes = vec![Extent::Hole { len: 1 }, Extent::Hole { len: 1 }];
    file(
        "tree blobs (chapter 10): a directory with one entry of each kind of payload and a non-UTF-8 name, an extent list, a large directory",
        json!({}),
        vec![
            c("directory", "ok", encode(&dir)),
            c(
                "extent list",
                "ok",
                encode(&TreeBlob::ExtentList(vec![
                    Extent::Data { id: id(4), len: 7 },
                    Extent::Hole { len: 9 },
                ])),
            ),
            c(
                "large directory",
                "ok",
                encode(&TreeBlob::LargeDirectory(vec![id(5), id(6)])),
            ),
            c(
                "entries out of order",
                "Corrupt",
                encode(&TreeBlob::Directory(unsorted)),
            ),
            c(
                "name ..",
                "Corrupt",
                encode(&TreeBlob::Directory(vec![tree_entry(
                    b"..",
                    Payload::Fifo,
                    0,
                )])),
            ),
            c(
                "name with a slash",
                "Corrupt",
                encode(&TreeBlob::Directory(vec![tree_entry(
                    b"a/b",
                    Payload::Fifo,
                    0,
                )])),
            ),
            c(
                "extents do not add up to the size",
                "Corrupt",
                encode(&TreeBlob::Directory(bad_size)),
            ),
            c(
                "nanoseconds out of range",
                "Corrupt",
                encode(&TreeBlob::Directory(bad_nsec)),
            ),
            c(
                "adjacent holes",
                "Corrupt",
                encode(&TreeBlob::ExtentList(holes)),
            ),
            c(
                "large directory of one part",
                "Corrupt",
                encode(&TreeBlob::LargeDirectory(vec![id(5)])),
            ),
            c("unknown kind", "Corrupt", "04".into()),
        ],
    )
}

fn check_tree(c: &Value) -> String {
    let bytes = hex::decode(c["tree"].as_str().unwrap()).unwrap();
    kind_name(TreeBlob::decode(&bytes).and_then(|t| {
        if t.encode() == bytes {
            Ok(())
        } else {
            Err(kura::Error::corrupt("not canonical"))
        }
    }))
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

pub(crate) fn golden(name: &str, generated: &Value, check: fn(&Value) -> String) {
    let path = vectors_dir().join(name);
    if std::env::var_os("KURA_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        &stored, generated,
        "{name}: the code no longer produces the stored vectors"
    );
    for c in stored["cases"].as_array().unwrap() {
        assert_eq!(
            check(c),
            c["expect"].as_str().unwrap(),
            "{name}: case {}",
            c["name"]
        );
    }
}

#[test]
fn keyslot_vectors_match() {
    golden("keyslot.json", &keyslot_vectors(), check_keyslot);
}

#[test]
fn envelope_vectors_match() {
    golden("envelope.json", &envelope_vectors(), check_envelope);
}

#[test]
fn chunker_vectors_match() {
    golden("chunker.json", &chunker_vectors(), |c| {
        let params: ChunkerParams = serde_json::from_value(c["params"].clone()).unwrap();
        let got = chunk_list(&chunker_stream(), params);
        if Value::Array(got) == c["chunks"] {
            "ok".into()
        } else {
            "Mismatch".into()
        }
    });
}

#[test]
fn pack_vectors_match() {
    golden("pack.json", &pack_vectors(), check_pack);
}

#[test]
fn index_vectors_match() {
    golden("index.json", &index_vectors(), check_index);
}

#[test]
fn prune_vectors_match() {
    golden("prune.json", &prune_vectors(), check_prune);
}

#[test]
fn tree_vectors_match() {
    golden("tree.json", &tree_vectors(), check_tree);
}

#[test]
fn config_vectors_match() {
    golden("config.json", &config_vectors(), check_config);
}
