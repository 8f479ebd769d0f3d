//! Remote repositories against real servers on loopback (servers.rs):
//! OpenSSH's sftp subsystem and Garage's S3 API. The backend conformance
//! suite, the nightly job end to end, and the faults a remote repository
//! meets: a server that goes away mid-backup, wrong credentials.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use kura::ErrorKind;
use kura::backend::{Location, RemoteOptions, conformance};

use crate::common::{BIN, FAST_KDF, describe, pseudo_random, stderr};
use crate::nightly::{add_extras, gen_site};
use crate::servers::{Garage, Sshd, shared_garage, shared_sshd};

/// A repository location with what the CLI needs to reach it.
struct Remote {
    url: String,
    env: Vec<(String, String)>,
    cache: tempfile::TempDir,
}

impl Remote {
    fn sftp(sshd: &Sshd, name: &str) -> Self {
        let (_, url) = sshd.new_repo_dir(name);
        Self {
            url,
            env: sshd.env(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// As [`Self::sftp`], and the repository's directory on this machine.
    fn sftp_with_dir(sshd: &Sshd, name: &str) -> (Self, std::path::PathBuf) {
        let (dir, url) = sshd.new_repo_dir(name);
        let remote = Self {
            url,
            env: sshd.env(),
            cache: tempfile::tempdir().unwrap(),
        };
        (remote, dir)
    }

    fn s3(garage: &Garage, bucket: &str) -> Self {
        Self {
            url: format!("s3://{}/repo", garage.bucket(bucket)),
            env: garage.env(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        for var in [
            "KURA_PASSWORD_FILE",
            "KURA_PASSWORD_COMMAND",
            "KURA_REPOSITORY",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("-r")
            .arg(&self.url)
            .args(args)
            .env("KURA_PASSWORD", "pw")
            .env("KURA_CACHE_DIR", self.cache.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kura")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kura {args:?} on {}: {}",
            self.url,
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn init(&self) {
        self.ok(&[&["init"][..], &FAST_KDF].concat());
    }

    fn snapshot_count(&self) -> usize {
        let out = self.ok(&["--json", "snapshots"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().len()
    }
}

// ---- conformance

#[test]
fn sftp_backend_conformance() {
    let sshd = shared_sshd();
    let (path, url) = sshd.new_repo_dir("conformance");
    fs::create_dir_all(&path).unwrap();
    let options = RemoteOptions {
        ssh_config: Some(sshd.ssh_config.clone()),
        ..RemoteOptions::default()
    };
    let backend = Location::parse(&url, &options).unwrap().open().unwrap();
    conformance::run_shared(backend);
    // Nothing hidden is left behind by the writes (temporary names).
    let leftovers: Vec<_> = walk(&path)
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sftp_url_with_user_and_port_and_a_relative_path() {
    let sshd = shared_sshd();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let name = format!("kura-test-relative-{}", sshd.port);
    let url = format!("sftp://{}@127.0.0.1:{}/{name}/repo", user.trim(), sshd.port);
    let r = Remote {
        url,
        env: sshd.env(),
        cache: tempfile::tempdir().unwrap(),
    };
    r.init();
    let on_server = Path::new(&home).join(&name).join("repo/config");
    assert!(on_server.is_file(), "relative to the login directory");
    fs::remove_dir_all(Path::new(&home).join(&name)).unwrap();
}

#[test]
fn s3_backend_conformance() {
    let garage = shared_garage();
    let bucket = garage.bucket("conformance");
    let url = format!("s3://{bucket}/prefix");
    // The library reads credentials from the environment: run the suite
    // in a child that has them (see `conformance_child`).
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "remote::conformance_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("KURA_CONFORMANCE_URL", &url)
        .envs(garage.env())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// Run by the S3 conformance test in a child process with the
/// credentials in its environment.
#[test]
#[ignore = "run by s3_backend_conformance with credentials in its environment"]
fn conformance_child() {
    let url = std::env::var("KURA_CONFORMANCE_URL").expect("KURA_CONFORMANCE_URL");
    let options = RemoteOptions {
        s3_endpoint: std::env::var("KURA_S3_ENDPOINT").ok(),
        s3_region: std::env::var("KURA_S3_REGION").ok(),
        ssh_config: None,
        io_timeout: None,
        insecure_http: false,
    };
    let backend = Location::parse(&url, &options).unwrap().open().unwrap();
    // Garage 2.5 ignores `If-None-Match: *` (measured here by the probe);
    // the backend must notice and say so, and fall back to HEAD + PUT.
    assert!(
        !backend.exclusive_create().unwrap(),
        "Garage now honours If-None-Match: update format-spec/07 and this test"
    );
    conformance::run_shared(backend);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

// ---- the nightly job end to end

/// gen_site nights 0..2: backed up, each restored byte-identical, checked
/// with --read-data, then forgotten and pruned, checked and restored again.
fn nights_0_to_2(r: &Remote) {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let site_str = site.to_str().unwrap();
    r.init();
    let mut expected = Vec::new();
    for night in 0..=2 {
        gen_site(&site, night);
        if night == 0 {
            add_extras(&site);
        }
        let out = r.ok(&["--json", "backup", "--host", "web1", site_str]);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        if night > 0 {
            assert!(report["summary"]["files_unchanged"].as_u64().unwrap() > 50);
        }
        expected.push((
            report["snapshot"].as_str().unwrap().to_owned(),
            describe(&site),
        ));
    }
    let restored_matches =
        |id: &str, want: &std::collections::HashMap<std::path::PathBuf, String>, tag: &str| {
            let target = dir.path().join(format!("restore-{tag}"));
            r.ok(&["restore", id, "--target", target.to_str().unwrap()]);
            let got = describe(&target.join(site.strip_prefix("/").unwrap()));
            assert_eq!(got.len(), want.len(), "{tag}");
            for (path, d) in want {
                assert_eq!(got.get(path), Some(d), "{tag}: {}", path.display());
            }
            fs::remove_dir_all(&target).unwrap();
        };
    for (night, (id, want)) in expected.iter().enumerate() {
        restored_matches(id, want, &format!("night-{night}"));
    }
    r.ok(&["check", "--read-data"]);
    r.ok(&["forget", "--keep-last", "1", "--prune", "--now"]);
    assert_eq!(r.snapshot_count(), 1);
    r.ok(&["check", "--read-data"]);
    let (id, want) = expected.last().unwrap();
    restored_matches(id, want, "after-prune");
}

#[test]
fn sftp_gen_site_nights_backup_restore_check_forget_prune() {
    nights_0_to_2(&Remote::sftp(shared_sshd(), "nights"));
}

#[test]
fn s3_gen_site_nights_backup_restore_check_forget_prune() {
    nights_0_to_2(&Remote::s3(shared_garage(), "nights"));
}

// ---- faults

/// Waits until `stored` (objects on the server) exceeds `before`: the
/// backup running has uploaded a pack. Fails, rather than go on to test
/// nothing, if that does not happen within a minute.
fn wait_for_upload(stored: &dyn Fn() -> usize, before: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stored() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup uploaded no pack of the first part: the fault would hit nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Files under the `data/` folder of an SFTP repository at `repo` (its
/// directory on this machine): the packs stored, not those being written
/// (`.NAME.tmp-...`).
fn packs_on_disk(repo: &Path) -> usize {
    walk(&repo.join("data"))
        .iter()
        .filter(|p| {
            !Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .count()
}

/// Objects in a Garage bucket, as `garage bucket info` counts them.
fn objects_in_bucket(garage: &Garage, bucket: &str) -> usize {
    let info = garage.cli(&["bucket", "info", bucket]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix("Objects:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no object count in `garage bucket info`: {info}"))
}

/// A backup reading from a FIFO: it has uploaded a pack of the first part
/// (`stored`, the count of objects on the server, has grown) when `stop`
/// runs; then the rest comes and the backup must fail without committing
/// a snapshot. The next backup completes and checks clean. `env` is set
/// for the failing backup only, whose message must name the storage and
/// contain `says`.
fn server_stopped_mid_backup(
    r: &Remote,
    env: &[(&str, &str)],
    says: &str,
    (stop, restart): (&dyn Fn(), &dyn Fn()),
    stored: &dyn Fn() -> usize,
) {
    let dir = tempfile::tempdir().unwrap();
    r.init();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo_random(3 << 20, 1)).unwrap();
    r.ok(&["backup", "-q", src.to_str().unwrap()]);
    let before = stored();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let child: Child = r
        .command(&["backup", "-q", "--stdin-from-command"])
        .arg(format!("dump=cat {}", fifo.display()))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Enough for several 8 MiB packs to be uploaded before the stop.
    let first = pseudo_random(40 << 20, 2);
    writer.write_all(&first).unwrap();
    wait_for_upload(stored, before);
    stop();
    let rest = pseudo_random(20 << 20, 3);
    let _ = writer.write_all(&rest); // the backup may already have failed
    drop(writer);
    let out = child.wait_with_output().unwrap();
    let code = out.status.code();
    assert!(
        code == Some(18) || code == Some(1),
        "a clear failure, not {code:?}: {}",
        stderr(&out)
    );
    let message = stderr(&out);
    assert!(
        message.contains(&r.url) && message.contains(says),
        "the error names the storage and says {says:?}: {message}"
    );
    restart();
    assert_eq!(r.snapshot_count(), 1, "no snapshot was committed");
    // The next run completes; the repository checks clean.
    fs::write(src.join("dump"), [&first[..], &rest[..]].concat()).unwrap();
    r.ok(&["backup", "-q", src.to_str().unwrap()]);
    assert_eq!(r.snapshot_count(), 2);
    r.ok(&["check", "--read-data"]);
}

#[test]
fn sftp_server_stopped_mid_backup_commits_nothing_and_the_next_run_completes() {
    let sshd = std::cell::RefCell::new(Sshd::start());
    let (r, repo) = Remote::sftp_with_dir(&sshd.borrow(), "stopped");
    let stop = || sshd.borrow().stop();
    let restart = || sshd.borrow_mut().restart();
    server_stopped_mid_backup(&r, &[], "", (&stop, &restart), &|| packs_on_disk(&repo));
}

#[test]
fn s3_server_stopped_mid_backup_commits_nothing_and_the_next_run_completes() {
    let garage = std::cell::RefCell::new(Garage::start());
    let r = Remote::s3(&garage.borrow(), "stopped");
    let stop = || garage.borrow().stop();
    let restart = || garage.borrow_mut().restart();
    server_stopped_mid_backup(&r, &[], "", (&stop, &restart), &|| {
        objects_in_bucket(&garage.borrow(), "stopped")
    });
}

/// A server that stops answering (SIGSTOP: connections stay open, the
/// kernel still accepts new ones) is a timeout, then retries, then a clear
/// failure, not a hang; with `--io-timeout 2` it comes within seconds.
const HUNG: &[(&str, &str)] = &[("KURA_IO_TIMEOUT", "2")];

#[test]
fn sftp_server_hung_mid_backup_times_out_commits_nothing_and_the_next_run_completes() {
    let sshd = Sshd::start();
    let (r, repo) = Remote::sftp_with_dir(&sshd, "hung");
    let says = "no answer within 2 s";
    let faults: (&dyn Fn(), &dyn Fn()) = (&|| sshd.pause(), &|| sshd.resume());
    server_stopped_mid_backup(&r, HUNG, says, faults, &|| packs_on_disk(&repo));
}

#[test]
fn s3_server_hung_mid_backup_times_out_commits_nothing_and_the_next_run_completes() {
    let garage = Garage::start();
    let r = Remote::s3(&garage, "hung");
    let says = "timeout";
    let faults: (&dyn Fn(), &dyn Fn()) = (&|| garage.pause(), &|| garage.resume());
    server_stopped_mid_backup(&r, HUNG, says, faults, &|| {
        objects_in_bucket(&garage, "hung")
    });
}

#[test]
fn sftp_connection_dropped_mid_backup_is_retried_and_the_backup_completes() {
    let sshd = Sshd::start();
    let (r, repo) = Remote::sftp_with_dir(&sshd, "dropped");
    r.init();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let child: Child = r
        .command(&["backup", "--stdin-from-command"])
        .arg(format!("dump=cat {}", fifo.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let first = pseudo_random(24 << 20, 4);
    writer.write_all(&first).unwrap();
    wait_for_upload(&|| packs_on_disk(&repo), 0);
    sshd.drop_connections();
    let rest = pseudo_random(16 << 20, 5);
    writer.write_all(&rest).unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The drop hit the backup: a request failed and was retried.
    assert!(
        stderr(&out).contains("retrying"),
        "no request was retried: the dropped connection was not the backup's: {}",
        stderr(&out)
    );
    assert_eq!(r.snapshot_count(), 1);
    r.ok(&["check", "--read-data"]);
    let dumped = r.run(&["dump", "latest", "/dump"]);
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    assert!(
        dumped.stdout == [first, rest].concat(),
        "the stream is whole"
    );
}

/// `url` reached through a copy of the shared ssh config (in `dir`) in
/// which the file `from` is replaced by `to`.
fn with_ssh_config_changed(sshd: &Sshd, url: String, dir: &Path, from: &Path, to: &Path) -> Remote {
    let config = dir.join("ssh_config");
    let shared = fs::read_to_string(&sshd.ssh_config).unwrap();
    let changed = shared.replace(&from.display().to_string(), &to.display().to_string());
    assert_ne!(changed, shared, "the config names {}", from.display());
    fs::write(&config, changed).unwrap();
    Remote {
        url,
        env: vec![("KURA_SSH_CONFIG".into(), config.display().to_string())],
        cache: tempfile::tempdir().unwrap(),
    }
}

#[test]
fn sftp_wrong_key_is_access_denied_and_writes_nothing() {
    let sshd = shared_sshd();
    let (path, url) = sshd.new_repo_dir("wrong-key");
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other_key");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(ok.success());
    let r = with_ssh_config_changed(sshd, url, dir.path(), &sshd.client_key, &other);
    let out = r.run(&[&["init"][..], &FAST_KDF].concat());
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    assert!(!path.exists(), "nothing written");
}

#[test]
fn sftp_unknown_host_key_is_refused() {
    let sshd = shared_sshd();
    let (path, url) = sshd.new_repo_dir("unknown-host-key");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("known_hosts");
    fs::write(&empty, "").unwrap();
    let r = with_ssh_config_changed(sshd, url, dir.path(), &sshd.known_hosts, &empty);
    let out = r.run(&[&["init"][..], &FAST_KDF].concat());
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(!path.exists(), "nothing written");
    assert_eq!(fs::read_to_string(&empty).unwrap(), "", "no host key added");
}

#[test]
fn sftp_unreachable_server_is_exit_18() {
    let port = crate::servers::free_port();
    let r = Remote {
        url: format!("sftp://127.0.0.1:{port}/repo"),
        env: shared_sshd().env(),
        cache: tempfile::tempdir().unwrap(),
    };
    let out = r.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(18), "{}", stderr(&out));
}

#[test]
fn s3_wrong_credentials_are_access_denied_and_write_nothing() {
    let garage = shared_garage();
    let mut r = Remote::s3(garage, "wrong-secret");
    for (k, v) in &mut r.env {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "0".repeat(64);
        }
    }
    let out = r.run(&[&["init"][..], &FAST_KDF].concat());
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(stderr(&out).contains("credentials"), "{}", stderr(&out));
    let listed = garage.cli(&["bucket", "info", "wrong-secret"]);
    let objects = listed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Objects:"))
        .map(str::trim);
    assert_eq!(objects, Some("0"), "nothing written: {listed}");
    // The right credentials see no repository.
    let good = Remote::s3_existing(garage, "wrong-secret");
    assert_eq!(good.run(&["snapshots"]).status.code(), Some(10));
}

#[test]
fn s3_missing_bucket_is_a_clear_not_found() {
    let garage = shared_garage();
    let r = Remote {
        url: "s3://no-such-bucket/repo".into(),
        env: garage.env(),
        cache: tempfile::tempdir().unwrap(),
    };
    let out = r.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

impl Remote {
    fn s3_existing(garage: &Garage, bucket: &str) -> Self {
        Self {
            url: format!("s3://{bucket}/repo"),
            env: garage.env(),
            cache: tempfile::tempdir().unwrap(),
        }
    }
}

#[test]
fn library_errors_for_remote_locations_are_typed() {
    let options = RemoteOptions::default();
    let err = Location::parse("sftp://host", &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

// ---- copy between a local repository and remote ones

/// `copy` from a local repository to `r` (another key), then from `r` back
/// to a second local one: everything restores; a second copy copies nothing.
fn copy_through(r: &Remote) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("www")).unwrap();
    fs::write(src.join("www/index.html"), b"<h1>hello</h1>\n").unwrap();
    fs::write(src.join("db.sql"), pseudo_random(3 << 20, 8)).unwrap();
    let local = crate::common::CliRepo::init(dir.path());
    let out = local.run(&["backup", "-q", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    r.init();
    let copy = |from: &str, to: &str| {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("KURA_REPOSITORY")
            .env_remove("KURA_PASSWORD_FILE")
            .args(["--json", "copy", "--from", from, "--to", to])
            .env("KURA_PASSWORD", "pw")
            .env("KURA_TO_PASSWORD", "pw")
            .env("KURA_CACHE_DIR", r.cache.path())
            .envs(r.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "copy {from} -> {to}: {}",
            stderr(&out)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["copied"].as_array().unwrap().len()
    };
    let local_path = local.path.to_str().unwrap();
    assert_eq!(copy(local_path, &r.url), 1);
    assert_eq!(copy(local_path, &r.url), 0, "a second copy copies nothing");
    r.ok(&["check", "--read-data"]);
    let target = dir.path().join("restored");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let want = describe(&src);
    let got = describe(&target.join(src.strip_prefix("/").unwrap()));
    assert_eq!(got, want);
    // And back down, into a second local repository.
    let other = dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let back = crate::common::CliRepo::init(&other);
    assert_eq!(copy(&r.url, back.path.to_str().unwrap()), 1);
    let out = back.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn copy_to_and_from_sftp() {
    copy_through(&Remote::sftp(shared_sshd(), "copy"));
}

#[test]
fn copy_to_and_from_s3() {
    copy_through(&Remote::s3(shared_garage(), "copy"));
}

/// Runs `args` under `timeout 60`: a read that blocked on a FIFO would
/// never end (exit 124 then fails the test instead of hanging it).
fn run_bounded(r: &Remote, args: &[&str]) -> Output {
    let cmd = r.command(args);
    let mut bounded = Command::new("timeout");
    bounded
        .arg("60")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => bounded.env(k, v),
            None => bounded.env_remove(k),
        };
    }
    let out = bounded.output().expect("run kura under timeout");
    assert_ne!(out.status.code(), Some(124), "kura {args:?} hung");
    out
}

#[test]
fn sftp_a_fifo_or_directory_at_a_snapshot_name_is_damage_and_never_blocks() {
    let sshd = shared_sshd();
    let (r, dir) = Remote::sftp_with_dir(sshd, "non-files");
    r.init();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a"), b"one").unwrap();
    r.ok(&["backup", "-q", src.path().to_str().unwrap()]);
    let ids = |out: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = ids(&r.ok(&["--json", "snapshots"]))[0].clone();
    std::fs::write(src.path().join("a"), b"two").unwrap();
    r.ok(&["backup", "-q", src.path().to_str().unwrap()]);
    let second = ids(&r.ok(&["--json", "snapshots"]))
        .into_iter()
        .find(|id| *id != first)
        .unwrap();
    for (victim, make) in [(&second, "mkfifo"), (&first, "mkdir")] {
        let path = dir.join("snapshots").join(victim);
        std::fs::remove_file(&path).unwrap();
        assert!(Command::new(make).arg(&path).status().unwrap().success());
        let out = run_bounded(&r, &["snapshots"]);
        assert!(out.status.success(), "{make}: {}", stderr(&out));
        let out = run_bounded(&r, &["check"]);
        assert_eq!(out.status.code(), Some(14), "{make}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("snapshot {victim}")),
            "{make}: {text}"
        );
    }
}

#[test]
fn sftp_objects_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (r, dir) = Remote::sftp_with_dir(shared_sshd(), "modes");
    r.init();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a"), b"one").unwrap();
    r.ok(&["backup", "-q", src.path().to_str().unwrap()]);
    let mut seen = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", path.display());
            if meta.is_dir() {
                stack.push(path);
            }
            seen += 1;
        }
    }
    assert!(seen > 5, "config, keys, data, index, snapshots");
}
