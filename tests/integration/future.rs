//! Snapshots dated in the future (format-spec/11, "Dates"): one dated
//! 2100, as a cracked client or a wrong clock would write, is never
//! `latest`, never a parent, counted by no retention rule (so
//! `forget --keep-within` keeps every real snapshot), marked by
//! `snapshots` and noted by `check`.

use std::fs;
use std::sync::Arc;

use kura::backend::LocalBackend;
use kura::repository::{Repository, snapshots};

use crate::common::{CliRepo, stderr};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn a_snapshot_dated_2100_is_never_latest_a_parent_or_a_reason_to_forget() {
    let dir = tempfile::tempdir().unwrap();
    let repo = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"real").unwrap();
    let src_arg = src.to_str().unwrap();
    let real = json(&ok(&repo.run(&["--json", "backup", src_arg])))["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();

    // The forgery: the real snapshot's tree, host and paths, dated 2100.
    let backend = Arc::new(LocalBackend::new(&repo.path));
    let opened = Repository::open(backend, b"pw").unwrap();
    let (_, mut forged) = snapshots::list(&opened).unwrap().pop().unwrap();
    forged.time = 4_102_444_800 * 1_000_000_000;
    let forged_id = snapshots::save(&opened, &forged).unwrap().to_hex();

    let listed = json(&ok(&repo.run(&["--json", "snapshots"])));
    let row = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row(&forged_id)["future"], true);
    assert_eq!(row(&real)["future"], false);
    assert!(ok(&repo.run(&["snapshots"])).contains("(future)"));

    // latest is the real one; the next backup's parent too.
    let out = ok(&repo.run(&["dump", "latest", &format!("{src_arg}/a")]));
    assert_eq!(out, "real");
    fs::write(src.join("b"), b"night two").unwrap();
    let night2 = json(&ok(&repo.run(&["--json", "backup", src_arg])));
    assert_eq!(night2["parent"], real.as_str(), "{night2}");

    // A window anchored to now keeps both real snapshots; the forged one
    // is kept too, counted by no rule.
    let decided = json(&ok(&repo.run(&[
        "--json",
        "forget",
        "--keep-within",
        "30d",
    ])));
    let text = decided.to_string();
    assert!(!text.contains("\"keep\":false"), "{text}");
    assert_eq!(
        json(&ok(&repo.run(&["--json", "snapshots"])))
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let out = repo.run(&["check"]);
    let said = ok(&out);
    assert!(
        said.contains(&format!("snapshot {forged_id} is dated")),
        "{said}"
    );
}
