//! One damaged metadata object (an index file or a snapshot) is damage to
//! report, never a reason to stop the repository (issue 12): for each way
//! of damaging it (first byte flipped, last byte flipped, truncated to
//! nothing, header zeroed) the other snapshots list and restore
//! byte-identical, a backup works, `check` names the object and its repair
//! (exit 14, never 13 "newer version"), `prune` refuses with the same
//! advice, and the documented repair leaves `check --read-data` clean.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Output;

use kura::format::pack::{PackKind, TRAILER_LEN};
use kura::id::PackId;

use crate::check::{
    Damaged, checks_clean, damage_found, data_packs, flip, open_library, restores_exactly_with,
    snapshot_ids, two_snapshots,
};
use crate::common::{kura_env, stderr};

#[derive(Debug, Clone, Copy)]
enum Harm {
    FirstByte,
    LastByte,
    Truncated,
    ZeroedHeader,
}

const HARMS: [Harm; 4] = [
    Harm::FirstByte,
    Harm::LastByte,
    Harm::Truncated,
    Harm::ZeroedHeader,
];

fn harm(path: &Path, how: Harm) {
    let mut bytes = fs::read(path).unwrap();
    match how {
        Harm::FirstByte => bytes[0] ^= 0x40,
        Harm::LastByte => *bytes.last_mut().unwrap() ^= 0x40,
        Harm::Truncated => bytes.clear(),
        Harm::ZeroedHeader => bytes[..32].fill(0),
    }
    fs::remove_file(path).unwrap(); // objects are read-only hard links
    fs::write(path, bytes).unwrap();
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

fn damaged_index_file(how: Harm) {
    let d = two_snapshots();
    harm(&d.second_index, how);
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
    let d = two_snapshots();
    let object = d.cli.path.join("snapshots").join(&d.second);
    harm(&object, how);
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

#[test]
fn an_index_file_with_its_first_byte_flipped() {
    damaged_index_file(HARMS[0]);
}

#[test]
fn an_index_file_with_its_last_byte_flipped() {
    damaged_index_file(HARMS[1]);
}

#[test]
fn an_index_file_truncated_to_nothing() {
    damaged_index_file(HARMS[2]);
}

#[test]
fn an_index_file_with_a_zeroed_header() {
    damaged_index_file(HARMS[3]);
}

#[test]
fn a_snapshot_with_its_first_byte_flipped() {
    damaged_snapshot(HARMS[0]);
}

#[test]
fn a_snapshot_with_its_last_byte_flipped() {
    damaged_snapshot(HARMS[1]);
}

#[test]
fn a_snapshot_truncated_to_nothing() {
    damaged_snapshot(HARMS[2]);
}

#[test]
fn a_snapshot_with_a_zeroed_header() {
    damaged_snapshot(HARMS[3]);
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
