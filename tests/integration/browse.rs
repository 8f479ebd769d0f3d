//! Browsing snapshots through the `kura` binary: the snapshot filters.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::cli::{FAST_KDF, kura_env, stderr};

/// A repository made with the binary, with its own index cache.
struct TestRepo {
    dir: tempfile::TempDir,
    repo: PathBuf,
    cache: PathBuf,
}

impl TestRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let r = Self { dir, repo, cache };
        r.run(&[&["init"][..], &FAST_KDF].concat());
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn raw(&self, args: &[&str]) -> Output {
        let env = [
            ("KURA_PASSWORD", OsStr::new("pw")),
            ("KURA_CACHE_DIR", self.cache.as_os_str()),
        ];
        kura_env(&self.repo, &env, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.raw(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[&["--json"][..], args].concat());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Backs up `paths` and returns the new snapshot's id.
    fn backup(&self, paths: &[&Path], extra: &[&str]) -> String {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        args.extend(paths.iter().map(|p| p.to_str().unwrap()));
        self.json(&args)["snapshot"].as_str().unwrap().to_owned()
    }
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

#[test]
fn snapshots_filter_by_host_tag_and_path() {
    let r = TestRepo::new();
    let (www, db) = (r.path("www"), r.path("db"));
    write(&www.join("index.html"), b"hi");
    write(&db.join("dump.sql"), b"--");
    let s1 = r.backup(&[&www], &["--host", "web", "--tag", "daily"]);
    let s2 = r.backup(
        &[&www, &db],
        &["--host", "db", "--tag", "daily", "--tag", "weekly"],
    );
    let s3 = r.backup(&[&db], &["--host", "web", "--tag", "weekly"]);
    let ids = |args: &[&str]| -> Vec<String> {
        r.json(&[&["snapshots"][..], args].concat())
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let www_s = www.to_str().unwrap();
    let db_slash = format!("{}/", db.display());
    assert_eq!(ids(&[]), [s1.as_str(), s2.as_str(), s3.as_str()]);
    assert_eq!(ids(&["--host", "web"]), [s1.as_str(), s3.as_str()]);
    assert_eq!(ids(&["--tag", "daily"]), [s1.as_str(), s2.as_str()]);
    assert_eq!(ids(&["--tag", "daily", "--tag", "weekly"]), [s2.as_str()]);
    assert_eq!(ids(&["--path", www_s]), [s1.as_str(), s2.as_str()]);
    assert_eq!(ids(&["--path", &db_slash, "--path", www_s]), [s2.as_str()]);
    assert_eq!(ids(&["--host", "web", "--path", &db_slash]), [s3.as_str()]);
    assert!(ids(&["--host", "nobody"]).is_empty());
    // The text listing is filtered too.
    let text = String::from_utf8(r.run(&["snapshots", "--tag", "weekly"]).stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains(&s1[..16]), "{text}");
}
