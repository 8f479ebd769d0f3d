//! The `kura` binary: set-up commands, password sources and exit codes.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{BIN, FAST_KDF, init, kura, kura_env, skip, stderr};

/// Runs a key command that asks for a new password.
fn with_new_password(repo: &Path, password: &str, new: &str, args: &[&str]) -> Output {
    let env = [
        ("KURA_PASSWORD", OsStr::new(password)),
        ("KURA_NEW_PASSWORD", OsStr::new(new)),
    ];
    kura_env(repo, &env, &[args, &FAST_KDF].concat())
}

#[test]
fn init_then_config_show() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let out = kura(&repo, Some("pw"), &["--json", "config", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["config"]["chunker"]["algorithm"], "fastcdc-v2020");
    assert_eq!(v["config"]["chunker"]["avg"], 32768);
    // init again refuses.
    let again = kura(&repo, Some("pw"), &[&["init"][..], &FAST_KDF].concat());
    assert_eq!(again.status.code(), Some(16), "{}", stderr(&again));
}

#[test]
fn wrong_password_and_missing_repository_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let out = kura(&repo, Some("nope"), &["config", "show"]);
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    // An empty KURA_PASSWORD is a set-up mistake, not a wrong password.
    let out = kura(&repo, Some(""), &["config", "show"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let out = kura(&dir.path().join("absent"), Some("pw"), &["config", "show"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("no kura repository"));
    // No password source and no terminal: a clear error, not a hang.
    let out = kura(&repo, None, &["config", "show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no password given"));
}

#[test]
fn password_file_and_command_work() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let file = dir.path().join("pw.txt");
    std::fs::write(&file, "pw\n").unwrap();
    let out = kura_env(
        &repo,
        &[("KURA_PASSWORD_FILE", file.as_os_str())],
        &["config", "show"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kura(
        &repo,
        None,
        &["--password-command", "echo pw", "config", "show"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn unsupported_repository_is_refused_before_asking_for_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let config = repo.join("config");
    let mut bytes = std::fs::read(&config).unwrap();
    bytes[12] |= 0x01; // an unknown mandatory feature
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, &bytes).unwrap();
    let out = kura(&repo, None, &["config", "show"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(stderr(&out).contains("not supported"));
}

#[test]
fn planted_key_slot_with_weak_kdf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    for entry in std::fs::read_dir(repo.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[44..48].copy_from_slice(&8u32.to_le_bytes());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let out = kura(&repo, Some("pw"), &["config", "show"]);
    assert_eq!(out.status.code(), Some(15), "{}", stderr(&out));
    assert!(stderr(&out).contains("outside the accepted range"));
}

#[test]
fn key_add_list_remove_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let add = with_new_password(&repo, "pw", "second", &["key", "add"]);
    assert!(add.status.success(), "{}", stderr(&add));
    let list = kura(&repo, Some("second"), &["--json", "key", "list"]);
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let other = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Removing the slot in use is refused; removing the other works.
    let current = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = kura(&repo, Some("second"), &["key", "remove", &current[..12]]);
    assert!(!out.status.success());
    let out = kura(&repo, Some("second"), &["key", "remove", &other[..12]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        kura(&repo, Some("pw"), &["config", "show"]).status.code(),
        Some(12)
    );
    let passwd = with_new_password(&repo, "second", "third", &["key", "passwd"]);
    assert!(passwd.status.success(), "{}", stderr(&passwd));
    assert_eq!(
        kura(&repo, Some("second"), &["config", "show"])
            .status
            .code(),
        Some(12)
    );
    assert!(
        kura(&repo, Some("third"), &["config", "show"])
            .status
            .success()
    );
}

#[test]
fn backup_snapshots_restore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let src = dir.path().join("site");
    std::fs::create_dir_all(src.join("db")).unwrap();
    std::fs::write(
        src.join("db/site.sql"),
        "COPY posts FROM stdin;\n1\thello\n\\.\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        let env = [
            ("KURA_PASSWORD", OsStr::new("pw")),
            ("KURA_CACHE_DIR", cache.as_os_str()),
        ];
        let out = kura_env(&repo, &env, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let src_str = src.to_str().unwrap();
    run(&["backup", "--tag", "nightly", src_str]);
    let out = run(&["--json", "backup", src_str]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["files_unchanged"], 1);
    let out = run(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["snapshot"]["tags"][0], "nightly");
    let target = dir.path().join("restored");
    run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target
        .join(src.strip_prefix("/").unwrap())
        .join("db/site.sql");
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(src.join("db/site.sql")).unwrap()
    );
    // A snapshot name that matches nothing is "not found".
    let out = kura(
        &repo,
        Some("pw"),
        &[
            "restore",
            "ffffffff",
            "--target",
            "/nonexistent-kura-target",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
}

#[test]
fn failing_dump_command_exits_non_zero_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let out = kura(
        &repo,
        Some("pw"),
        &[
            "backup",
            "--stdin-from-command",
            "db.sql=echo partial; echo 'no such database' >&2; exit 1",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no such database"),
        "{}",
        stderr(&out)
    );
    let out = kura(&repo, Some("pw"), &["--json", "snapshots"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let ok = kura(
        &repo,
        Some("pw"),
        &["backup", "--stdin-from-command", "db.sql=echo dump"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn dump_writes_a_file_to_stdout_and_ls_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let ok = kura(
        &repo,
        Some("pw"),
        &["backup", "--stdin-from-command", "db/site.sql=seq 1 200000"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let expected = Command::new("seq")
        .args(["1", "200000"])
        .output()
        .unwrap()
        .stdout;
    let out = kura(&repo, Some("pw"), &["dump", "latest", "db/site.sql"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, expected);
    // A reader that stops early is not an error.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {BIN} -r {} dump latest /db/site.sql | head -c 10 >/dev/null",
            repo.display()
        ))
        .env("KURA_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(stderr(&piped).is_empty(), "{}", stderr(&piped));
    let ls = kura(&repo, Some("pw"), &["ls", "latest"]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains("/db/site.sql") && listing.lines().count() == 2,
        "{listing}"
    );
    let ls = kura(&repo, Some("pw"), &["--json", "ls", "latest", "/db"]);
    let lines: Vec<serde_json::Value> = ls
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["path"], "/db/site.sql");
    assert_eq!(lines[1]["type"], "file");
    assert!(lines[1]["size"].as_u64().unwrap() > 0);
    let missing = kura(&repo, Some("pw"), &["dump", "latest", "db/other.sql"]);
    assert_eq!(missing.status.code(), Some(10));
}

#[test]
fn io_timeout_takes_seconds_or_a_duration_and_refuses_zero() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    for ok in ["30", "90s", "2min"] {
        let out = kura(&repo, Some("pw"), &["--io-timeout", ok, "snapshots"]);
        assert!(out.status.success(), "{ok}: {}", stderr(&out));
    }
    for bad in ["0", "soon", "1h30"] {
        let out = kura(&repo, Some("pw"), &["--io-timeout", bad, "snapshots"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--io-timeout"), "{}", stderr(&out));
    }
}

#[test]
fn restore_at_a_far_date_takes_the_newest_and_an_impossible_date_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = crate::common::CliRepo::init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"night one").unwrap();
    let run = |args: &[&str]| r.run(args);
    assert!(
        run(&["backup", "-q", src.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::write(src.join("f"), b"night two").unwrap();
    assert!(
        run(&["backup", "-q", src.to_str().unwrap()])
            .status
            .success()
    );
    // Past 2262-04-11 nanoseconds since the epoch overflow: the date is
    // clamped, so it is after every snapshot (it once wrapped to before).
    let target = dir.path().join("t");
    let out = run(&[
        "restore",
        "--at",
        "9999-12-31",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").unwrap()).join("f");
    assert_eq!(std::fs::read(restored).unwrap(), b"night two");
    for impossible in ["2027-02-31", "2026-04-31", "0000-01-01"] {
        let out = run(&[
            "restore",
            "--at",
            impossible,
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{impossible}: {}", stderr(&out));
        assert!(stderr(&out).contains("not a time"), "{}", stderr(&out));
    }
}

#[test]
fn an_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = kura(
        &file.join("repo"),
        Some("pw"),
        &[&["init"][..], &FAST_KDF].concat(),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("(os error 20)").count(), 1, "{err}");
}

#[test]
fn a_restore_target_that_is_a_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = crate::common::CliRepo::init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    assert!(
        r.run(&["backup", "-q", src.to_str().unwrap()])
            .status
            .success()
    );
    let target = dir.path().join("a-file");
    std::fs::write(&target, b"keep me").unwrap();
    let out = r.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn s3_set_up_mistakes_are_usage_errors_before_any_request() {
    // Neither case may send a request: the endpoint is refused as written,
    // and a missing region is said plainly (not opendal's builder error).
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("KURA_S3_REGION")
            .env_remove("KURA_S3_ENDPOINT")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("KURA_PASSWORD", "pw")
            .output()
            .unwrap()
    };
    let out = run(&[
        "-r",
        "s3://bucket/p",
        "--s3-region",
        "garage",
        "--s3-endpoint",
        "not a url",
        "snapshots",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an S3 endpoint"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "-r",
        "s3://bucket/p",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "snapshots",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no S3 region") && err.contains("--s3-region"),
        "{err}"
    );
    assert!(!err.contains("ConfigInvalid"), "library internals: {err}");
}

/// `kura completions bash` is a script bash accepts that completes every
/// command; `kura man --dir` writes a page per command that groff renders
/// without a warning (issue 15, item 8).
#[test]
fn completions_and_manual_pages_come_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("unused");
    let out = kura(&repo, None, &["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("kura.bash");
    fs::write(&script, &out.stdout).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["backup", "restore", "prune", "repair", "completions", "man"] {
        assert!(text.contains(command), "{command} not completed");
    }
    let bad = kura(&repo, None, &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let pages = dir.path().join("man");
    let out = kura(&repo, None, &["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "kura.1",
        "kura-backup.1",
        "kura-repair-index.1",
        "kura-key-add.1",
    ] {
        let path = pages.join(page);
        let roff = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.contains(".TH ") && roff.contains(".SH NAME"), "{page}");
        if Path::new("/usr/bin/groff").exists() {
            let shown = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(shown.stderr.is_empty(), "{page}: {}", stderr(&shown));
        } else {
            skip(
                "completions_and_manual_pages_come_from_the_commands (groff)",
                "no groff",
            );
        }
    }
}
