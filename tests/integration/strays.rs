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
    // check names each stray, and they are no damage (exit 0).
    let out = cli.run(&["check"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for stray in ["snapshots/notanid", "(conflicted copy)", "data/9b/README"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("stray: ") && l.contains(stray)),
            "{stray}: {text}"
        );
    }
    let out = cli.run(&["--json", "check"]);
    assert_ok(&out);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"strays\"") && json.contains("data/9b/README"),
        "{json}"
    );
    assert_ok(&cli.run(&["prune"]));
}

/// Replaces the file at `path` by a FIFO.
fn fifo_at(path: &std::path::Path) {
    fs::remove_file(path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Runs kura on `cli` and fails the test if it has not ended within 60 s
/// (a read that blocks on a FIFO would never end): a bound on a hang, not
/// a measurement.
fn run_bounded(cli: &CliRepo, args: &[&str]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::common::BIN)
        .arg("-r")
        .arg(&cli.path)
        .args(args)
        .env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .env_remove("KURA_NOW")
        .envs(cli.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..6000 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    panic!("kura {args:?} hung on a non-regular file");
}

#[test]
fn a_fifo_at_an_object_name_is_damage_to_that_object_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    for (src, text) in [(&one, b"first night"), (&two, b"other night")] {
        fs::create_dir_all(src).unwrap();
        fs::write(src.join("f"), text).unwrap();
    }
    let first = backup(&cli, &one);
    let second = backup(&cli, &two);

    // A FIFO at the first snapshot's name: that snapshot is damaged, the
    // other lists and restores, and check names it (exit 14).
    fifo_at(&cli.path.join(format!("snapshots/{first}")));
    let out = run_bounded(&cli, &["snapshots"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&second[..8]));
    let target = dir.path().join("out");
    assert_ok(&run_bounded(
        &cli,
        &["restore", &second, "--target", target.to_str().unwrap()],
    ));
    let restored = target.join(two.strip_prefix("/").unwrap()).join("f");
    assert_eq!(fs::read(restored).unwrap(), b"other night");
    let out = run_bounded(&cli, &["check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&first[..16])
            || String::from_utf8_lossy(&out.stdout).contains(&first[..16])
    );

    // FIFOs at every pack's name: a restore fails (it never blocks) and
    // names what it could not read; check calls it damage.
    for entry in walkdir(&cli.path.join("data")) {
        fifo_at(&entry);
    }
    let target = dir.path().join("out2");
    let out = run_bounded(
        &cli,
        &["restore", &second, "--target", target.to_str().unwrap()],
    );
    assert!(!out.status.success(), "a restore from FIFOs succeeded");
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let out = run_bounded(&cli, &["check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
}

/// The files under `dir`, recursively.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A directory at a snapshot's name is damage to that snapshot, named by
/// `check` (exit 14); it never makes the snapshot vanish silently.
#[test]
fn a_directory_at_a_snapshot_name_is_damage_to_that_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    let first = backup(&cli, &src);
    fs::write(src.join("a"), b"second").unwrap();
    let second = backup(&cli, &src);
    let object = cli.path.join("snapshots").join(&second);
    fs::remove_file(&object).unwrap();
    fs::create_dir(&object).unwrap();
    fs::write(object.join("inside"), b"x").unwrap();

    let out = cli.run(&["snapshots"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&first[..8]));
    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("snapshot {second}")), "{text}");
    let target = dir.path().join("out");
    assert_ok(&cli.run(&["restore", &first, "--target", target.to_str().unwrap()]));
}
