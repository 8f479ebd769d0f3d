//! The seed's setup from nothing (issue 15, "Done when"; README, "Protect
//! a server in five minutes"): a PostgreSQL cluster on a unix socket, a
//! web root, a kura.toml with a pg_dump source and an SFTP repository on
//! the test sshd; `kura run` on three simulated nights with retention
//! applied; `kura status --max-age` red when a night is missed; the ping
//! endpoint told of success and failure; the HTML report showing the
//! nights in Chromium; and a restore on a fresh cache from the recovery
//! sheet alone, loaded by `psql` with the same row counts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{BIN, FAST_KDF, skip, stderr};
use crate::run::{chromium_dom, ping_server};
use crate::servers::Sshd;

/// A PostgreSQL cluster in a directory of its own, listening only on a
/// unix socket there, run as the `postgres` user when the test is root
/// (initdb refuses root). Stopped on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> Option<Self> {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()?;
        let (data, socket) = (dir.join("pgdata"), dir.join("pgsock"));
        for d in [&data, &socket] {
            fs::create_dir_all(d).unwrap();
        }
        let pg = Self { bin, data, socket };
        if nix::unistd::geteuid().is_root() {
            for d in [&pg.data, &pg.socket] {
                let ok = Command::new("chown").arg("postgres").arg(d).status();
                if !ok.is_ok_and(|s| s.success()) {
                    return None;
                }
            }
        }
        let init = pg.as_postgres(
            "initdb",
            &["-D", pg.data.to_str()?, "-U", "postgres", "--auth=trust"],
        );
        if !init.status.success() {
            eprintln!("initdb: {}", stderr(&init));
            return None;
        }
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off",
            pg.socket.display()
        );
        let log = pg.socket.join("log");
        let started = pg.as_postgres(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str()?,
                "-l",
                log.to_str()?,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {}",
            stderr(&started)
        );
        Some(pg)
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).current_dir("/").output().unwrap()
    }

    /// `psql` on database `db` running `sql`; its output.
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                self.socket.to_str().unwrap(),
                "-U",
                "postgres",
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn dump_command(&self, db: &str) -> String {
        format!(
            "{} -h {} -U postgres {db}",
            self.bin.join("pg_dump").display(),
            self.socket.display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_owned();
        let _ = self.as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// Runs kura with the walk-through's environment at `now`.
fn kura(env: &[(String, String)], now: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for var in [
        "KURA_REPOSITORY",
        "KURA_PASSWORD",
        "KURA_PASSWORD_FILE",
        "KURA_PASSWORD_COMMAND",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env("KURA_NOW", now)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn protect_a_server_in_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    // The postgres user must reach its directories below this one.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let Some(pg) = Postgres::start(dir.path()) else {
        skip(
            "walkthrough::protect_a_server_in_five_minutes",
            "no PostgreSQL here (apt-get install postgresql)",
        );
        return;
    };
    pg.psql("postgres", "CREATE DATABASE site");
    pg.psql(
        "site",
        "CREATE TABLE posts (id serial PRIMARY KEY, body text)",
    );
    let www = dir.path().join("www");
    fs::create_dir_all(www.join("uploads")).unwrap();
    fs::write(
        www.join("index.php"),
        b"<?php require 'wp-blog-header.php';",
    )
    .unwrap();

    // The storage host and the repository on it.
    let sshd = Sshd::start();
    let (_, url) = sshd.new_repo_dir("web1");
    let password = dir.path().join("admin.pw");
    fs::write(&password, "correct horse battery staple\n").unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let cache = dir.path().join("cache");
    let mut env = sshd.env();
    env.push(("KURA_CACHE_DIR".into(), cache.display().to_string()));
    let init_env = [
        env.clone(),
        vec![("KURA_PASSWORD_FILE".into(), password.display().to_string())],
    ]
    .concat();
    let out = kura(
        &init_env,
        "2026-11-30T12:00:00Z",
        &[&["-r", &url, "init"][..], &FAST_KDF].concat(),
    );
    assert!(out.status.success(), "init: {}", stderr(&out));

    let (ping, pings) = ping_server();
    let ping_path = ping.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let config = dir.path().join("kura.toml");
    fs::write(
        &config,
        format!(
            r#"[site]
repository = "{url}"
password_file = "{password}"
ssh_config = "{ssh}"
host = "web1"

[site.sources]
paths = ["{www}"]
commands = {{ "db/site.sql" = "{dump}" }}

[site.retention]
keep_daily = 7

[site.check]
read_data_subset = "100%"

[site.notify]
url = "{ping}"
"#,
            password = password.display(),
            ssh = sshd.ssh_config.display(),
            www = www.display(),
            dump = pg.dump_command("site"),
        ),
    )
    .unwrap();
    env.push(("KURA_CONFIG".into(), config.display().to_string()));

    // Three nights: posts and uploads are added each day; night 3 is run
    // twice (a manual run), and retention keeps one a day.
    let mut rows = 0;
    for (day, runs) in [("01", 1), ("02", 1), ("03", 2)] {
        for i in 0..25 {
            pg.psql(
                "site",
                &format!("INSERT INTO posts (body) VALUES ('post {day}-{i}')"),
            );
            rows += 1;
        }
        fs::write(
            www.join(format!("uploads/{day}.jpg")),
            vec![day.as_bytes()[1]; 20_000],
        )
        .unwrap();
        for run in 0..runs {
            let now = format!("2026-12-{day}T03:{:02}:00Z", run * 30);
            let out = kura(&env, &now, &["run"]);
            assert!(out.status.success(), "night {day}: {}", stderr(&out));
            assert_eq!(pings.recv().unwrap(), format!("GET {ping_path} HTTP/1.1"));
        }
    }
    let out = kura(
        &init_env,
        "2026-12-03T04:00:00Z",
        &["-r", &url, "--json", "snapshots"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "one a day kept: {listed}"
    );

    // Status: green the morning after, red when a night is missed.
    let out = kura(
        &env,
        "2026-12-03T10:00:00Z",
        &["status", "--max-age", "26h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kura(
        &env,
        "2026-12-04T06:00:00Z",
        &["status", "--max-age", "26h"],
    );
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));

    // A night whose dump fails: the ping says so.
    fs::write(
        &config,
        fs::read_to_string(&config)
            .unwrap()
            .replace(" site\"", " nosuchdb\""),
    )
    .unwrap();
    let out = kura(&env, "2026-12-04T03:00:00Z", &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(pings.recv().unwrap().contains("/fail "));

    // The report, in a browser: the three nights and the failure.
    let page = dir.path().join("report.html");
    let out = kura(
        &env,
        "2026-12-04T09:00:00Z",
        &["report", "--html", page.to_str().unwrap(), "--days", "14"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kura-walkthrough-report.png");
    if let Some(dom) = chromium_dom(&page, &shot) {
        for day in ["2026-12-01", "2026-12-02", "2026-12-03"] {
            assert!(
                dom.contains(&format!("data-date=\"{day}\" data-count=\"1\"")),
                "{day}"
            );
        }
        assert!(dom.contains("data-date=\"2026-12-04\" data-count=\"0\""));
        assert_eq!(
            dom.matches("<tr class=\"run\">").count(),
            5,
            "four good runs and a failed one"
        );
        assert!(dom.contains("id=\"verdict\" class=\"bad\""));
    }

    // The recovery sheet, and a stranger on another machine with only it
    // (and ssh access to the storage).
    let sheet_env = [
        env.clone(),
        vec![("KURA_PASSWORD_FILE".into(), password.display().to_string())],
    ]
    .concat();
    let out = kura(
        &sheet_env,
        "2026-12-04T09:00:00Z",
        &[&["-r", &url, "key", "add", "--recovery"][..], &FAST_KDF].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sheet = String::from_utf8(out.stdout).unwrap();
    let code = sheet
        .lines()
        .find_map(|l| l.strip_prefix("Recovery code:  "))
        .unwrap();
    let location = sheet
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("2. export KURA_REPOSITORY='"))
        .unwrap()
        .trim_end_matches('\'');
    let fresh_cache = dir.path().join("stranger-cache");
    let stranger = [
        ("KURA_REPOSITORY", location),
        ("KURA_PASSWORD", code),
        ("KURA_SSH_CONFIG", sshd.ssh_config.to_str().unwrap()),
        ("KURA_CACHE_DIR", fresh_cache.to_str().unwrap()),
    ];
    let dumped = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(stranger)
        .args(["dump", "latest", "db/site.sql"])
        .output()
        .unwrap();
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    pg.psql("postgres", "CREATE DATABASE restored");
    let load = Command::new(pg.bin.join("psql"))
        .args([
            "-h",
            pg.socket.to_str().unwrap(),
            "-U",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "restored",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), &dumped.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(load.status.success(), "psql load: {}", stderr(&load));
    assert_eq!(
        pg.psql("restored", "SELECT count(*) FROM posts"),
        rows.to_string()
    );
    assert_eq!(
        pg.psql("site", "SELECT count(*) FROM posts"),
        rows.to_string()
    );
}
