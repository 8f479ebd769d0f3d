//! `kura run` and `kura config check` (README, "The nightly job"): one
//! profile of a kura.toml runs hooks, the backup of every source, forget,
//! prune and check, and notifies; a failed dump fails the run with no
//! snapshot; one run of a profile at a time; the command line wins over
//! the profile; unknown keys are refused with where they are.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{BIN, CliRepo, stderr};

/// A repository, a site to back up and a kura.toml in a temporary
/// directory.
struct Site {
    dir: tempfile::TempDir,
    repo: CliRepo,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = CliRepo::init(dir.path());
        fs::create_dir_all(dir.path().join("www/media")).unwrap();
        fs::write(dir.path().join("www/index.php"), b"<?php echo 1;").unwrap();
        fs::write(dir.path().join("www/media/logo.png"), [7u8; 5000]).unwrap();
        Self { dir, repo }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes kura.toml: profile `site` with `extra` appended.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"[site]
repository = "{repo}"
host = "web1"
tags = ["nightly"]

[site.sources]
paths = ["{www}"]
commands = {{ "db/site.sql" = "printf 'CREATE TABLE t;'" }}
{extra}"#,
            repo = self.repo.path.display(),
            www = self.path("www").display(),
        );
        let file = self.path("kura.toml");
        fs::write(&file, text).unwrap();
        file
    }

    /// `kura ARGS` with the config file, the password and the cache in
    /// the environment (no `-r`: the profile names the repository).
    fn kura(&self, now: Option<&str>, args: &[&str]) -> Output {
        self.command(now, args).output().unwrap()
    }

    fn command(&self, now: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("KURA_REPOSITORY")
            .env_remove("KURA_PASSWORD_FILE")
            .env_remove("KURA_PASSWORD_COMMAND")
            .envs(self.repo.env())
            .env("KURA_CONFIG", self.path("kura.toml"));
        match now {
            Some(t) => cmd.env("KURA_NOW", t),
            None => cmd.env_remove("KURA_NOW"),
        };
        cmd
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.repo.run(&["--json", "snapshots"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

#[test]
fn a_profile_run_backs_up_forgets_prunes_checks_and_notifies() {
    let site = Site::new();
    let log = site.path("hooks.log");
    let notified = site.path("notified");
    site.config(&format!(
        r#"
[site.retention]
keep_last = 2

[site.prune]
grace = "1h"

[site.check]
read_data_subset = "100%"

[site.hooks]
before = ["echo before $KURA_PROFILE >> {log}"]
after = ["echo after >> {log}"]

[site.notify]
command = "(echo $KURA_RUN_STATUS; cat) > {notified}"
on_success = true
"#,
        log = log.display(),
        notified = notified.display()
    ));
    let nights = [
        "2026-12-01T03:00:00Z",
        "2026-12-02T03:00:00Z",
        "2026-12-03T03:00:00Z",
    ];
    let mut last = serde_json::Value::Null;
    for night in nights {
        let out = site.kura(Some(night), &["--json", "run"]);
        assert!(out.status.success(), "{}", stderr(&out));
        last = json(&out);
    }
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["exit_code"], 0);
    let steps: Vec<&str> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "before", "open", "backup", "forget", "prune", "check", "after"
        ]
    );
    assert!(
        last["steps"][3]["summary"]
            .as_str()
            .unwrap()
            .starts_with("1 snapshots removed")
    );
    // One snapshot per night, the oldest forgotten; the dump is in it.
    let snaps = site.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps.iter().all(|s| s["snapshot"]["hostname"] == "web1"));
    let dumped = site.repo.run(&["dump", "latest", "db/site.sql"]);
    assert_eq!(dumped.stdout, b"CREATE TABLE t;");
    let hooks = fs::read_to_string(&log).unwrap();
    assert_eq!(hooks.matches("before site").count(), 3, "{hooks}");
    assert_eq!(hooks.matches("after").count(), 3, "{hooks}");
    let note = fs::read_to_string(&notified).unwrap();
    assert!(note.starts_with("ok\nkura run [site]: ok"), "{note}");
    assert!(note.contains("backup") && note.contains("check"), "{note}");
}

#[test]
fn a_failed_dump_fails_the_run_with_no_snapshot_and_runs_on_failure() {
    let site = Site::new();
    let log = site.path("failure.log");
    let notified = site.path("notified");
    let file = site.config(&format!(
        r#"
[site.retention]
keep_last = 1

[site.hooks]
after = ["echo after >> {log}"]
on_failure = ["echo \"failed: $KURA_RUN_ERROR\" >> {log}"]

[site.notify]
command = "(echo $KURA_RUN_STATUS; cat) > {notified}"
"#,
        log = log.display(),
        notified = notified.display()
    ));
    let out = site.kura(None, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !notified.exists(),
        "no notification for success unless asked"
    );
    let broken = fs::read_to_string(&file).unwrap().replace(
        "printf 'CREATE TABLE t;'",
        "echo 'pg_dump: connection refused' >&2; exit 7",
    );
    fs::write(&file, broken).unwrap();
    let out = site.kura(None, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        site.snapshots().len(),
        1,
        "no snapshot, and nothing forgotten"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL") || text.contains("failed"), "{text}");
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("failed: ") && log.contains("connection refused"),
        "{log}"
    );
    assert_eq!(log.matches("after").count(), 1, "{log}");
    let note = fs::read_to_string(&notified).unwrap();
    assert!(note.starts_with("failed\n"), "{note}");
}

#[test]
fn a_second_run_of_a_profile_exits_11_while_one_runs() {
    let site = Site::new();
    let fifo = site.path("go");
    let started = site.path("started");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    site.config(&format!(
        "\n[site.hooks]\nbefore = [\"touch {} && cat {} > /dev/null\"]\n",
        started.display(),
        fifo.display()
    ));
    let mut first = site
        .command(None, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while !started.exists() {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        std::thread::yield_now();
    }
    let second = site.kura(None, &["run"]);
    assert_eq!(second.status.code(), Some(11), "{}", stderr(&second));
    assert!(stderr(&second).contains("another `kura run site` is running"));
    fs::write(&fifo, b"go").unwrap();
    assert!(first.wait().unwrap().success());
    assert_eq!(site.snapshots().len(), 1);
}

#[test]
fn the_command_line_wins_over_the_profile_and_a_put_only_key_only_backs_up() {
    let site = Site::new();
    site.config("\n[site.retention]\nkeep_last = 1\n");
    let other = CliRepo::init(&site.path("other"));
    let repo = other.path.to_str().unwrap();
    let out = site.kura(None, &["-r", repo, "run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        site.snapshots().len(),
        0,
        "the profile's repository untouched"
    );
    let listed = other.run(&["--json", "snapshots"]);
    assert_eq!(json(&listed).as_array().unwrap().len(), 1);

    let env = [
        ("KURA_PASSWORD", OsStr::new("pw")),
        ("KURA_NEW_PASSWORD", OsStr::new("put")),
    ];
    let add = crate::common::kura_env(
        &site.repo.path,
        &env,
        &[&["key", "add", "--put-only"][..], &crate::common::FAST_KDF].concat(),
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let out = site
        .command(None, &["--json", "run"])
        .env("KURA_PASSWORD", "put")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    let last = report["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["step"], "maintenance", "{report}");
    assert!(last["summary"].as_str().unwrap().contains("put-only"));
}

#[test]
fn config_check_shows_the_profile_masked_and_refuses_unknown_keys_with_where() {
    let site = Site::new();
    let file = site.config("\n[site.notify]\ncommand = \"mail -s secret-token root\"\n");
    let out = site.kura(None, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("profile [site] is valid"), "{text}");
    assert!(text.contains("pg") || text.contains("printf"), "{text}");
    assert!(!text.contains("secret-token"), "{text}");
    let typo = fs::read_to_string(&file)
        .unwrap()
        .replace("tags =", "tagz =");
    fs::write(&file, typo).unwrap();
    for args in [&["config", "check"][..], &["run"]] {
        let out = site.kura(None, args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("tagz") && err.contains("line 4"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
    let missing = site
        .command(None, &["run"])
        .env("KURA_CONFIG", Path::new("/nonexistent/kura.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(site.snapshots().len(), 0);
}

#[test]
fn the_readme_example_profile_is_valid_and_packaged() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## The nightly job").nth(1).unwrap();
    let block = section
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    // The packaged example is the README's, with a header.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = fs::read_to_string(root.join("packaging/kura.toml.example")).unwrap();
    assert!(
        example.ends_with(block),
        "packaging/kura.toml.example and the README differ"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kura.toml");
    fs::write(&file, block).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("profile [site] is valid"));
}

/// A one-thread HTTP server on 127.0.0.1 that answers 200 and records each
/// request line.
pub(crate) fn ping_server() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ping/abc123", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK");
            if tx.send(line.trim().to_owned()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn status_turns_red_when_a_night_is_missed_or_fails_and_metrics_and_pings_tell() {
    let site = Site::new();
    let (url, pings) = ping_server();
    let metrics = site.path("kura.prom");
    let file = site.config(&format!(
        "[site.check]\nmax_age = \"8d\"\n[site.notify]\nurl = \"{url}\"\n"
    ));
    // A key of [site] itself goes before its sub-tables.
    let text = fs::read_to_string(&file).unwrap().replacen(
        "tags = [\"nightly\"]\n",
        &format!(
            "tags = [\"nightly\"]\nmetrics_file = \"{}\"\n",
            metrics.display()
        ),
        1,
    );
    fs::write(&file, text).unwrap();
    let status = |now: &str| site.kura(Some(now), &["status", "--max-age", "26h"]);

    let out = status("2026-12-01T02:00:00Z");
    assert_eq!(out.status.code(), Some(21), "no run yet: {}", stderr(&out));
    let out = site.kura(Some("2026-12-01T03:00:00Z"), &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pings.recv().unwrap(), "GET /ping/abc123 HTTP/1.1");
    let out = status("2026-12-01T20:00:00Z");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: profile [site]"));
    // A night skipped: more than 26 h since the last success.
    let out = status("2026-12-02T06:00:00Z");
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("last successful backup"));

    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("kura_last_run_success{profile=\"site\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("kura_last_success_timestamp_seconds{profile=\"site\"} 1796094000"),
        "{prom}"
    );
    promtool_accepts(&metrics);

    // A failed night: red at once, a /fail ping, the metrics say so.
    let broken = fs::read_to_string(&file)
        .unwrap()
        .replace("printf 'CREATE TABLE t;'", "exit 5");
    fs::write(&file, broken).unwrap();
    let out = site.kura(Some("2026-12-02T03:00:00Z"), &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(pings.recv().unwrap(), "GET /ping/abc123/fail HTTP/1.1");
    let out = status("2026-12-02T04:00:00Z");
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the last run failed"));
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("kura_last_run_success{profile=\"site\"} 0"),
        "{prom}"
    );
    promtool_accepts(&metrics);

    // Without a profile: the repository's newest snapshot.
    let repo = site.repo.path.to_str().unwrap();
    let mut cmd = site.command(Some("2026-12-01T12:00:00Z"), &["-r", repo, "status"]);
    let out = cmd
        .env("KURA_CONFIG", "/nonexistent.toml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut cmd = site.command(Some("2026-12-05T12:00:00Z"), &["-r", repo, "status"]);
    let out = cmd
        .env("KURA_CONFIG", "/nonexistent.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
}

/// `promtool check metrics` (Debian's prometheus package) accepts the file.
fn promtool_accepts(file: &Path) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        crate::common::skip(
            "run::promtool_accepts",
            "promtool is not installed (apt-get install prometheus)",
        );
        return;
    };
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &fs::read(file).unwrap()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn schedule_writes_units_systemd_accepts_and_a_cron_entry_and_removes_them() {
    let site = Site::new();
    site.config("");
    let units = site.path("units");
    let dir = units.to_str().unwrap();
    let out = site.kura(
        None,
        &[
            "schedule",
            "install",
            "--dir",
            dir,
            "--no-enable",
            "--at",
            "02:30",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let service = units.join("kura-site.service");
    let timer = units.join("kura-site.timer");
    let text = fs::read_to_string(&service).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={BIN} run --config {}",
            site.path("kura.toml").display()
        )),
        "{text}"
    );
    assert!(
        text.contains("ProtectSystem=strict") && text.contains("IOSchedulingClass=idle"),
        "{text}"
    );
    let timer_text = fs::read_to_string(&timer).unwrap();
    assert!(
        timer_text.contains("OnCalendar=*-*-* 02:30:00") && timer_text.contains("Persistent=true")
    );
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&service)
        .arg(&timer)
        .output()
    {
        Ok(v) => assert!(
            v.status.success() && v.stderr.is_empty(),
            "systemd-analyze verify: {}",
            stderr(&v)
        ),
        Err(_) => crate::common::skip(
            "run::schedule_writes_units_systemd_accepts",
            "systemd-analyze is not installed (apt-get install systemd)",
        ),
    }
    let out = site.kura(None, &["schedule", "status", "--dir", dir, "--no-enable"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kura-site.timer: present"));
    let out = site.kura(None, &["schedule", "remove", "--dir", dir, "--no-enable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!service.exists() && !timer.exists());

    let cron = site.path("cron.d");
    let cron_dir = cron.to_str().unwrap();
    let out = site.kura(None, &["schedule", "install", "--cron", "--dir", cron_dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entry = fs::read_to_string(cron.join("kura-site")).unwrap();
    assert!(
        entry.contains("0 3 * * * root nice -n 10 ionice -c 3 "),
        "{entry}"
    );
    assert!(entry.trim_end().ends_with("kura.toml site"), "{entry}");
    let bad = site.kura(
        None,
        &[
            "schedule", "install", "--cron", "--dir", cron_dir, "--at", "3am",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn a_stranger_restores_from_the_recovery_sheet_alone() {
    let site = Site::new();
    let src = site.path("www");
    let out = site.repo.run(&["backup", "-q", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The README at the root says what this is, to anyone.
    let readme = fs::read_to_string(site.repo.path.join("README")).unwrap();
    assert!(readme.contains("kura backup repository") && readme.contains("RECOVERY SHEET"));
    let html = site.path("sheet.html");
    let args = [
        &[
            "key",
            "add",
            "--recovery",
            "--sheet",
            html.to_str().unwrap(),
        ][..],
        &crate::common::FAST_KDF,
    ]
    .concat();
    let out = site.repo.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let sheet = String::from_utf8(out.stdout).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&html).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let code = sheet
        .lines()
        .find_map(|l| l.strip_prefix("Recovery code:  "))
        .unwrap()
        .to_owned();
    assert!(fs::read_to_string(&html).unwrap().contains(&code));
    assert!(
        readme.contains(
            &sheet
                .lines()
                .find_map(|l| l.strip_prefix("Repository id:  "))
                .unwrap()
                .to_owned()
        )
    );
    // Steps 2-4 of the sheet, as written, on a machine that never saw the
    // repository (a fresh cache), the code typed sloppily.
    let steps: Vec<String> = sheet
        .lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix(|c: char| ('2'..='4').contains(&c))
        })
        .map(|l| l.trim_start_matches(". ").to_owned())
        .collect();
    assert_eq!(steps.len(), 3, "{sheet}");
    let target = site.path("restored");
    let sloppy = code.to_lowercase().replace('-', " ");
    let script = steps
        .join("\n")
        .replace("<the recovery code above>", &sloppy)
        .replace("/tmp/restored", target.to_str().unwrap());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-e", "-c", &script])
        .env_clear()
        .env("PATH", path)
        .env("KURA_CACHE_DIR", site.path("fresh-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}\n{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        crate::common::describe(&restored),
        crate::common::describe(&src)
    );
}

#[test]
fn a_drill_reads_back_a_sample_and_the_dump_and_catches_a_difference() {
    let site = Site::new();
    site.config("");
    let out = site.kura(None, &["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.kura(None, &["--json", "drill", "--files", "5", "--seed", "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "the dump and both files: {report}");
    assert_eq!(files[0]["path"], "/db/site.sql");
    assert!(files.iter().all(|f| f["read_back"] == true));
    assert_eq!(
        files.iter().filter(|f| f["source"] == "same").count(),
        2,
        "{report}"
    );

    // Other bytes under the same size and mtime: the drill says so, and
    // so does status.
    let logo = site.path("www/media/logo.png");
    let md = fs::metadata(&logo).unwrap();
    fs::write(&logo, [8u8; 5000]).unwrap();
    let file = fs::File::options().write(true).open(&logo).unwrap();
    file.set_modified(md.modified().unwrap()).unwrap();
    drop(file);
    let out = site.kura(None, &["drill", "--files", "5"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("logo.png  FAILED: differs"));
    let out = site.kura(None, &["status"]);
    assert_eq!(out.status.code(), Some(21));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kura drill"));
}

/// The DOM of `page` as headless Chromium (Debian's chromium) builds it,
/// and a screenshot of it at `shot`; `None` (with a SKIP line) where
/// there is no Chromium.
pub(crate) fn chromium_dom(page: &Path, shot: &Path) -> Option<String> {
    let url = format!("file://{}", page.display());
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
    ];
    let Ok(out) = Command::new("chromium")
        .args(base)
        .arg("--dump-dom")
        .arg(&url)
        .output()
    else {
        crate::common::skip(
            "run::the_html_report",
            "chromium is not installed (apt-get install chromium)",
        );
        return None;
    };
    assert!(out.status.success(), "chromium: {}", stderr(&out));
    let shot_arg = format!("--screenshot={}", shot.display());
    let taken = Command::new("chromium")
        .args(base)
        .args([shot_arg.as_str(), "--window-size=1000,1000"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        taken.status.success() && shot.exists(),
        "{}",
        stderr(&taken)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_html_report_shows_three_nights_in_chromium() {
    let site = Site::new();
    site.config("[site.check]\nread_data_subset = \"100%\"\n");
    for day in ["01", "02", "03"] {
        let out = site.kura(Some(&format!("2026-12-{day}T03:00:00Z")), &["run"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let page = site.path("report.html");
    let out = site.kura(
        Some("2026-12-03T09:00:00Z"),
        &["report", "--html", page.to_str().unwrap(), "--days", "28"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&page).unwrap();
    assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("<script"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kura-report.png");
    let Some(dom) = chromium_dom(&page, &shot) else {
        return;
    };
    for day in ["2026-12-01", "2026-12-02", "2026-12-03"] {
        assert!(
            dom.contains(&format!(
                "class=\"day\" data-date=\"{day}\" data-count=\"1\""
            )),
            "{day}: {dom}"
        );
    }
    assert!(dom.contains("data-date=\"2026-11-30\" data-count=\"0\""));
    assert_eq!(dom.matches("class=\"day\"").count(), 28);
    assert_eq!(dom.matches("<rect class=\"added\"").count(), 3);
    assert_eq!(dom.matches("<rect class=\"size\"").count(), 3);
    assert_eq!(dom.matches("<tr class=\"run\">").count(), 3);
    assert!(dom.contains("id=\"verdict\" class=\"ok\""), "{dom}");
}

#[test]
fn check_full_every_reads_every_pack_once_per_interval() {
    let site = Site::new();
    site.config("[site.check]\nread_data_subset = \"1/30\"\nfull_every = \"7d\"\n");
    let packs_read = |now: &str| {
        let out = site.kura(Some(now), &["--json", "run"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report = json(&out);
        let check = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "check")
            .unwrap()
            .clone();
        let summary = check["summary"].as_str().unwrap().to_owned();
        let n: u64 = summary
            .split('(')
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        n
    };
    let first = packs_read("2026-12-01T03:00:00Z");
    let second = packs_read("2026-12-02T03:00:00Z");
    let eighth = packs_read("2026-12-09T03:00:00Z");
    let total = fs::read_dir(site.repo.path.join("data"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count() as u64)
        .sum::<u64>();
    assert!(first >= 2 && second < first, "{first} then {second}");
    assert_eq!(eighth, total, "a week later every pack is read again");
}
