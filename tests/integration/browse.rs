//! Browsing snapshots through the `kura` binary: diff, find, dump of a
//! directory as tar, and the snapshot filters.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{BIN, FAST_KDF, kura_env, stderr};
use crate::common::{describe_seconds, pseudo_random, text_like};

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
fn diff_lists_each_kind_of_change() {
    let r = TestRepo::new();
    let src = r.path("src");
    write(&src.join("keep.txt"), &text_like(5_000, 1));
    write(&src.join("sub/deep.txt"), &text_like(5_000, 2));
    write(&src.join("remove.txt"), &pseudo_random(700, 3));
    write(&src.join("change.txt"), &pseudo_random(2_000, 4));
    write(&src.join("chmod.txt"), &pseudo_random(100, 5));
    write(&src.join("link.txt"), &pseudo_random(300, 6));
    let old = r.backup(&[&src], &[]);

    write(&src.join("new.txt"), &pseudo_random(1_000, 7));
    write(&src.join("newdir/inner.txt"), &pseudo_random(500, 8));
    fs::remove_file(src.join("remove.txt")).unwrap();
    write(&src.join("change.txt"), &pseudo_random(3_000, 9));
    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("link.txt")).unwrap();
    symlink("keep.txt", src.join("link.txt")).unwrap();
    r.backup(&[&src], &[]);

    let report = r.json(&["diff", &old[..8], "latest"]);
    let s = src.to_str().unwrap();
    let mut below = BTreeSet::new();
    for c in report["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap();
        let marker = c["marker"].as_str().unwrap();
        if let Some(rel) = path.strip_prefix(&format!("{s}/")) {
            below.insert(format!("{marker} {rel}"));
        } else {
            // The backed-up directory and its ancestors: only their own
            // metadata (mtime) may differ.
            assert!(
                marker == "U" && src.starts_with(path),
                "unexpected change {marker} {path}"
            );
        }
    }
    let expected: BTreeSet<String> = [
        "+ new.txt",
        "+ newdir",
        "+ newdir/inner.txt",
        "- remove.txt",
        "M change.txt",
        "U chmod.txt",
        "T link.txt",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(below, expected);
    assert_eq!(report["added"], 3);
    assert_eq!(report["removed"], 1);
    assert_eq!(report["changed"], 1);
    assert_eq!(report["type_changed"], 1);
    // Small files are one chunk each: new.txt, inner.txt and the new
    // change.txt were added; remove.txt, the old change.txt and the file
    // that link.txt was went away.
    assert_eq!(report["bytes_added"], 1_000 + 500 + 3_000);
    assert_eq!(report["bytes_removed"], 700 + 2_000 + 300);

    let text = String::from_utf8(r.run(&["diff", &old, "latest"]).stdout).unwrap();
    for line in [
        format!("+ {s}/newdir/inner.txt"),
        format!("- {s}/remove.txt"),
        format!("M {s}/change.txt"),
        format!("U {s}/chmod.txt"),
        format!("T {s}/link.txt"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(
        !text.contains("keep.txt") && !text.contains("deep.txt"),
        "{text}"
    );
    assert!(text.lines().last().unwrap().contains("3 added, 1 removed"));

    let same = r.json(&["diff", "latest", "latest"]);
    assert_eq!(same["changes"].as_array().unwrap().len(), 0, "{same}");
    assert_eq!(same["added"], 0);
    assert_eq!(same["metadata_only"], 0);
    let missing = r.raw(&["diff", "ffffffff", "latest"]);
    assert_eq!(missing.status.code(), Some(10), "{}", stderr(&missing));
}

#[test]
fn find_lists_matches_per_snapshot() {
    let r = TestRepo::new();
    let src = r.path("src");
    write(&src.join("report.txt"), &text_like(100, 1));
    write(&src.join("sub/a.log"), b"log");
    write(&src.join("sub/deeper/b.log"), b"log");
    write(&src.join("top.log"), b"log");
    let first = r.backup(&[&src], &["--host", "one"]);
    write(&src.join("report.txt"), &text_like(250, 2));
    let second = r.backup(&[&src], &["--host", "two"]);
    fs::remove_file(src.join("report.txt")).unwrap();
    let third = r.backup(&[&src], &["--host", "one"]);

    let found = r.json(&["find", "report.txt"]);
    let rows: Vec<(String, u64)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["path"], format!("{}/report.txt", src.display()));
            assert_eq!(m["type"], "file");
            (
                m["snapshot"].as_str().unwrap().to_owned(),
                m["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, vec![(first.clone(), 100), (second.clone(), 250)]);

    // A path glob matches the whole path, at any depth when relative.
    let logs = r.json(&["find", "*/sub/*.log"]);
    let paths: BTreeSet<(String, String)> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["snapshot"].as_str().unwrap().to_owned(),
                m["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let a_log = format!("{}/sub/a.log", src.display());
    let expected: BTreeSet<_> = [&first, &second, &third]
        .iter()
        .map(|id| ((*id).clone(), a_log.clone()))
        .collect();
    assert_eq!(paths, expected);

    // Snapshot selection: by id and by host.
    let only = r.json(&["find", "report.txt", "--snapshot", &second[..10]]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["size"], 250);
    let host = r.json(&["find", "*.txt", "--host", "one"]);
    let hosts: Vec<&str> = host
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, vec![first.as_str()]);
    // The text form names the snapshot, the type and the size.
    let text = String::from_utf8(r.run(&["find", "report.txt"]).stdout).unwrap();
    let line = text.lines().nth(1).unwrap();
    assert!(
        line.starts_with(&second[..16]) && line.contains(" file ") && line.contains(" 250 "),
        "{text}"
    );
}

#[test]
fn find_walks_a_shared_subtree_once() {
    use kura::backend::{Backend, LocalBackend};
    use kura::chunkstore::index::ChunkIndex;
    use kura::chunkstore::{ChunkStore, ChunkStoreOptions};
    use kura::ops::find::{FindOptions, find};
    use std::sync::Arc;

    let r = TestRepo::new();
    let src = r.path("src");
    for i in 0..20 {
        write(&src.join(format!("shared/d{i}/f.txt")), b"same");
    }
    write(&src.join("changing.txt"), b"1");
    r.backup(&[&src], &[]);
    write(&src.join("changing.txt"), b"22");
    r.backup(&[&src], &[]);

    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(r.repo.clone()));
    let repo = kura::repository::Repository::open(backend, b"pw").unwrap();
    let index = ChunkIndex::open(None).unwrap();
    index.sync(&repo).unwrap();
    let store = ChunkStore::new(&repo, &index, ChunkStoreOptions::default());
    let snapshots = kura::repository::snapshots::list(&repo).unwrap();
    let options = FindOptions {
        patterns: vec!["f.txt".into()],
    };
    let report = find(&store, &snapshots, &options).unwrap();
    assert_eq!(report.matches.len(), 40);
    // The first snapshot loads the trees on the way to src, src, `shared`
    // and its 20 subdirectories; the second only the way to src again
    // (changing.txt moved every tree id there): `shared` is memoized.
    let way = src.components().count() as u64; // root tree included
    assert_eq!(report.trees_loaded, 2 * way + 21);
    assert_eq!(report.trees_reused, 1);
}

const LONG_NAME: &str = "a-name-longer-than-the-hundred-bytes-of-a-ustar-name-field-so-it-needs-a-pax-path-record-to-survive.txt";

fn make_tar_tree(src: &Path) {
    write(&src.join("top.txt"), &text_like(40_000, 1));
    write(&src.join("a/b/c/deep.bin"), &pseudo_random(300_000, 2));
    write(&src.join("a/b").join(LONG_NAME), b"long name");
    write(
        &src.join(OsStr::from_bytes(b"a/caf\xe9.txt")),
        b"latin-1 name",
    );
    fs::set_permissions(src.join("top.txt"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o2750)).unwrap();
    symlink("../top.txt", src.join("a/link")).unwrap();
    fs::hard_link(src.join("a/b/c/deep.bin"), src.join("a/hard.bin")).unwrap();
    nix::unistd::mkfifo(
        &src.join("a/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    sparse
        .write_all_at(&pseudo_random(50_000, 3), 3 << 20)
        .unwrap();
    xattr::set(src.join("top.txt"), "user.kura-test", b"xattr value").unwrap();
    // Directory times last: creating entries moves them.
    for (dir, secs) in [("a/b/c", 1_600_000_000), ("a", 1_500_000_000)] {
        let t = nix::sys::time::TimeSpec::new(secs, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join(dir),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

#[test]
fn dump_of_a_directory_is_a_tar_stream() {
    let r = TestRepo::new();
    let src = r.path("src");
    make_tar_tree(&src);
    r.backup(&[&src], &[]);
    let s = src.to_str().unwrap();
    let dump = r.run(&["dump", "latest", s]);
    let tar_file = r.path("x.tar");
    fs::write(&tar_file, &dump.stdout).unwrap();

    // GNU tar extracts it with everything.
    let out = r.path("out");
    fs::create_dir(&out).unwrap();
    let gnu = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tar_file)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(gnu.status.success(), "{}", stderr(&gnu));
    assert!(gnu.stderr.is_empty(), "{}", stderr(&gnu));
    let extracted = out.join(src.strip_prefix("/").unwrap());
    // tar keeps whole seconds of mtime.
    let (want, got) = (describe_seconds(&src), describe_seconds(&extracted));
    assert_eq!(got, want);
    assert!(want[Path::new("a/hard.bin")].contains("linked-with"));
    assert!(want[Path::new("top.txt")].contains("xattr user.kura-test=xattr value"));
    assert!(want.contains_key(Path::new(OsStr::from_bytes(b"a/caf\xe9.txt"))));
    assert_eq!(
        fs::metadata(extracted.join("a/hard.bin")).unwrap().ino(),
        fs::metadata(extracted.join("a/b/c/deep.bin"))
            .unwrap()
            .ino()
    );

    // The tar crate reads the same stream: pax paths, links and xattrs.
    let rel = s.trim_start_matches('/');
    let mut seen = BTreeMap::new();
    let mut archive = tar::Archive::new(&dump.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let link = entry.link_name_bytes().map(std::borrow::Cow::into_owned);
        let mut xattr = None;
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for e in exts {
                let e = e.unwrap();
                if e.key_bytes() == b"SCHILY.xattr.user.kura-test" {
                    xattr = Some(e.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        seen.insert(path, (kind, link, xattr, data));
    }
    let key = |p: &[u8]| [rel.as_bytes(), b"/", p].concat();
    let (kind, _, _, data) = &seen[&key(b"sparse.img")];
    assert!(kind.is_file());
    assert_eq!(data, &fs::read(src.join("sparse.img")).unwrap());
    let long = key(format!("a/b/{LONG_NAME}").as_bytes());
    assert!(long.len() > 100);
    assert_eq!(seen[&long].3, b"long name");
    assert_eq!(seen[&key(b"a/caf\xe9.txt")].3, b"latin-1 name");
    let (kind, link, _, _) = &seen[&key(b"a/hard.bin")];
    assert!(kind.is_hard_link());
    assert_eq!(link.as_deref(), Some(&key(b"a/b/c/deep.bin")[..]));
    let (kind, link, _, _) = &seen[&key(b"a/link")];
    assert!(kind.is_symlink());
    assert_eq!(link.as_deref(), Some(&b"../top.txt"[..]));
    assert_eq!(
        seen[&key(b"top.txt")].2.as_deref(),
        Some(&b"xattr value"[..])
    );
    assert!(seen[&key(b"a/fifo")].0.is_fifo());
    assert!(seen.contains_key(&key(b"a/b/c/")));
    assert!(seen.keys().all(|p| !p.starts_with(b"/")));

    // The whole snapshot: the same entries below the root's directories.
    let whole = r.run(&["dump", "latest", "/"]);
    let mut archive = tar::Archive::new(&whole.stdout[..]);
    let names: BTreeSet<Vec<u8>> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    let top = format!("{}/", rel.split('/').next().unwrap());
    assert!(names.contains(top.as_bytes()), "{top} missing");
    assert!(seen.keys().all(|p| names.contains(p)));

    // A reader that stops early is not an error.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {BIN} -r {} dump latest {s} | head -c 10 >/dev/null",
            r.repo.display()
        ))
        .env("KURA_PASSWORD", "pw")
        .env("KURA_CACHE_DIR", &r.cache)
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(stderr(&piped).is_empty(), "{}", stderr(&piped));
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

#[test]
fn hostile_names_print_escaped_in_text_and_exactly_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let r = crate::common::CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // A name that retitles an xterm, and two that lossy UTF-8 would print
    // the same (both as U+FFFD).
    let names: [&[u8]; 3] = [b"a\x1b]0;pwned\x07b", b"\xff", b"\xfe"];
    for name in names {
        fs::write(src.join(OsStr::from_bytes(name)), b"x").unwrap();
    }
    assert!(
        r.run(&["backup", "-q", src.to_str().unwrap()])
            .status
            .success()
    );

    let out = r.run(&["ls", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "raw escape in ls output");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("a\\x1b]0;pwned\\x07b"), "{text}");
    assert!(
        text.contains("/\\xff\n") && text.contains("/\\xfe\n"),
        "{text}"
    );

    let out = r.run(&["--json", "ls", "latest"]);
    let hex: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path_hex"].as_str().map(str::to_owned)
        })
        .collect();
    let want: BTreeSet<String> = [b"\xff", b"\xfe"]
        .iter()
        .map(|n| hex::encode([src.as_os_str().as_bytes(), b"/", &n[..]].concat()))
        .collect();
    assert_eq!(hex, want);

    let out = r.run(&["find", "*pwned*"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "raw escape in find output");
    assert!(String::from_utf8_lossy(&out.stdout).contains("a\\x1b]0;pwned"));
}

/// The exact bytes of each `path`/`path_hex` pair in a JSON listing.
fn exact_names<'a>(rows: impl Iterator<Item = &'a serde_json::Value>) -> BTreeSet<Vec<u8>> {
    rows.map(|row| {
        let path = row["path"].as_str().expect("path is always a string");
        match row["path_hex"].as_str() {
            Some(h) => hex::decode(h).unwrap(),
            None => path.as_bytes().to_vec(),
        }
    })
    .collect()
}

#[test]
fn find_and_diff_give_names_exactly_in_json_and_escaped_in_text() {
    let r = TestRepo::new();
    let src = r.path("src");
    // Two names lossy UTF-8 prints the same, and one that recolours a
    // terminal.
    let names: [&[u8]; 3] = [b"\xff", b"\xfe", b"esc\x1b[31mred"];
    write(&src.join("plain"), b"x");
    let old = r.backup(&[&src], &[]);
    for name in names {
        write(&src.join(OsStr::from_bytes(name)), b"x");
    }
    r.backup(&[&src], &[]);
    let want: BTreeSet<Vec<u8>> = names
        .iter()
        .map(|n| [src.as_os_str().as_bytes(), b"/", n].concat())
        .collect();

    // What is below src, but for the file both snapshots have.
    let below_src = |names: BTreeSet<Vec<u8>>| -> BTreeSet<Vec<u8>> {
        let prefix = [src.as_os_str().as_bytes(), b"/"].concat();
        names
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(b"/plain"))
            .collect()
    };
    let found = r.json(&["find", "*"]);
    let got = below_src(exact_names(found.as_array().unwrap().iter()));
    assert_eq!(got, want, "{found}");

    let report = r.json(&["diff", &old[..8], "latest"]);
    let got = below_src(exact_names(report["changes"].as_array().unwrap().iter()));
    assert_eq!(got, want, "{report}");

    for args in [&["find", "*"][..], &["diff", &old[..8], "latest"]] {
        let out = r.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!out.stdout.contains(&0x1b), "raw escape in {args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for escaped in ["/\\xff", "/\\xfe", "/esc\\x1b[31mred"] {
            assert!(text.contains(escaped), "{args:?}: {text}");
        }
    }
}
