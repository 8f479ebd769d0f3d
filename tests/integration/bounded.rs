//! Bounded reads (issue 12, item 4): every object kind has a largest
//! stored size, checked from a stat before the object is read. A 2 GiB
//! sparse file at a snapshot's or an index file's name is damage named by
//! `check` (exit 14, with both sizes); `snapshots`, `check` and a restore
//! of another snapshot finish, and none of them holds the file in memory
//! (peak resident memory of the child, from `/usr/bin/time -f %M`).
//! Key slots: `--key-slot`/`KURA_KEY_SLOT` tries only the slot named (the
//! order and the caps on KDF work are unit-tested in
//! `src/repository/unlock.rs`).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::check::{Damaged, json, two_snapshots};
use crate::common::{BIN, CliRepo, FAST_KDF, kura_env, skip, stderr};

/// The hostile object: 2 GiB, sparse (no disk space, all zeros).
const HOSTILE_LEN: u64 = 2 << 30;
/// The most a command may hold resident here: far below the hostile
/// object, far above what listing, checking or restoring two small
/// snapshots needs.
const MAX_PEAK_KIB: u64 = 256 << 10;
const TIME: &str = "/usr/bin/time";

/// Replaces the object at `path` by a sparse file of [`HOSTILE_LEN`].
fn make_hostile(path: &Path) {
    fs::remove_file(path).unwrap(); // objects are read-only hard links
    fs::File::create(path)
        .unwrap()
        .set_len(HOSTILE_LEN)
        .unwrap();
}

/// Runs kura with `args` on `d`'s repository, with a fresh index cache (so
/// the hostile object is read), under `/usr/bin/time`; asserts exit `code`
/// and a small peak; returns the output.
fn run_small(d: &Damaged, n: usize, args: &[&str], code: i32) -> Output {
    let cache = d.dir.path().join(format!("bounded-cache-{n}"));
    let peak_file = d.dir.path().join(format!("bounded-peak-{n}"));
    let mut cmd = Command::new(TIME);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&peak_file)
        .arg(BIN)
        .arg("-r")
        .arg(&d.cli.path)
        .args(args);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KURA_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("KURA_PASSWORD", "pw")
        .env("KURA_CACHE_DIR", OsStr::new(&cache));
    let out = cmd.output().expect("run kura under /usr/bin/time");
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    let text = fs::read_to_string(&peak_file).unwrap();
    let peak: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {text:?}"));
    assert!(
        peak < MAX_PEAK_KIB,
        "{args:?} peaked at {peak} KiB (limit {MAX_PEAK_KIB} KiB)"
    );
    out
}

/// `snapshots`, `check` and a restore of the first snapshot, each small;
/// `check` names `object` (as in its damage list) and the hostile size.
fn survives_hostile(d: &Damaged, object: &str) {
    let listed = run_small(d, 0, &["snapshots"], 0);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&d.first[..16]), "{listed}");
    let checked = run_small(d, 1, &["--json", "check"], 14);
    let damage = json(&checked)["damage"].to_string();
    assert!(damage.contains(object), "{damage}");
    assert!(damage.contains(&HOSTILE_LEN.to_string()), "{damage}");
    let target = d.dir.path().join("bounded-restore");
    let args = ["restore", &d.first, "--target", target.to_str().unwrap()];
    run_small(d, 2, &args, 0);
    crate::check::assert_old_restored(d, &target);
}

fn time_is_here(test: &str) -> bool {
    let here = Path::new(TIME).is_file();
    if !here {
        skip(test, "no /usr/bin/time to measure a child's peak memory");
    }
    here
}

#[test]
fn a_2_gib_file_at_a_snapshots_name_is_damage_never_read() {
    if !time_is_here("a_2_gib_file_at_a_snapshots_name_is_damage_never_read") {
        return;
    }
    let d = two_snapshots();
    make_hostile(&d.cli.path.join("snapshots").join(&d.second));
    survives_hostile(&d, &format!("snapshot {}", d.second));
}

#[test]
fn a_2_gib_file_at_an_index_files_name_is_damage_never_read() {
    if !time_is_here("a_2_gib_file_at_an_index_files_name_is_damage_never_read") {
        return;
    }
    let d = two_snapshots();
    make_hostile(&d.second_index);
    let name = d.second_index.file_name().unwrap().to_str().unwrap();
    survives_hostile(&d, &format!("index {name}"));
}

/// A 2 GiB file at a data pack's name (larger than any pack may be) is
/// damage to that pack: `check --read-data` names it with its size and
/// never reads it whole, and the first snapshot (not in that pack)
/// restores. `repair index --read-data` drops it from the index without
/// reading it.
#[test]
fn a_2_gib_file_at_a_packs_name_is_damage_never_read() {
    if !time_is_here("a_2_gib_file_at_a_packs_name_is_damage_never_read") {
        return;
    }
    let d = two_snapshots();
    make_hostile(&d.second_data_pack);
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    let checked = run_small(&d, 0, &["--json", "check", "--read-data"], 14);
    let damage = json(&checked)["damage"].to_string();
    assert!(damage.contains(&format!("pack {pack}")), "{damage}");
    assert!(damage.contains(&HOSTILE_LEN.to_string()), "{damage}");
    let target = d.dir.path().join("bounded-restore");
    let args = ["restore", &d.first, "--target", target.to_str().unwrap()];
    run_small(&d, 1, &args, 0);
    crate::check::assert_old_restored(&d, &target);
    let repaired = run_small(&d, 2, &["--json", "repair", "index", "--read-data"], 0);
    let dropped = String::from_utf8_lossy(&repaired.stdout);
    assert!(dropped.contains(pack), "{dropped}");
}

/// A 2 GiB file at a key slot's name is an unusable slot, named, never
/// read: the real slot still opens the repository.
#[test]
fn a_2_gib_file_at_a_key_slots_name_is_an_unusable_slot() {
    if !time_is_here("a_2_gib_file_at_a_key_slots_name_is_an_unusable_slot") {
        return;
    }
    let d = two_snapshots();
    let planted = d.cli.path.join("keys").join("00".repeat(32));
    fs::write(&planted, b"").unwrap();
    make_hostile(&planted);
    run_small(&d, 0, &["snapshots"], 0);
    let [_, cache] = d.cli.env();
    let wrong = kura_env(
        &d.cli.path,
        &[("KURA_PASSWORD", OsStr::new("wrong")), cache],
        &["snapshots"],
    );
    assert_eq!(wrong.status.code(), Some(12), "{}", stderr(&wrong));
    let said = stderr(&wrong);
    assert!(
        said.contains(&"00".repeat(32)) && said.contains(&HOSTILE_LEN.to_string()),
        "{said}"
    );
}

/// A 2 GiB file at `config` is refused from its size, never read.
#[test]
fn a_2_gib_config_is_refused_unread() {
    if !time_is_here("a_2_gib_config_is_refused_unread") {
        return;
    }
    let d = two_snapshots();
    make_hostile(&d.cli.path.join("config"));
    let out = run_small(&d, 0, &["snapshots"], 14);
    let said = stderr(&out);
    assert!(
        said.contains("config") && said.contains(&HOSTILE_LEN.to_string()),
        "{said}"
    );
}

/// `--key-slot` (or `KURA_KEY_SLOT`) tries that slot only.
#[test]
fn a_key_slot_is_chosen_with_key_slot_or_kura_key_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let [password, cache] = cli.env();
    let new = ("KURA_NEW_PASSWORD", OsStr::new("two"));
    let add = kura_env(
        &cli.path,
        &[password, cache, new],
        &[&["key", "add"][..], &FAST_KDF].concat(),
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let added = String::from_utf8_lossy(&add.stdout);
    let second = added.trim().rsplit(' ').next().unwrap().to_owned();
    let keys = json(&cli.run(&["--json", "key", "list"]));
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let two = ("KURA_PASSWORD", OsStr::new("two"));
    let chosen = kura_env(
        &cli.path,
        &[two, cache],
        &["--key-slot", &second[..12], "snapshots"],
    );
    assert!(chosen.status.success(), "{}", stderr(&chosen));
    let other = ("KURA_KEY_SLOT", OsStr::new(&first[..12]));
    let refused = kura_env(&cli.path, &[two, cache, other], &["snapshots"]);
    assert_eq!(refused.status.code(), Some(12), "{}", stderr(&refused));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--key-slot") && help.contains("KURA_KEY_SLOT"),
        "{help}"
    );
}
