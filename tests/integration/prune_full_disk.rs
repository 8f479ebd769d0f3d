//! Prune on a full repository disk (format-spec/12, "Prune (one run)"):
//! the packs of ripe records are deleted before any write, so a run on a
//! full disk frees space; a run that has nothing ripe and cannot write
//! says so and what to do, and loses nothing. The repository lives on a
//! small tmpfs (the test SKIPs visibly where mounting is not permitted).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{FAST_KDF, kura_env, pseudo_random, skip, stderr};

/// A tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then(|| Self(at.to_owned()))
    }

    fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() * s.fragment_size()
    }

    /// Fills it until a write fails (a file `name`).
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = fs::File::create(self.0.join(name)).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        assert!(self.free_bytes() < 4096, "the disk is full");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Runs kura on `repo` with its cache in `cache` (off the full disk), at
/// `now` (Unix seconds) when given.
fn run(repo: &Path, cache: &Path, now: Option<u64>, args: &[&str]) -> Output {
    let now = now.map(|t| format!("@{t}"));
    let mut env = vec![
        ("KURA_PASSWORD", OsStr::new("pw")),
        ("KURA_CACHE_DIR", cache.as_os_str()),
    ];
    if let Some(now) = &now {
        env.push(("KURA_NOW", OsStr::new(now)));
    }
    kura_env(repo, &env, args)
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

const T0: u64 = 1_796_353_200;
const HOUR: u64 = 3600;
const PRUNE: [&str; 4] = ["--json", "prune", "--max-unused", "100%"];

#[test]
fn prune_frees_a_full_repository_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        skip(
            "prune_frees_a_full_repository_disk",
            "cannot mount a tmpfs here",
        );
        return;
    };
    let (repo, cache) = (disk.0.join("repo"), dir.path().join("cache"));
    ok(run(
        &repo,
        &cache,
        Some(T0 - 4 * HOUR),
        &[&["init"][..], &FAST_KDF].concat(),
    ));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Every step runs at a fixed time: snapshots dated by the real clock
    // would be in the future of `T0` once the real date passes it (then
    // retention keeps them all, and there is nothing to prune).
    for seed in 1..=3 {
        fs::write(src.join("data"), pseudo_random(1 << 20, seed)).unwrap();
        ok(run(
            &repo,
            &cache,
            Some(T0 - (4 - seed) * HOUR),
            &["backup", "-q", src.to_str().unwrap()],
        ));
    }
    ok(run(
        &repo,
        &cache,
        Some(T0),
        &["forget", "--keep-last", "1"],
    ));
    ok(run(&repo, &cache, Some(T0), &PRUNE));

    // Full, and nothing ripe: the run that would condemn cannot write its
    // record; it says so and what to do, and loses nothing.
    disk.fill("filler-1");
    let out = run(&repo, &cache, Some(T0 + 2 * HOUR), &PRUNE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("storage is full") && err.contains("no condemned pack was ripe"),
        "{err}"
    );
    ok(run(&repo, &cache, None, &["check", "--read-data"]));

    // Room made as the message says; the run condemns the forgotten data.
    fs::remove_file(disk.0.join("filler-1")).unwrap();
    ok(run(&repo, &cache, Some(T0 + 2 * HOUR), &PRUNE));

    // Full again: past the grace, the ripe packs go before any write.
    disk.fill("filler-2");
    let report = ok(run(&repo, &cache, Some(T0 + 4 * HOUR), &PRUNE));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let freed = report["freed_bytes"].as_u64().unwrap();
    assert!(freed >= 1 << 20, "a forgotten snapshot's data: {report}");
    assert!(disk.free_bytes() >= freed - (64 << 10), "{report}");
    ok(run(&repo, &cache, None, &["check", "--read-data"]));
    let dumped = run(
        &repo,
        &cache,
        None,
        &["dump", "latest", &format!("{}/data", src.display())],
    );
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    assert!(
        dumped.stdout == pseudo_random(1 << 20, 3),
        "the kept snapshot is whole"
    );
}
