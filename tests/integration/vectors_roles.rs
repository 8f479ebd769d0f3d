//! Golden tests of the format-2 roles (format-spec/02, 06, 11, 12): a
//! role-1 (put-only) key slot and author blocks, generated from the fixed
//! inputs of `vectors.rs` (written with `KURA_WRITE_VECTORS=1`).

use kura::algorithms::crypto::kdf::KdfParams;
use kura::algorithms::crypto::roles::KeySet;
use kura::format::author::{self, Authenticity, Writer};
use kura::format::envelope::ObjectType;
use kura::format::keyslot::{self, KeySlot};
use serde_json::{Value, json};

use crate::vectors::{PASSWORD, case, file, flip, golden, kind_name, master, repo_id};

const KEY_ID: u32 = 0x0102_0304;

fn put_only_slot_vectors() -> Value {
    let slot = KeySlot::create_put_only(
        &master(),
        KEY_ID,
        PASSWORD,
        repo_id(),
        KdfParams::FLOOR,
        1_764_115_200,
        [0x35; 32],
        [0x46; 24],
    )
    .unwrap();
    let bytes = slot.encode();
    let plain = keyslot::put_only_plaintext(&master(), KEY_ID);
    let c = |name: &str, expect: &str, slot: &[u8], password: &[u8]| {
        case(
            name,
            expect,
            json!({ "password": hex::encode(password), "slot": hex::encode(slot) }),
        )
    };
    let mut role_0 = bytes.clone();
    role_0[41] = 0;
    file(
        "a role-1 (put-only) key slot for key id 0x01020304 of the master secret of keyslot.json: it wraps K_id | K_cdc | K_pad | K_shared | A | u32le(key id) | K_w(key id), never M",
        json!({
            "key_id": KEY_ID, "salt": hex::encode([0x35; 32]), "nonce": hex::encode([0x46; 24]),
            "created": 1_764_115_200u64, "wrapped_plaintext": hex::encode(plain.as_slice()),
            "slot_len": keyslot::PUT_ONLY_SLOT_LEN,
        }),
        vec![
            c("put-only slot", "ok", &bytes, PASSWORD),
            c("wrong password", "WrongPassword", &bytes, b"wrong"),
            c(
                "flipped wrapped byte",
                "WrongPassword",
                &flip(&bytes, 200),
                PASSWORD,
            ),
            c(
                "role 0 on a role-1 slot's length",
                "Corrupt",
                &role_0,
                PASSWORD,
            ),
            c("truncated", "Corrupt", &bytes[..bytes.len() - 1], PASSWORD),
        ],
    )
}

fn check_put_only_slot(c: &Value) -> String {
    let slot = hex::decode(c["slot"].as_str().unwrap()).unwrap();
    let password = hex::decode(c["password"].as_str().unwrap()).unwrap();
    kind_name(
        KeySlot::decode(&slot)
            .and_then(|s| s.unlock(&password))
            .and_then(|keys| {
                let all = master().subkeys();
                let same = keys.master().is_none()
                    && keys.writer() == KEY_ID
                    && *keys.own_mac_key() == *master().writer_mac(KEY_ID)
                    && keys.subkeys.shared.0 == all.shared.0
                    && keys.subkeys.admin_public == all.admin_public
                    && keys.subkeys.chunk_id == all.chunk_id
                    && keys.subkeys.chunker == all.chunker
                    && keys.subkeys.padding == all.padding;
                if same {
                    Ok(())
                } else {
                    Err(kura::Error::corrupt("wrong keys"))
                }
            }),
    )
}

fn author_vectors() -> Value {
    let body = b"an index file's payload".to_vec();
    let id = [0x99u8; 32];
    let admin = KeySet::admin(master());
    let put_only = KeySet::put_only(master().subkeys(), KEY_ID, *master().writer_mac(KEY_ID));
    let sealed = |keys: &KeySet| {
        let mut p = body.clone();
        author::seal(keys, ObjectType::Index, &id, &mut p);
        p
    };
    let by_admin = sealed(&admin);
    let by_put_only = sealed(&put_only);
    let mut forged = body.clone();
    author::seal_as(
        0,
        &put_only.own_mac_key(),
        ObjectType::Index,
        &id,
        &mut forged,
    );
    let c = |name: &str, expect: &str, writer: u32, payload: &[u8]| {
        case(
            name,
            expect,
            json!({ "object_type": ObjectType::Index as u8, "object_id": hex::encode(id),
                    "writer": writer, "payload": hex::encode(payload) }),
        )
    };
    file(
        "author blocks as an admin reader checks them: writer u32le | BLAKE3-keyed(K_writer, \"kura v2 author\" | u8(type) | id | payload before the block); K_writer = K_admin for writer 0, K_w(k) for put-only key k",
        json!({ "body": hex::encode(&body), "K_admin": hex::encode(*master().admin_mac()),
                "K_w(0x01020304)": hex::encode(*master().writer_mac(KEY_ID)) }),
        vec![
            c("written by the admin", "Verified", 0, &by_admin),
            c(
                "written by put-only key 0x01020304",
                "Verified",
                KEY_ID,
                &by_put_only,
            ),
            c(
                "a put-only key claiming to be the admin",
                "Forged",
                0,
                &forged,
            ),
            c("body byte flipped", "Forged", 0, &flip(&by_admin, 0)),
            c("too short for a block", "Corrupt", 0, &by_admin[..35]),
        ],
    )
}

fn check_author(c: &Value) -> String {
    let payload = hex::decode(c["payload"].as_str().unwrap()).unwrap();
    let id: [u8; 32] = hex::decode(c["object_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let admin = KeySet::admin(master());
    match author::verify(&admin, ObjectType::Index, &id, &payload) {
        Err(e) => format!("{:?}", e.kind()),
        Ok((_, who)) => {
            let writer = u32::try_from(c["writer"].as_u64().unwrap()).unwrap();
            assert_eq!(who.writer, Writer::from_u32(writer));
            match who.authenticity {
                Authenticity::Verified => "Verified",
                Authenticity::Forged => "Forged",
                Authenticity::Unverifiable => "Unverifiable",
            }
            .into()
        }
    }
}

#[test]
fn put_only_slot_vectors_match() {
    golden(
        "keyslot-put-only.json",
        &put_only_slot_vectors(),
        check_put_only_slot,
    );
}

#[test]
fn author_vectors_match() {
    golden("author.json", &author_vectors(), check_author);
}
