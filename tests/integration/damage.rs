//! The damage matrix (issue 12): every kind of object (config, key slot,
//! snapshot, index file, prune record, tree pack, data pack) harmed each
//! way ([`HARMS`]: first byte flipped, last byte flipped, truncated to
//! nothing, header zeroed, another object of the type copied over it, or
//! moved to its name), one helper per kind looping over the harms. For
//! each: the exit code, an error that names the object, the unaffected
//! snapshots restoring byte-identical, and the documented repair leaving
//! `check --read-data` clean.
//!
//! | object | what `kura` does | repair |
//! |---|---|---|
//! | config | nothing opens (exit 14), "repository config" named | put back `config` from a copy (it never changes) |
//! | key slot | its password fails (exit 12), the slot named; `check` names one that does not decode (14) | another password: `key remove`, `key add` |
//! | snapshot | skipped (warned once); `check` 14; prune refuses | `repair snapshots` |
//! | index file | skipped (warned once); `check` 14; prune refuses | `repair index` |
//! | prune record | `check` 14; backup and prune refuse, naming it | `repair index` (deletes it) |
//! | tree or data pack | `check --read-data` 14 | `repair snapshots`, then `repair index --read-data` |
//!
//! A snapshot or index file damaged never stops the others: they list and
//! restore, backup works, and `check`'s message is never 13 "newer
//! version".

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use kura::format::pack::{PackKind, TRAILER_LEN};
use kura::id::{PackId, SnapshotId};

use crate::check::{
    Damaged, backup, checks_clean, damage_found, data_packs, files_in, flip, open_library,
    pack_file, restores_exactly_with, snapshot_ids, two_snapshots,
};
use crate::common::{CliRepo, FAST_KDF, kura_env, pseudo_random, stderr};

#[derive(Debug, Clone, Copy)]
pub enum Harm {
    FirstByte,
    LastByte,
    Truncated,
    ZeroedHeader,
    /// Another object's bytes copied over this one's (both names stay).
    Swapped,
    /// Another object moved to this one's name (its own name is gone).
    Renamed,
}

pub const HARMS: [Harm; 6] = [
    Harm::FirstByte,
    Harm::LastByte,
    Harm::Truncated,
    Harm::ZeroedHeader,
    Harm::Swapped,
    Harm::Renamed,
];

/// Harms the object at `victim`; `other` is another object of the same
/// type, used by [`Harm::Swapped`] and [`Harm::Renamed`].
pub fn harm(victim: &Path, other: &Path, how: Harm) {
    let mut bytes = fs::read(victim).unwrap();
    match how {
        Harm::FirstByte => bytes[0] ^= 0x40,
        Harm::LastByte => *bytes.last_mut().unwrap() ^= 0x40,
        Harm::Truncated => bytes.clear(),
        Harm::ZeroedHeader => bytes[..32].fill(0),
        Harm::Swapped => bytes = fs::read(other).unwrap(),
        Harm::Renamed => {
            fs::rename(other, victim).unwrap();
            return;
        }
    }
    fs::remove_file(victim).unwrap(); // objects are read-only hard links
    fs::write(victim, bytes).unwrap();
}

/// Forgets what this machine saw of the repository (`ops::history`).
/// Moving one object over another deletes the other, and a damaged record
/// that `repair index` deletes takes the names of the snapshots it
/// forgot with it: this machine would report both as a repository that
/// went back (exit 20, `tests/integration/rollback.rs`) until the user
/// accepts it, which is what the damage tests here do.
fn accept_history(d: &Damaged) {
    for entry in fs::read_dir(d.dir.path().join("cache")).unwrap() {
        let history = entry.unwrap().path().join("history");
        if history.exists() {
            fs::remove_file(history).unwrap();
        }
    }
}

/// Runs `args`, asserting exit code `code`; returns (stdout, stderr).
fn run(d: &Damaged, args: &[&str], code: i32) -> (String, String) {
    check_exit(d.cli.run(args), args, code)
}

/// [`run`] with an index cache of its own, so the damaged object is read.
fn run_fresh(d: &Damaged, args: &[&str], code: i32) -> (String, String) {
    let cache = tempfile::tempdir().unwrap();
    let env = [
        ("KURA_PASSWORD", OsStr::new("pw")),
        ("KURA_CACHE_DIR", cache.path().as_os_str()),
    ];
    check_exit(kura_env(&d.cli.path, &env, args), args, code)
}

fn check_exit(out: Output, args: &[&str], code: i32) -> (String, String) {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("version of kura"), "{args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

/// The commands every damaged repository must still serve; `object` is
/// how the warning names it, `id` its name in the repository.
fn still_works(d: &Damaged, object: &str, id: &str, repair: &str) {
    let (listed, _) = run(d, &["snapshots"], 0);
    assert!(listed.contains(&d.first[..16]), "{listed}");
    restores_exactly_with(d, &d.first, &["old.bin"], &[], true);
    let (_, warned) = run_fresh(d, &["backup", d.src.to_str().unwrap()], 0);
    assert_eq!(warned.matches(object).count(), 1, "warned once: {warned}");
    run(d, &["forget", "--keep-last", "10"], 0);
    let (text, _) = run(d, &["check"], 14);
    assert!(text.contains(id) && text.contains(repair), "{text}");
    let (_, refused) = run(d, &["prune"], 14);
    assert!(
        refused.contains(object) && refused.contains(repair),
        "{refused}"
    );
}

/// Two snapshots as [`two_snapshots`] makes them, and a third of another
/// directory, whose packs, index file and snapshot are "another object of
/// the same type" for [`Harm::Swapped`] and [`Harm::Renamed`]: harming
/// the second's objects with them leaves the first snapshot unaffected.
struct Three {
    d: Damaged,
    third: String,
    third_index: PathBuf,
    third_packs: HashSet<PathBuf>,
}

fn three_snapshots() -> Three {
    let d = two_snapshots();
    let packs_before = data_packs(&d.cli.path);
    let indexes_before = files_in(&d.cli.path.join("index"));
    let elsewhere = d.dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("other.bin"), pseudo_random(1 << 19, 7)).unwrap();
    let third = backup(&d.cli, &elsewhere);
    let third_index = files_in(&d.cli.path.join("index"))
        .difference(&indexes_before)
        .next()
        .unwrap()
        .clone();
    let third_packs = data_packs(&d.cli.path)
        .difference(&packs_before)
        .cloned()
        .collect();
    Three {
        d,
        third,
        third_index,
        third_packs,
    }
}

fn damaged_index_file(how: Harm) {
    let Three { d, third_index, .. } = three_snapshots();
    harm(&d.second_index, &third_index, how);
    let name = d.second_index.file_name().unwrap().to_str().unwrap();
    let found = damage_found(&d, &[]);
    assert!(found.contains(&format!("index {name}")), "{how:?}: {found}");
    let object = format!("index file {name}");
    still_works(&d, &object, name, "kura repair index");
    // Rebuilt around the damaged file, which is superseded and deleted.
    run(&d, &["repair", "index"], 0);
    assert!(!d.second_index.exists(), "{how:?}");
    checks_clean(&d);
    restores_exactly_with(&d, &d.second, &["new.bin", "old.bin"], &[], true);
    run(&d, &["prune"], 0);
    checks_clean(&d);
}

fn damaged_snapshot(how: Harm) {
    let Three { d, third, .. } = three_snapshots();
    let snapshots = d.cli.path.join("snapshots");
    harm(&snapshots.join(&d.second), &snapshots.join(third), how);
    accept_history(&d);
    let found = damage_found(&d, &[]);
    assert!(
        found.contains(&format!("snapshot {}", d.second)),
        "{how:?}: {found}"
    );
    still_works(
        &d,
        &format!("snapshot {}", d.second),
        &d.second,
        "kura repair snapshots",
    );
    // An undecryptable snapshot cannot be rewritten: it is removed.
    let (said, _) = run(&d, &["repair", "snapshots"], 0);
    assert!(
        said.contains(&format!("snapshot {}: removed", &d.second[..16])),
        "{said}"
    );
    assert!(!snapshot_ids(&d).contains(&d.second), "{how:?}");
    checks_clean(&d);
    run(&d, &["prune"], 0);
    checks_clean(&d);
    restores_exactly_with(&d, &d.first, &["old.bin"], &[], true);
}

/// The pack of `kind` among `packs`.
fn pack_of_kind(d: &Damaged, packs: &HashSet<PathBuf>, kind: PackKind) -> PathBuf {
    let (repo, _) = open_library(d);
    packs
        .iter()
        .find(|p| {
            let id = PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let size = fs::metadata(p).unwrap().len();
            repo.read_pack_header(&id, size).unwrap().kind == kind
        })
        .unwrap()
        .clone()
}

/// The pack holding `snapshot`'s root tree.
fn tree_pack_of(d: &Damaged, snapshot: &str) -> PathBuf {
    let (repo, index) = open_library(d);
    let id = SnapshotId::from_hex(snapshot).unwrap();
    let snap = kura::repository::snapshots::load(&repo, &id).unwrap();
    let loc = index.lookup(&snap.tree_id().unwrap()).unwrap().unwrap();
    assert_eq!(loc.kind, PackKind::Tree);
    pack_file(&d.cli.path, &loc.pack)
}

/// A pack of the second backup harmed: `check --read-data` names it
/// (exit 14), the first snapshot restores, and the repair `check` names
/// (`repair snapshots`, then `repair index --read-data`) leaves the
/// repository clean with the first snapshot whole.
fn damaged_pack(kind: PackKind, how: Harm) {
    let t = three_snapshots();
    let d = &t.d;
    let (victim, other) = match kind {
        PackKind::Data => (
            d.second_data_pack.clone(),
            pack_of_kind(d, &t.third_packs, kind),
        ),
        PackKind::Tree => (tree_pack_of(d, &d.second), tree_pack_of(d, &t.third)),
    };
    harm(&victim, &other, how);
    let name = victim.file_name().unwrap().to_str().unwrap();
    let found = damage_found(d, &["--read-data"]);
    assert!(found.contains(&format!("pack {name}")), "{how:?}: {found}");
    let (text, _) = run(d, &["check", "--read-data"], 14);
    assert!(
        text.contains("kura repair snapshots, then kura repair index --read-data"),
        "{how:?}: {text}"
    );
    restores_exactly_with(d, &d.first, &["old.bin"], &[], true);
    run(d, &["repair", "snapshots"], 0);
    run(d, &["repair", "index", "--read-data"], 0);
    checks_clean(d);
    restores_exactly_with(d, &d.first, &["old.bin"], &[], true);
}

#[test]
fn an_index_file_harmed_each_way_is_damage_repaired_by_repair_index() {
    for how in HARMS {
        damaged_index_file(how);
    }
}

#[test]
fn a_snapshot_harmed_each_way_is_damage_repaired_by_repair_snapshots() {
    for how in HARMS {
        damaged_snapshot(how);
    }
}

#[test]
fn a_tree_pack_with_an_unknown_header_scheme_is_damage_named_by_check() {
    let d = two_snapshots();
    let (repo, _) = open_library(&d);
    let (pack, path) = data_packs(&d.cli.path)
        .into_iter()
        .map(|p| {
            let id = PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            (id, p)
        })
        .find(|(id, p)| {
            let size = fs::metadata(p).unwrap().len();
            repo.read_pack_header(id, size).unwrap().kind == PackKind::Tree
        })
        .unwrap();
    let bytes = fs::read(&path).unwrap();
    let trailer = &bytes[bytes.len() - TRAILER_LEN..];
    let header_len = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as usize;
    flip(&path, bytes.len() - TRAILER_LEN - header_len);
    for args in [&[][..], &["--read-data"]] {
        let found = damage_found(&d, args);
        assert!(found.contains(&format!("pack {pack}")), "{args:?}: {found}");
    }
    // The index still locates every tree: both snapshots restore.
    restores_exactly_with(&d, &d.first, &["old.bin"], &[], false);
    restores_exactly_with(&d, &d.second, &["new.bin", "old.bin"], &[], false);
}

#[test]
fn a_data_pack_harmed_each_way_is_damage_named_by_check_read_data() {
    for how in HARMS {
        damaged_pack(PackKind::Data, how);
    }
}

#[test]
fn a_tree_pack_harmed_each_way_is_damage_named_by_check_read_data() {
    for how in HARMS {
        damaged_pack(PackKind::Tree, how);
    }
}

/// A repository with two prune records and one snapshot, `kept`, holding
/// `old.bin` alone: the second snapshot's and a later one's new files were
/// forgotten, each pruned by a record of its own.
struct Pruned {
    d: Damaged,
    kept: String,
    /// The records, oldest first.
    records: Vec<PathBuf>,
}

fn two_prune_records() -> Pruned {
    let d = two_snapshots();
    let mut records = Vec::new();
    let mut kept = String::new();
    for name in ["new.bin", "newer.bin"] {
        fs::write(d.src.join(name), pseudo_random(1 << 19, 8)).unwrap();
        backup(&d.cli, &d.src);
        fs::remove_file(d.src.join(name)).unwrap();
        kept = backup(&d.cli, &d.src);
        run(&d, &["forget", "--keep-last", "1"], 0);
        let before = prune_records(&d);
        run(&d, &["prune"], 0);
        let after = prune_records(&d);
        records.extend(after.difference(&before).cloned());
    }
    assert_eq!(records.len(), 2, "one record per prune");
    Pruned { d, kept, records }
}

fn prune_records(d: &Damaged) -> HashSet<PathBuf> {
    let dir = d.cli.path.join("prune");
    if dir.exists() {
        files_in(&dir)
    } else {
        HashSet::new()
    }
}

/// A harmed prune record is damage: `check` names it and `kura repair
/// index` (exit 14); backup and prune refuse with the same advice (a
/// record that cannot be read could condemn any pack, format-spec/12);
/// the kept snapshot restores; `repair index` indexes every pack again and
/// deletes the record, after which backup, prune and `check --read-data`
/// are clean.
fn damaged_prune_record(how: Harm) {
    let Pruned { d, kept, records } = two_prune_records();
    harm(&records[1], &records[0], how);
    accept_history(&d);
    let id = records[1].file_name().unwrap().to_str().unwrap();
    let found = damage_found(&d, &[]);
    assert!(
        found.contains(&format!("prune record {id}")),
        "{how:?}: {found}"
    );
    let (text, _) = run(&d, &["check"], 14);
    assert!(text.contains("kura repair index"), "{how:?}: {text}");
    let object = format!("prune record {id}");
    for args in [&["backup", d.src.to_str().unwrap()][..], &["prune"]] {
        let (_, refused) = run(&d, args, 14);
        assert!(
            refused.contains(&object) && refused.contains("kura repair index"),
            "{how:?} {args:?}: {refused}"
        );
    }
    restores_exactly_with(&d, &kept, &["old.bin"], &[], true);
    let (said, _) = run(&d, &["repair", "index"], 0);
    assert!(said.contains(&object), "{how:?}: {said}");
    assert!(!records[1].exists(), "{how:?}");
    accept_history(&d);
    checks_clean(&d);
    run(&d, &["backup", d.src.to_str().unwrap()], 0);
    run(&d, &["prune"], 0);
    checks_clean(&d);
    restores_exactly_with(&d, &kept, &["old.bin"], &[], true);
}

#[test]
fn a_prune_record_harmed_each_way_is_damage_repaired_by_repair_index() {
    for how in HARMS {
        damaged_prune_record(how);
    }
}

/// What `kura` says about a damaged config: nothing repairs it (it holds
/// the repository's parameters, sealed under its keys), but it never
/// changes after `init`, so any copy of the repository has it whole.
const CONFIG_ADVICE: &str = "put back the file `config` from any copy of this repository";

/// A harmed config: the repository does not open (exit 14, the config
/// named and what to do); with the config put back, as the message says,
/// it checks clean and every snapshot restores. Swapped and renamed take
/// another repository's config, the only other object of the type.
fn damaged_config(how: Harm) {
    let d = two_snapshots();
    let config = d.cli.path.join("config");
    let whole = fs::read(&config).unwrap();
    let foreign = CliRepo::init(&d.dir.path().join("foreign")).path;
    harm(&config, &foreign.join("config"), how);
    for args in [
        &["snapshots"][..],
        &["check"],
        &["backup", d.src.to_str().unwrap()],
    ] {
        let (_, said) = run(&d, args, 14);
        assert!(
            said.contains("repository config") && said.contains(CONFIG_ADVICE),
            "{how:?} {args:?}: {said}"
        );
    }
    fs::remove_file(&config).unwrap();
    fs::write(&config, whole).unwrap();
    checks_clean(&d);
    restores_exactly_with(&d, &d.first, &["old.bin"], &[], true);
    restores_exactly_with(&d, &d.second, &["new.bin", "old.bin"], &[], true);
}

#[test]
fn a_config_harmed_each_way_stops_the_repository_and_says_to_put_it_back() {
    for how in HARMS {
        damaged_config(how);
    }
}

/// Runs `args` with `password` (and `KURA_NEW_PASSWORD` = `new`),
/// asserting exit `code`; returns (stdout, stderr).
fn run_as(d: &Damaged, password: &str, new: &str, args: &[&str], code: i32) -> (String, String) {
    let cache = d.dir.path().join("cache");
    let env = [
        ("KURA_PASSWORD", OsStr::new(password)),
        ("KURA_CACHE_DIR", cache.as_os_str()),
        ("KURA_NEW_PASSWORD", OsStr::new(new)),
    ];
    check_exit(kura_env(&d.cli.path, &env, args), args, code)
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_owned()
}

/// A harmed key slot (the slot of "pw"; a second slot, of "two", is the
/// other object): "pw" no longer opens the repository (exit 12), and the
/// error names the slot. A slot that no longer decodes is named as such;
/// one whose sealed key was damaged, or that holds another slot's bytes,
/// cannot be told from a wrong password (its only check is its AEAD under
/// the password's key), so the error names the slots tried and says that
/// a damaged slot fails the same way. With "two" every snapshot restores,
/// `check` names a slot that does not decode and `kura key remove` (exit
/// 14), and removing it, then `kura key add` for "pw", leaves the
/// repository clean for "pw".
fn damaged_key_slot(how: Harm) {
    let d = two_snapshots();
    let keys = d.cli.path.join("keys");
    let pw_slot = files_in(&keys).into_iter().next().unwrap();
    run_as(
        &d,
        "pw",
        "two",
        &[&["key", "add"][..], &FAST_KDF].concat(),
        0,
    );
    let two_slot = files_in(&keys).into_iter().find(|p| *p != pw_slot).unwrap();
    let (pw_id, two_id) = (file_name(&pw_slot), file_name(&two_slot));
    harm(&pw_slot, &two_slot, how);
    let (_, said) = run_as(&d, "pw", "", &["snapshots"], 12);
    assert!(
        said.contains(&format!("key slot {pw_id}")) && said.contains("damaged key slot"),
        "{how:?}: {said}"
    );
    restores_exactly_with_password(&d, "two");
    let undecodable = matches!(how, Harm::FirstByte | Harm::Truncated | Harm::ZeroedHeader);
    let (text, _) = run_as(&d, "two", "", &["check"], if undecodable { 14 } else { 0 });
    if undecodable {
        assert!(
            text.contains(&format!("key slot {pw_id}")) && text.contains("kura key remove"),
            "{how:?}: {text}"
        );
    }
    if !matches!(how, Harm::Renamed) {
        let remove = ["--key-slot", &two_id, "key", "remove", &pw_id];
        run_as(&d, "two", "", &remove, 0);
    }
    run_as(
        &d,
        "two",
        "pw",
        &[&["key", "add"][..], &FAST_KDF].concat(),
        0,
    );
    checks_clean(&d);
    restores_exactly_with(&d, &d.first, &["old.bin"], &[], true);
}

/// Both snapshots restore byte-identical when opened with `password`.
fn restores_exactly_with_password(d: &Damaged, password: &str) {
    for (snapshot, names) in [
        (&d.first, &["old.bin"][..]),
        (&d.second, &["new.bin", "old.bin"]),
    ] {
        let target = d
            .dir
            .path()
            .join(format!("restore-{password}-{}", &snapshot[..8]));
        let args = [
            "restore",
            snapshot.as_str(),
            "--target",
            target.to_str().unwrap(),
        ];
        run_as(d, password, "", &args, 0);
        let dir = target.join(d.src.strip_prefix("/").unwrap());
        for name in names {
            assert_eq!(
                fs::read(dir.join(name)).unwrap(),
                fs::read(d.src.join(name)).unwrap(),
                "{name} in {snapshot}"
            );
        }
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_key_slot_harmed_each_way_is_named_and_another_password_repairs_it() {
    for how in HARMS {
        damaged_key_slot(how);
    }
}
