//! A long backup killed again and again (issue 17): with `--memory small`
//! (4 MiB packs, an index file every 8 packs) a 128 MiB stream crosses
//! several index files and index-cache commits. The same backup is
//! started and SIGKILLed at points spread over the run (after some packs,
//! right after an index file appears, when its cache commits), on the
//! same repository and the same cache, once with the cache deleted; after
//! every kill `check --read-data` (on that cache) finds no damage, and in
//! the end one run completes, stores little that was not stored before,
//! and restores byte-identical.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, CliRepo, pseudo_random, stderr};

fn count_files(dir: &Path, depth: usize) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if depth > 0 && e.path().is_dir() {
                count_files(&e.path(), depth - 1)
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                bytes_under(&e.path())
            } else {
                md.len()
            }
        })
        .sum()
}

/// When to kill a run: once the repository holds this many packs, or
/// this many index files, whichever comes first.
struct KillPoint {
    packs: usize,
    index_files: usize,
}

#[test]
fn a_small_memory_backup_killed_across_index_files_always_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("big.bin");
    fs::write(&data, pseudo_random(128 << 20, 17)).unwrap();
    let cli = CliRepo::init(dir.path());
    let repo = cli.path.clone();
    let cache = dir.path().join("cache");
    let fifo = dir.path().join("hold");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let kura = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("-r")
            .arg(&repo)
            .args(args)
            .env_remove("KURA_PASSWORD_FILE")
            .env_remove("KURA_PASSWORD_COMMAND")
            .envs(cli.env())
            .env("KURA_MEMORY", "small");
        cmd
    };
    let stream = |hold: bool| {
        let cat = format!("cat {}", data.display());
        let held = format!("{cat}; cat {} >/dev/null", fifo.display());
        format!("big.bin={}", if hold { held } else { cat })
    };
    let points = [
        KillPoint {
            packs: 3,
            index_files: usize::MAX,
        },
        KillPoint {
            packs: usize::MAX,
            index_files: 1,
        },
        KillPoint {
            packs: 14,
            index_files: usize::MAX,
        },
        KillPoint {
            packs: usize::MAX,
            index_files: 3,
        },
        KillPoint {
            packs: 25,
            index_files: usize::MAX,
        },
    ];
    for (i, point) in points.iter().enumerate() {
        if i == 3 {
            fs::remove_dir_all(&cache).unwrap(); // a lost cache, once
        }
        let mut child = kura(&["backup", "--quiet", "--stdin-from-command", &stream(true)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let packs = count_files(&repo.join("data"), 1);
            let index = count_files(&repo.join("index"), 0);
            if packs >= point.packs || index >= point.index_files {
                break;
            }
            // The stream never ends while held: the run can only stall.
            assert!(
                child.try_wait().unwrap().is_none(),
                "kill point {i}: the backup ended"
            );
            assert!(Instant::now() < deadline, "kill point {i} never reached");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        assert!(!child.wait().unwrap().success());
        release(&fifo);
        let out = kura(&["--json", "check", "--read-data"]).output().unwrap();
        assert!(out.status.success(), "kill point {i}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["damage"],
            serde_json::json!([]),
            "kill point {i}: {report}"
        );
    }
    let before = bytes_under(&repo.join("data"));
    let out = kura(&["--json", "backup", "--stdin-from-command", &stream(false)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let added = bytes_under(&repo.join("data")) - before;
    assert!(added < 64 << 20, "the last run stored {added} bytes again");
    assert!(
        count_files(&repo.join("index"), 0) >= 4,
        "several index files"
    );
    let out = kura(&["check", "--read-data"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dumped = kura(&["dump", "latest", "big.bin"]).output().unwrap();
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    assert!(
        dumped.stdout == fs::read(&data).unwrap(),
        "restores byte-identical"
    );
}

/// Lets a held stream command end: it reads EOF once a writer has come
/// and gone (polled: the reader may not have opened the FIFO yet, or may
/// be gone with the killed run).
fn release(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..200 {
        let writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo);
        if writer.is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
