//! One damaged metadata object is damage to that object (exit 14, named),
//! never "a newer version of kura" (exit 13) and never a reason for every
//! other command to stop: an unknown envelope scheme in an object of a v1
//! repository is a flipped byte, not a format from the future.

use std::fs;
use std::path::Path;

use crate::check::backup;
use crate::common::{CliRepo, stderr};

/// Two snapshots of two trees; their ids.
fn two_snapshots(dir: &Path, cli: &CliRepo) -> (String, String) {
    let mut ids = Vec::new();
    for (name, text) in [("one", &b"first night"[..]), ("two", b"second night")] {
        let src = dir.join(name);
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), text).unwrap();
        ids.push(backup(cli, &src));
    }
    (ids[0].clone(), ids[1].clone())
}

fn flip_first_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0x06; // scheme 1 -> 7
    fs::write(path, bytes).unwrap();
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn restores(cli: &CliRepo, dir: &Path, id: &str, tree: &str, want: &[u8]) {
    let target = dir.join(format!("restore-{id}"));
    let out = cli.run(&["restore", id, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = target
        .join(dir.join(tree).strip_prefix("/").unwrap())
        .join("f");
    assert_eq!(fs::read(file).unwrap(), want);
}

#[test]
fn a_snapshot_with_an_unknown_envelope_scheme_is_damage_not_a_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let (first, second) = two_snapshots(dir.path(), &cli);
    flip_first_byte(&cli.path.join("snapshots").join(&first));

    let out = cli.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(output(&out).contains(&second[..16]));
    restores(&cli, dir.path(), &second, "two", b"second night");
    assert!(
        cli.run(&["backup", "-q", dir.path().join("two").to_str().unwrap()])
            .status
            .success()
    );

    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(14), "{}", output(&out));
    let text = output(&out);
    assert!(text.contains(&first[..16]), "{text}");
    assert!(
        !text.contains("upgrade") && text.contains("damage"),
        "{text}"
    );
}

#[test]
fn an_index_file_with_an_unknown_envelope_scheme_is_damage_and_repair_index_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let (first, second) = two_snapshots(dir.path(), &cli);
    let index_dir = cli.path.join("index");
    let victim = fs::read_dir(&index_dir).unwrap().next().unwrap().unwrap();
    let name = victim.file_name().to_string_lossy().into_owned();
    flip_first_byte(&victim.path());

    let out = cli.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(14), "{}", output(&out));
    assert!(output(&out).contains(&name[..16]), "{}", output(&out));

    let out = cli.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", output(&out));
    let out = cli.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", output(&out));
    restores(&cli, dir.path(), &first, "one", b"first night");
    restores(&cli, dir.path(), &second, "two", b"second night");
}
