//! Roles (format-spec/02, 08): a put-only key backs up but cannot read,
//! and what it writes cannot make the admin's prune delete anything.
//! Also the refusal of a format-1 repository (format-spec/01).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use kura::algorithms::crypto::AeadKey;
use kura::backend::{Backend, LocalBackend, write_bytes};
use kura::format::author;
use kura::format::envelope::{self, ObjectType};
use kura::format::index::IndexFile;
use kura::format::layout;
use kura::format::prune::PruneRecord;
use kura::id::{IndexId, PackId, RecordId};
use kura::repository::Repository;

use crate::common::{CliRepo, FAST_KDF, describe, kura_env, pseudo_random, stderr};

type Described = std::collections::HashMap<PathBuf, String>;

const PUT_ONLY_PASSWORD: &str = "night-shift";
/// The exit code of [`kura::ErrorKind::PutOnlyKey`] (README, "Exit codes").
const EXIT_PUT_ONLY: i32 = 19;

/// The admin's repository plus a put-only key, each with its own cache
/// (two machines).
struct Roles {
    admin: CliRepo,
    put_cache: PathBuf,
    dir: PathBuf,
}

impl Roles {
    fn new(dir: &Path) -> Self {
        let admin = CliRepo::init(dir);
        let new = ("KURA_NEW_PASSWORD", OsStr::new(PUT_ONLY_PASSWORD));
        let mut env = admin.env().to_vec();
        env.push(new);
        let args = [&["key", "add", "--put-only"][..], &FAST_KDF].concat();
        let out = kura_env(&admin.path, &env, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("put-only key slot"),
            "{out:?}"
        );
        Self {
            admin,
            put_cache: dir.join("put-cache"),
            dir: dir.to_path_buf(),
        }
    }

    fn put_only(&self, args: &[&str]) -> Output {
        let env = [
            ("KURA_PASSWORD", OsStr::new(PUT_ONLY_PASSWORD)),
            ("KURA_CACHE_DIR", self.put_cache.as_os_str()),
        ];
        kura_env(&self.admin.path, &env, args)
    }

    fn admin(&self, args: &[&str]) -> Output {
        self.admin.run(args)
    }

    /// The library's handle opened with the put-only key.
    fn put_only_handle(&self) -> Repository {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&self.admin.path));
        let repo = Repository::open(backend, PUT_ONLY_PASSWORD.as_bytes()).unwrap();
        assert!(!repo.is_admin());
        repo
    }

    /// Restores snapshot `id` of `source` and compares it with `expected`
    /// (`describe` of `source` when it was backed up).
    fn restore_matches(&self, id: &str, source: &Path, expected: &Described) {
        let target = self.dir.join(format!("restored-{id}"));
        let _ = fs::remove_dir_all(&target);
        let out = self.admin(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "restore {id}: {}", stderr(&out));
        let restored = target.join(source.strip_prefix("/").unwrap());
        assert_eq!(expected, &describe(&restored), "snapshot {id}");
    }
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The snapshot id a `backup --json` printed.
fn backup(out: &Output) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    v["snapshot"].as_str().unwrap().to_owned()
}

fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_put_only_key_backs_up_with_dedup_but_reads_nothing_and_the_admin_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("www");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("big.bin"), pseudo_random(3 << 20, 1)).unwrap();
    fs::write(source.join("db.sql"), pseudo_random(256 << 10, 10)).unwrap();
    let src = source.to_str().unwrap();
    ok(&roles.admin(&["backup", src]));
    let data = roles.admin.path.join("data");
    let before = bytes_under(&data);

    // Night 1: the same files; every chunk is the admin's already.
    let night1 = backup(&roles.put_only(&["--json", "backup", src]));
    let after1 = bytes_under(&data);
    assert!(
        after1 - before < 64 << 10,
        "night 1 stored {}",
        after1 - before
    );
    // Night 2: one file changed; only it is stored again.
    fs::write(source.join("db.sql"), pseudo_random(256 << 10, 12)).unwrap();
    let night2 = backup(&roles.put_only(&["--json", "backup", src]));
    let grown = bytes_under(&data) - after1;
    assert!(
        (256 << 10..(256 << 10) + (128 << 10)).contains(&grown),
        "night 2 stored {grown}"
    );

    for args in [
        &["restore", "latest", "--target", "/tmp/never"][..],
        &["ls", &night1],
        &["dump", &night1, "/"],
        &["snapshots"],
        &["diff", &night1, &night2],
        &["find", "db.sql"],
        &["check"],
        &["check", "--read-data"],
        &["prune"],
        &["forget", "--keep-last", "1"],
        &["repair", "index"],
        &["key", "add"],
    ] {
        let out = roles.put_only(args);
        assert_eq!(
            out.status.code(),
            Some(EXIT_PUT_ONLY),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("needs the admin key"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    cannot_open_its_own_blobs(&roles.put_only_handle());

    // The admin reads everything the put-only key wrote.
    source_restores(&roles, &night2, &source);
    let listing = ok(&roles.admin(&["snapshots"]));
    assert!(listing.contains("put-only key"), "{listing}");
    assert!(listing.contains("admin"), "{listing}");
    ok(&roles.admin(&["check", "--read-data"]));
    let copy = dir.path().join("copy");
    crate::common::init(&copy);
    let to_pw = ("KURA_TO_PASSWORD", OsStr::new("pw"));
    let mut env = roles.admin.env().to_vec();
    env.push(to_pw);
    let out = kura_env(
        &roles.admin.path,
        &env,
        &["copy", "--to", copy.to_str().unwrap()],
    );
    ok(&out);
    ok(&roles.admin(&["forget", "--keep-last", "1"]));
    ok(&roles.admin(&["prune"]));
    source_restores(&roles, &night2, &source);
}

fn source_restores(roles: &Roles, id: &str, source: &Path) {
    roles.restore_matches(id, source, &describe(source));
}

/// With the raw bytes of a pack it wrote and every key it holds, a
/// put-only key opens no blob.
fn cannot_open_its_own_blobs(repo: &Repository) {
    let packs = repo.list_packs().unwrap();
    assert!(!packs.is_empty());
    let mut tried = 0;
    for (id, size) in packs {
        let header = repo.read_pack_header(&id, size).unwrap();
        let bytes = repo.read_pack(&id, None).unwrap();
        for entry in &header.entries {
            let blob = &bytes[entry.offset as usize..][..entry.stored_len as usize];
            let err = repo
                .sealer()
                .open_chunk(
                    header.kind,
                    &entry.id,
                    blob,
                    entry.raw_offset,
                    entry.raw_len,
                )
                .unwrap_err();
            assert_eq!(err.kind(), kura::ErrorKind::PutOnlyKey, "{err}");
            let keys = repo.sealer().key_set();
            let held = [
                keys.subkeys.shared.clone(),
                AeadKey(keys.subkeys.chunk_id),
                AeadKey(keys.subkeys.padding),
                AeadKey(keys.subkeys.admin_public),
                AeadKey(*keys.own_mac_key()),
            ];
            for key in &held {
                let t = header.kind.blob_type();
                let opened = envelope::open_sealed(key, t, entry.id.as_bytes(), repo.id(), blob);
                assert!(opened.is_err());
            }
            tried += 1;
        }
    }
    assert!(tried > 0);
}

/// Writes `payload` with an author block under `mac_key` naming `writer`,
/// sealed as the put-only handle seals metadata (K_shared), bypassing the
/// client's refusal: what a cracked put-only machine can write.
fn plant(
    repo: &Repository,
    t: ObjectType,
    id: &[u8; 32],
    path: &str,
    mut payload: Vec<u8>,
    writer: u32,
) {
    let key = repo.sealer().key_set().own_mac_key();
    author::seal_as(writer, &key, t, id, &mut payload);
    let sealed = repo.sealer().seal(t, id, &payload, 0);
    write_bytes(repo.backend().as_ref(), path, &sealed).unwrap();
}

/// Night 0 by the admin, night 1 by the put-only key; their ids and
/// what they hold.
fn two_nights(roles: &Roles, source: &Path) -> Vec<(String, Described)> {
    fs::create_dir_all(source).unwrap();
    fs::write(source.join("a.bin"), pseudo_random(1 << 20, 7)).unwrap();
    let src = source.to_str().unwrap();
    let first = backup(&roles.admin(&["--json", "backup", src]));
    let first = (first, describe(source));
    fs::write(source.join("b.bin"), pseudo_random(300 << 10, 8)).unwrap();
    let second = backup(&roles.put_only(&["--json", "backup", src]));
    vec![first, (second, describe(source))]
}

#[test]
fn a_forged_index_file_superseding_every_real_one_changes_nothing_for_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("site");
    let nights = two_nights(&roles, &source);
    let index_dir = roles.admin.path.join("index");
    let real = listed(&index_dir);
    let put = roles.put_only_handle();
    let real_ids: Vec<IndexId> = put.list::<IndexFile>().unwrap();
    // Signed honestly as the put-only key, and claiming to be the admin.
    let forged = IndexFile {
        supersedes: real_ids,
        packs: Vec::new(),
    };
    let (honest, claimed) = (IndexId([0xf1; 32]), IndexId([0xf2; 32]));
    let writer = put.sealer().key_set().writer();
    for (id, as_writer) in [(honest, writer), (claimed, 0)] {
        let path = layout::index_path(&id);
        plant(
            &put,
            ObjectType::Index,
            id.as_bytes(),
            &path,
            forged.encode(),
            as_writer,
        );
    }
    // A forged author block is damage: prune stops before changing anything.
    let out = roles.admin(&["prune"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains(&claimed.to_hex()), "{}", stderr(&out));
    assert!(stderr(&out).contains("forged"), "{}", stderr(&out));
    fs::remove_file(index_dir.join(claimed.to_hex())).unwrap();
    // A put-only key's supersedes list is reported and ignored.
    let out = roles.admin(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&honest.to_hex()), "{}", stderr(&out));
    assert!(stderr(&out).contains("supersedes"), "{}", stderr(&out));
    let now = listed(&index_dir);
    for file in &real {
        assert!(now.contains(file), "real index file {file} deleted");
    }
    ok(&roles.admin(&["check", "--read-data"]));
    for (id, expected) in &nights {
        roles.restore_matches(id, &source, expected);
    }
}

#[test]
fn a_forged_prune_record_condemning_real_packs_is_ignored_by_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("site");
    let nights = two_nights(&roles, &source);
    let put = roles.put_only_handle();
    let packs: Vec<(PackId, u64)> = put.list_packs().unwrap().into_iter().collect();
    let record = PruneRecord {
        created: 1,
        grace: 0,
        seen_index: put.list::<IndexFile>().unwrap(),
        seen_orphans: Vec::new(),
        condemned: packs.clone(),
        forgotten: Vec::new(),
    };
    // The client refuses to write one with a put-only key.
    let refused = kura::repository::records::save(&put, &RecordId([0xe0; 32]), &record);
    assert_eq!(refused.unwrap_err().kind(), kura::ErrorKind::PutOnlyKey);
    let writer = put.sealer().key_set().writer();
    let (honest, claimed) = (RecordId([0xe1; 32]), RecordId([0xe2; 32]));
    for (id, as_writer) in [(honest, writer), (claimed, 0)] {
        let path = layout::record_path(&id);
        plant(
            &put,
            ObjectType::PruneRecord,
            id.as_bytes(),
            &path,
            record.encode(),
            as_writer,
        );
    }
    for _ in 0..2 {
        let out = roles.admin(&["prune"]);
        assert!(out.status.success(), "{}", stderr(&out));
        for id in [honest, claimed] {
            assert!(stderr(&out).contains(&id.to_hex()), "{}", stderr(&out));
        }
    }
    for (pack, _) in &packs {
        assert!(
            roles.admin.path.join(layout::pack_path(pack)).exists(),
            "pack {pack} deleted"
        );
    }
    // check names the forged record as damage, and only it.
    let out = roles.admin(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("prune record {claimed}")),
        "{report}"
    );
    assert!(report.contains("forged"), "{report}");
    for (id, expected) in &nights {
        roles.restore_matches(id, &source, expected);
    }
}

/// Repositories written by earlier builds (format 1, and format 2 by the
/// build before compression groups) are refused before any password,
/// with exit code 13 and a message that names their format.
#[test]
fn repositories_of_formats_1_and_2_are_refused_with_the_documented_code() {
    for format in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let fixture = format!(
            "{}/tests/fixtures/format{format}-repo.tar.gz",
            env!("CARGO_MANIFEST_DIR")
        );
        let status = std::process::Command::new("tar")
            .args(["xzf", &fixture, "-C"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let repo = dir.path().join("repo");
        let said =
            format!("written by an earlier kura (format {format}); this kura reads format 3 only");
        for args in [
            &["snapshots"][..],
            &["backup", "/etc/hostname"],
            &["config", "show"],
        ] {
            let out = kura_env(&repo, &[], args);
            assert_eq!(out.status.code(), Some(13), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(&said), "{}", stderr(&out));
        }
    }
}

#[test]
fn a_key_file_opens_only_when_no_one_else_may_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let key_file = dir.path().join("put-only.key");
    fs::write(&key_file, format!("{PUT_ONLY_PASSWORD}\n")).unwrap();
    let source = dir.path().join("etc");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    let run = |env: &[(&str, &OsStr)], args: &[&str]| {
        let cache = ("KURA_CACHE_DIR", roles.put_cache.as_os_str());
        kura_env(&roles.admin.path, &[env, &[cache]].concat(), args)
    };
    let backup_args = ["backup", source.to_str().unwrap()];
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&key_file, fs::Permissions::from_mode(mode)).unwrap();
        let flag = [
            &["--key-file", key_file.to_str().unwrap()][..],
            &backup_args,
        ]
        .concat();
        let out = run(&[], &flag);
        assert_eq!(out.status.code(), Some(1), "{mode:o}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("mode {mode:04o}")),
            "{}",
            stderr(&out)
        );
    }
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    let flag = [
        &["--key-file", key_file.to_str().unwrap()][..],
        &backup_args,
    ]
    .concat();
    ok(&run(&[], &flag));
    // KURA_KEY_FILE too, and it wins over a wrong KURA_PASSWORD.
    let env = [
        ("KURA_KEY_FILE", key_file.as_os_str()),
        ("KURA_PASSWORD", OsStr::new("wrong")),
    ];
    ok(&run(&env, &backup_args));
    let out = run(&env, &["ls", "latest"]);
    assert_eq!(out.status.code(), Some(EXIT_PUT_ONLY), "{}", stderr(&out));
}

#[test]
fn a_put_only_key_backs_up_a_dump_command_and_an_image_the_admin_restores() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let image = dir.path().join("disk.img");
    let mut want = vec![0u8; 8 << 20];
    want[1 << 20..3 << 20].copy_from_slice(&pseudo_random(2 << 20, 7));
    fs::write(&image, &want).unwrap();
    let image_str = image.to_str().unwrap();
    let dump = backup(&roles.put_only(&[
        "--json",
        "backup",
        "--stdin-from-command",
        "db/site.sql=seq 1 100000",
    ]));
    let disk = backup(&roles.put_only(&["--json", "backup", "--image", image_str]));

    let out = roles.admin(&["dump", &dump, "db/site.sql"]);
    ok(&out);
    let expected = std::process::Command::new("seq")
        .args(["1", "100000"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(out.stdout, expected);
    let restored = dir.path().join("restored.img");
    ok(&roles.admin(&[
        "restore",
        &disk,
        "--image",
        image_str,
        "--to",
        restored.to_str().unwrap(),
    ]));
    assert!(fs::read(&restored).unwrap() == want, "image differs");
    for args in [
        &["dump", &dump, "db/site.sql"][..],
        &["restore", &disk, "--target", "/tmp/never"],
    ] {
        let out = roles.put_only(args);
        assert_eq!(out.status.code(), Some(EXIT_PUT_ONLY), "{}", stderr(&out));
    }
}

#[test]
fn a_put_only_index_file_calling_real_packs_empty_deletes_nothing() {
    use kura::format::index::IndexedPack;
    use kura::format::pack::PackKind;
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("site");
    let nights = two_nights(&roles, &source);
    let put = roles.put_only_handle();
    // Every real pack described as holding nothing, and every chunk a
    // night needs pointed at a pack that does not exist.
    let mut packs: Vec<IndexedPack> = (put.list_packs().unwrap().into_iter())
        .map(|(id, size)| IndexedPack {
            id,
            kind: PackKind::Data,
            size,
            entries: Vec::new(),
        })
        .collect();
    let real_files: Vec<IndexId> = put.list::<IndexFile>().unwrap();
    let mut entries = Vec::new();
    for file in &real_files {
        let f: IndexFile = put.load(file).unwrap();
        entries.extend(f.packs.into_iter().flat_map(|p| p.entries));
    }
    entries.sort_by_key(|e| e.offset);
    let mut offset = 0;
    for e in &mut entries {
        e.offset = offset;
        e.raw_offset = 0; // every chunk its own group
        offset += e.stored_len;
    }
    packs.push(IndexedPack {
        id: PackId([0xab; 32]),
        kind: PackKind::Data,
        size: u64::from(offset) + 4096,
        entries,
    });
    let forged = IndexFile {
        supersedes: Vec::new(),
        packs,
    };
    let id = IndexId([0x01; 32]);
    let writer = put.sealer().key_set().writer();
    let path = layout::index_path(&id);
    plant(
        &put,
        ObjectType::Index,
        id.as_bytes(),
        &path,
        forged.encode(),
        writer,
    );
    let data = roles.admin.path.join("data");
    let before = bytes_under(&data);
    ok(&roles.admin(&["forget", "--keep-last", "2"]));
    ok(&roles.admin(&["prune", "--now"]));
    ok(&roles.admin(&["prune", "--now"]));
    assert_eq!(bytes_under(&data), before, "no real pack deleted");
    for (id, expected) in &nights {
        roles.restore_matches(id, &source, expected);
    }
}

/// `files_unchanged` of the summary a `backup --json` printed.
fn unchanged(out: &Output) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    v["summary"]["files_unchanged"].as_u64().unwrap()
}

#[test]
fn a_put_only_backup_skips_unchanged_files_by_its_files_cache_and_never_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("www");
    fs::create_dir_all(source.join("media")).unwrap();
    // More extents than fit inline: its content is an extent list.
    fs::write(source.join("media/video.bin"), pseudo_random(48 << 20, 1)).unwrap();
    fs::write(source.join("media/logo.png"), pseudo_random(300 << 10, 2)).unwrap();
    fs::write(source.join("index.php"), b"<?php echo 1;").unwrap();
    fs::write(source.join("empty"), b"").unwrap();
    let src = source.to_str().unwrap();
    let night = |roles: &Roles| {
        let out = roles.put_only(&["--json", "backup", src]);
        let n = unchanged(&out);
        (backup(&out), n)
    };
    let (_, n) = night(&roles);
    assert_eq!(n, 0, "night 1 has no cache");

    // Night 2: nothing changed; no file is read.
    let (id, n) = night(&roles);
    assert_eq!(n, 4, "night 2 reuses every file from the cache");
    source_restores(&roles, &id, &source);

    // Night 3: one file rewritten with the same size: read again.
    fs::write(source.join("media/logo.png"), pseudo_random(300 << 10, 3)).unwrap();
    let (id, n) = night(&roles);
    assert_eq!(n, 3);
    source_restores(&roles, &id, &source);

    // A lost cache costs reading; a damaged one too.
    let files = roles
        .put_cache
        .join(listed(&roles.put_cache)[0].clone())
        .join("files");
    let cached = listed(&files);
    assert_eq!(cached.len(), 1, "one cache for one source set: {cached:?}");
    fs::remove_file(files.join(&cached[0])).unwrap();
    let (_, n) = night(&roles);
    assert_eq!(n, 0, "a lost cache: every file read");
    fs::write(files.join(&cached[0]), b"garbage").unwrap();
    let (id, n) = night(&roles);
    assert_eq!(n, 0, "a damaged cache: every file read");
    source_restores(&roles, &id, &source);

    // The admin forgets and prunes everything: the cache names chunks
    // the index no longer lists, so the files are read and stored again.
    let (_, n) = night(&roles);
    assert_eq!(n, 4, "the cache was rewritten");
    ok(&roles.admin(&["forget", "--keep-tag", "none-has-it"]));
    ok(&roles.admin(&["prune", "--now"]));
    let (id, n) = night(&roles);
    assert_eq!(
        n, 1,
        "the cache's chunks are gone: read again (all but the empty file)"
    );
    source_restores(&roles, &id, &source);
    ok(&roles.admin(&["check", "--read-data"]));
}

#[test]
fn admin_records_dated_in_the_future_or_before_the_repository_condemn_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::new(dir.path());
    let source = dir.path().join("site");
    let nights = two_nights(&roles, &source);
    // Written with the admin key itself (a wrong clock, or a replay by
    // someone who once held it): authentic, but dated impossibly.
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&roles.admin.path));
    let admin = Repository::open(backend, b"pw").unwrap();
    let packs: Vec<(PackId, u64)> = admin.list_packs().unwrap().into_iter().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (future, ancient) = (RecordId([0xd1; 32]), RecordId([0xd2; 32]));
    for (id, created) in [(future, now + 30 * 86_400), (ancient, 1)] {
        let record = PruneRecord {
            created,
            grace: 0,
            seen_index: admin.list::<IndexFile>().unwrap(),
            seen_orphans: Vec::new(),
            condemned: packs.clone(),
            forgotten: Vec::new(),
        };
        kura::repository::records::save(&admin, &id, &record).unwrap();
    }
    for _ in 0..2 {
        let out = roles.admin(&["prune"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&future.to_hex()) && err.contains("in the future"),
            "{err}"
        );
        assert!(
            err.contains(&ancient.to_hex()) && err.contains("before the repository"),
            "{err}"
        );
    }
    for (pack, _) in &packs {
        assert!(
            roles.admin.path.join(layout::pack_path(pack)).exists(),
            "pack {pack} deleted"
        );
    }
    // check tells of both (a note: the admin's own, not damage).
    let out = roles.admin(&["--json", "check", "--read-data"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let notes = report["notes"].to_string();
    for id in [future, ancient] {
        assert!(notes.contains(&id.to_hex()), "{notes}");
    }
    for (id, expected) in &nights {
        roles.restore_matches(id, &source, expected);
    }
}

#[test]
fn a_put_only_key_is_a_copy_target_that_never_gets_a_snapshot_twice() {
    let dir = tempfile::tempdir().unwrap();
    let offsite = Roles::new(&dir.path().join("offsite"));
    let site = CliRepo::init(&dir.path().join("site"));
    let source = dir.path().join("www");
    fs::create_dir_all(&source).unwrap();
    let src = source.to_str().unwrap();
    let to = offsite.admin.path.to_str().unwrap().to_owned();
    let copy = |args: &[&str]| {
        let mut env = site.env().to_vec();
        env.push(("KURA_TO_PASSWORD", OsStr::new(PUT_ONLY_PASSWORD)));
        let out = kura_env(
            &site.path,
            &env,
            &[&["--json", "copy", "--to", &to][..], args].concat(),
        );
        let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
        let count = |k: &str| v[k].as_array().unwrap().len();
        (count("copied"), count("already_copied"))
    };
    let mut nights = Vec::new();
    for seed in 1..=2 {
        fs::write(source.join("db.sql"), pseudo_random(400 << 10, seed)).unwrap();
        nights.push((
            backup(&site.run(&["--json", "backup", src])),
            describe(&source),
        ));
    }
    assert_eq!(copy(&[]), (2, 0));
    // It cannot read the target's snapshots: it knows what it copied.
    assert_eq!(copy(&[]), (0, 2), "nothing is copied twice");
    fs::write(source.join("db.sql"), pseudo_random(400 << 10, 3)).unwrap();
    nights.push((
        backup(&site.run(&["--json", "backup", src])),
        describe(&source),
    ));
    assert_eq!(copy(&[]), (1, 2));

    // The offsite admin reads all of it; the key reads none of it.
    let listing = ok(&offsite.admin(&["--json", "snapshots"]));
    let listed: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listing}");
    ok(&offsite.admin(&["check", "--read-data"]));
    let restored = dir.path().join("restored");
    let out = offsite.admin(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    ok(&out);
    let got = describe(&restored.join(source.strip_prefix("/").unwrap()));
    assert_eq!(got, nights[2].1);
    let back = offsite.put_only(&["copy", "--to", site.path.to_str().unwrap()]);
    assert_eq!(back.status.code(), Some(EXIT_PUT_ONLY), "{}", stderr(&back));
}
