//! Rollback and swap detection (README "When the server is cracked",
//! format-spec/08): storage that deletes the newest snapshot, brings back
//! an old config or a removed key slot is reported by `backup`,
//! `snapshots` and `check` with exit code 20, every time, until the user
//! deletes the history file; a snapshot `forget` removed is not.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::common::{CliRepo, FAST_KDF, stderr};

const ROLLED_BACK: i32 = 20;

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A repository with two nightly snapshots of `dir/src`.
fn two_nights(dir: &Path) -> CliRepo {
    let repo = CliRepo::init(dir);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"night one").unwrap();
    ok(&repo.run(&["backup", "-q", src.to_str().unwrap()]));
    fs::write(src.join("a"), b"night two").unwrap();
    ok(&repo.run(&["backup", "-q", src.to_str().unwrap()]));
    repo
}

fn newest_snapshot(repo: &CliRepo) -> String {
    let out = repo.run(&["snapshots", "--json"]);
    ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    rows.iter()
        .max_by_key(|r| r["snapshot"]["time"].as_i64().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_deleted_newest_snapshot_is_reported_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_nights(dir.path());
    let newest = newest_snapshot(&repo);
    fs::remove_file(repo.path.join("snapshots").join(&newest)).unwrap();

    let src = dir.path().join("src");
    let backup = repo.run(&["backup", "-q", src.to_str().unwrap()]);
    assert_eq!(code(&backup), ROLLED_BACK, "{}", stderr(&backup));
    assert!(stderr(&backup).contains(&newest), "{}", stderr(&backup));
    for args in [&["snapshots"][..], &["check"][..]] {
        let out = repo.run(args);
        assert_eq!(code(&out), ROLLED_BACK, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&newest), "{}", stderr(&out));
    }
    // The backup that found it still saved its snapshot: three listed
    // minus the deleted one.
    let out = repo.run(&["snapshots", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);

    let history = dir
        .path()
        .join("cache")
        .join(repo_id(&repo))
        .join("history");
    fs::remove_file(history).unwrap();
    ok(&repo.run(&["snapshots"]));
    ok(&repo.run(&["check"]));
}

#[test]
fn a_snapshot_forget_removed_is_not_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_nights(dir.path());
    ok(&repo.run(&["forget", "--keep-last", "1"]));
    ok(&repo.run(&["snapshots"]));
    ok(&repo.run(&["check"]));
    ok(&repo.run(&["prune", "--now"]));
    ok(&repo.run(&["check"]));
}

#[test]
fn an_old_config_or_a_removed_key_slot_coming_back_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_nights(dir.path());
    let config = repo.path.join("config");
    let original = fs::read(&config).unwrap();
    // The same repository sealed again (a fresh nonce): every byte but
    // the header differs, and it still opens.
    let rebuilt = {
        let backend = std::sync::Arc::new(kura::backend::LocalBackend::new(&repo.path));
        let opened = kura::repository::Repository::open(backend, b"pw").unwrap();
        kura::format::config::encode(
            opened.header(),
            opened.config(),
            &opened.sealer().keys().shared,
        )
    };
    fs::write(&config, &rebuilt).unwrap();
    let out = repo.run(&["check"]);
    assert_eq!(code(&out), ROLLED_BACK, "{}", stderr(&out));
    assert!(stderr(&out).contains("config"), "{}", stderr(&out));
    fs::write(&config, &original).unwrap();

    // A second password, removed from this machine, then put back from a
    // copy of the storage.
    let out = crate::common::kura_env(
        &repo.path,
        &[
            ("KURA_PASSWORD", "pw".as_ref()),
            ("KURA_NEW_PASSWORD", "second".as_ref()),
        ],
        &[&["key", "add"][..], &FAST_KDF].concat(),
    );
    ok(&out);
    let added = String::from_utf8_lossy(&out.stdout);
    let slot = added.trim().rsplit(' ').next().unwrap().to_owned();
    let saved = fs::read(repo.path.join("keys").join(&slot)).unwrap();
    ok(&repo.run(&["key", "remove", &slot]));
    fs::write(repo.path.join("keys").join(&slot), saved).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(code(&out), ROLLED_BACK, "{}", stderr(&out));
    assert!(stderr(&out).contains(&slot), "{}", stderr(&out));
}

fn repo_id(repo: &CliRepo) -> String {
    let out = repo.run(&["config", "show", "--json"]);
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["repository_id"].as_str().unwrap().to_owned()
}

#[test]
fn forgotten_names_survive_the_sweep_of_the_record_that_gave_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_nights(dir.path());
    ok(&repo.run(&["snapshots"]));
    ok(&repo.run(&["forget", "--keep-last", "1"]));
    let records = || fs::read_dir(repo.path.join("prune")).unwrap().count();
    assert_eq!(records(), 1, "the forget record");
    ok(&repo.run(&["prune"]));
    // Past the grace: the next prune sweeps both earlier records after
    // writing its own, which carries the forgotten name.
    let later = [("KURA_NOW", std::ffi::OsStr::new("@4102444800"))];
    let env: Vec<_> = repo.env().into_iter().chain(later).collect();
    let run = |args: &[&str]| crate::common::kura_env(&repo.path, &env, args);
    ok(&run(&["prune"]));
    ok(&run(&["prune"]));
    ok(&run(&["snapshots"]));
    ok(&run(&["check"]));
}
