//! Stray files in a repository (a README under `data/`, a sync tool's
//! conflicted copy under `snapshots/`) are ignored by every listing: the
//! commands keep working and unrelated snapshots restore byte-identical.

use std::fs;

use crate::check::backup;
use crate::common::{CliRepo, stderr};

fn assert_ok(out: &std::process::Output) {
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(out));
}

#[test]
fn stray_names_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"hello strays").unwrap();
    let id = backup(&cli, &src);
    fs::write(cli.path.join("snapshots/notanid"), b"hi").unwrap();
    fs::write(
        cli.path.join(format!("snapshots/{id} (conflicted copy)")),
        b"x",
    )
    .unwrap();
    fs::create_dir_all(cli.path.join("data/9b")).unwrap();
    fs::write(cli.path.join("data/9b/README"), b"hi").unwrap();
    assert_ok(&cli.run(&["snapshots"]));
    let target = dir.path().join("out");
    assert_ok(&cli.run(&["restore", &id, "--target", target.to_str().unwrap()]));
    let restored = target.join(src.strip_prefix("/").unwrap()).join("a");
    assert_eq!(fs::read(restored).unwrap(), b"hello strays");
    assert_ok(&cli.run(&["backup", src.to_str().unwrap()]));
    assert_ok(&cli.run(&["check"]));
    assert_ok(&cli.run(&["prune"]));
}
