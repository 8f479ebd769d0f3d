//! Secret and file hygiene of the kura binary (issue 13, item 6): what a
//! local user, a child process or an error message can learn.
//!
//! - A local repository and the local cache are private to their owner,
//!   whatever the umask: files 0600, directories 0700.
//! - No child (a `--stdin-from-command` dump, the password command, ssh)
//!   inherits a `KURA_*PASSWORD*` variable.
//! - A running kura is not dumpable (no core file, no ptrace or
//!   `/proc/PID/environ` for other processes of the same user) and its core
//!   size limit is 0.
//! - The password command's text never appears in a message.
//! - Plain http to a non-loopback S3 endpoint is refused before any
//!   connection unless `--insecure-http` / `KURA_INSECURE_HTTP` is given.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{BIN, FAST_KDF, init, kura, kura_env, stderr};

/// Runs kura under `sh` with `umask 000` and a core size limit above 0,
/// the most permissive settings a caller can hand it.
fn kura_permissive(cache: &Path, args: &[&str]) -> Output {
    let mut cmd = permissive_command(cache, args);
    cmd.output().expect("run kura")
}

fn permissive_command(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; ulimit -c 1024; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .env_remove("KURA_REPOSITORY")
        .env("KURA_PASSWORD", "pw")
        .env("KURA_CACHE_DIR", cache);
    cmd
}

/// Every path below `root` (`root` included) whose mode gives group or
/// others any access, with that mode; directories only if `dirs_only`.
fn open_to_others(root: &Path, dirs_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = fs::symlink_metadata(&path).unwrap();
        if md.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        if (md.is_dir() || !dirs_only) && md.mode() & 0o077 != 0 {
            out.push(format!("{} {:o}", path.display(), md.mode() & 0o7777));
        }
    }
    out
}

#[test]
fn a_local_repository_and_the_cache_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, cache, src) = (
        dir.path().join("repo"),
        dir.path().join("cache"),
        dir.path().join("src"),
    );
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"some data").unwrap();
    let repo_arg = repo.to_str().unwrap();
    let runs: [&[&str]; 3] = [
        &[&["-r", repo_arg, "init"][..], &FAST_KDF].concat(),
        &["-r", repo_arg, "backup", src.to_str().unwrap()],
        &["-r", repo_arg, "check"],
    ];
    for args in runs {
        let out = kura_permissive(&cache, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(repo.join("keys").is_dir() && repo.join("data").is_dir());
    assert_eq!(open_to_others(&repo, false), Vec::<String>::new());
    // The cache's directories are private; what is inside inherits that.
    assert!(cache.is_dir());
    assert_eq!(open_to_others(&cache, true), Vec::<String>::new());
    // A root made beforehand keeps its mode: kura changes only what it makes.
    let made = dir.path().join("made");
    fs::create_dir(&made).unwrap();
    fs::set_permissions(&made, fs::Permissions::from_mode(0o750)).unwrap();
    let made_arg = made.to_str().unwrap();
    let out = kura_permissive(&cache, &[&["-r", made_arg, "init"][..], &FAST_KDF].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::metadata(&made).unwrap().mode() & 0o7777, 0o750);
    let inside = open_to_others(&made, false);
    assert_eq!(inside, vec![format!("{} 750", made.display())]);
}

/// Every `KURA_*PASSWORD*` variable the tests below set, each with a value
/// that must reach no child.
const PASSWORD_VARIABLES: [(&str, &str); 4] = [
    ("KURA_PASSWORD", "pw"),
    ("KURA_TO_PASSWORD", "target-secret-5c1e"),
    ("KURA_NEW_PASSWORD", "new-secret-77aa"),
    (
        "KURA_TO_PASSWORD_COMMAND",
        "echo target-command-secret-0b2d",
    ),
];

fn password_lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with("KURA_") && l.split('=').next().unwrap().contains("PASSWORD"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_child_inherits_a_password_variable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let file = dir.path().join("pw.txt");
    fs::write(&file, "pw\n").unwrap();
    let env: Vec<(&str, &OsStr)> = PASSWORD_VARIABLES
        .iter()
        .map(|(k, v)| (*k, OsStr::new(v)))
        .chain([("KURA_PASSWORD_FILE", file.as_os_str())])
        .collect();
    let out = kura_env(
        &repo,
        &env,
        &["backup", "--stdin-from-command", "env.txt=env"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kura(&repo, Some("pw"), &["dump", "latest", "env.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PATH="),
        "the dump holds the environment"
    );
    assert_eq!(password_lines(&out.stdout), Vec::<String>::new());

    // The password command itself sees no other password either.
    let seen = dir.path().join("seen-by-password-command.txt");
    let command = format!("env > '{}'; echo pw", seen.display());
    let env: Vec<(&str, &OsStr)> = PASSWORD_VARIABLES[1..]
        .iter()
        .map(|(k, v)| (*k, OsStr::new(v)))
        .chain([("KURA_PASSWORD_COMMAND", OsStr::new(&command))])
        .collect();
    let out = kura_env(&repo, &env, &["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = fs::read(&seen).unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("PATH="));
    assert_eq!(password_lines(&seen), Vec::<String>::new());
}

#[test]
fn the_password_command_text_is_in_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init(&repo);
    let marker = "hunter2-6f0d";
    let cases = [
        // Fails without a word.
        format!("echo {marker} >/dev/null; exit 3"),
        // Killed by a signal.
        format!("kill -9 $$; echo {marker}"),
        // Gives a wrong password.
        format!("echo {marker}"),
        // Gives nothing.
        format!("true {marker}"),
    ];
    for command in &cases {
        let out = kura_env(&repo, &[], &["--password-command", command, "snapshots"]);
        assert_ne!(out.status.code(), Some(0), "{command}");
        let text = stderr(&out);
        assert!(!text.contains(marker), "{command}: {text}");
        assert!(!text.contains(command.as_str()), "{command}: {text}");
    }
    let out = kura_env(&repo, &[], &["--password-command", &cases[0], "snapshots"]);
    let text = stderr(&out);
    assert!(
        text.contains("the password command (KURA_PASSWORD_COMMAND / --password-command)"),
        "{text}"
    );
    assert!(text.contains("exit status: 3"), "{text}");
}

/// Environment variables for one run of kura.
type Variables<'a> = &'a [(&'a str, &'a OsStr)];

/// Runs `kura snapshots` on an S3 bucket behind `endpoint` with made-up
/// credentials, a one-second I/O timeout and `extra` arguments/variables.
fn s3_snapshots(endpoint: &str, extra: &[&str], env: Variables) -> Output {
    let mut all: Vec<(&str, &OsStr)> = vec![
        ("AWS_ACCESS_KEY_ID", OsStr::new("GKnotarealkey")),
        ("AWS_SECRET_ACCESS_KEY", OsStr::new("not-a-real-secret")),
        ("KURA_INSECURE_HTTP", OsStr::new("0")),
    ];
    all.extend_from_slice(env);
    let args = [
        &[
            "--s3-endpoint",
            endpoint,
            "--s3-region",
            "garage",
            "--io-timeout",
            "1",
        ][..],
        extra,
        &["snapshots"],
    ]
    .concat();
    kura_env(Path::new("s3://kura-hygiene"), &all, &args)
}

#[test]
fn plain_http_to_s3_is_refused_unless_loopback_or_insecure_http() {
    let out = s3_snapshots("http://10.1.2.3:9", &[], &[]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("--insecure-http"), "{text}");
    assert!(text.contains("10.1.2.3"), "{text}");
    // Allowed: then it tries to connect, and nothing answers (exit 18).
    // A network with a transparent proxy answers any address with a 404
    // (exit 10): either way the request was sent, not refused.
    let allowed: [(&str, &[&str], Variables); 5] = [
        ("http://10.1.2.3:9", &["--insecure-http"], &[]),
        (
            "http://10.1.2.3:9",
            &[],
            &[("KURA_INSECURE_HTTP", OsStr::new("1"))],
        ),
        ("http://127.0.0.1:9", &[], &[]),
        ("http://127.8.9.10:9", &[], &[]),
        ("http://localhost:9", &[], &[]),
    ];
    for (endpoint, extra, env) in allowed {
        let out = s3_snapshots(endpoint, extra, env);
        let text = stderr(&out);
        assert!(
            matches!(out.status.code(), Some(18 | 10)),
            "{endpoint} {extra:?}: {text}"
        );
        assert!(!text.contains("--insecure-http"), "{text}");
    }
}

/// The named field of `/proc/PID/limits` ("Max core file size").
fn limit(pid: u32, name: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..]
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens `fifo` for writing once a reader has it open, polling (a
/// non-blocking open fails with ENXIO until then) while `child` runs.
fn open_when_read(fifo: &Path, child: &mut std::process::Child) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let opened = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo);
        match opened {
            Ok(file) => return file,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {}
            Err(e) => panic!("opening the FIFO: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.stderr.take().map(std::io::read_to_string);
            panic!("kura ended ({status}) before reading the FIFO: {out:?}");
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_running_kura_cannot_dump_core_nor_be_inspected() {
    let dir = tempfile::tempdir().unwrap();
    // As root, kura runs as nobody: root may read any process, and the
    // owner of /proc/PID is what shows whether the process is dumpable.
    let as_root = nix::unistd::geteuid().is_root();
    let uid = if as_root {
        65534
    } else {
        nix::unistd::geteuid().as_raw()
    };
    let gid = if as_root {
        65534
    } else {
        nix::unistd::getegid().as_raw()
    };
    let fifo = dir.path().join("dump.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&fifo, Some(uid), Some(gid)).unwrap();
    let (repo, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo_arg = repo.to_str().unwrap();
    let init = permissive_command(&cache, &[&["-r", repo_arg, "init"][..], &FAST_KDF].concat())
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let source = format!("db.sql=cat '{}'", fifo.display());
    let mut child = permissive_command(
        &cache,
        &["-r", repo_arg, "backup", "--stdin-from-command", &source],
    )
    .uid(uid)
    .gid(gid)
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The command reads the FIFO: kura is past its start-up and holds
    // the keys.
    let mut writer = open_when_read(&fifo, &mut child);
    let pid = child.id();
    let owner = fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid();
    let core = limit(pid, "Max core file size");
    std::io::Write::write_all(&mut writer, b"select 1;\n").unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        owner, 0,
        "kura (uid {uid}) is not dumpable: /proc/PID is root's"
    );
    assert_eq!(core, "0 0", "kura's core size limit");
}

#[test]
fn ssh_inherits_no_password_variable() {
    // ssh runs `LocalCommand` with its own environment once connected.
    let sshd = crate::servers::shared_sshd();
    let (_, url) = sshd.new_repo_dir("hygiene-ssh-environment");
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen-by-ssh.txt");
    let config = dir.path().join("ssh_config");
    let shared = fs::read_to_string(&sshd.ssh_config).unwrap();
    fs::write(
        &config,
        format!(
            "PermitLocalCommand yes\nLocalCommand env > '{}'\n\n{shared}",
            seen.display()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let env: Vec<(&str, &OsStr)> = PASSWORD_VARIABLES
        .iter()
        .map(|(k, v)| (*k, OsStr::new(v)))
        .chain([
            ("KURA_SSH_CONFIG", config.as_os_str()),
            ("KURA_CACHE_DIR", cache.as_os_str()),
        ])
        .collect();
    let out = kura_env(Path::new(&url), &env, &[&["init"][..], &FAST_KDF].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = fs::read(&seen).expect("ssh ran the LocalCommand");
    assert!(String::from_utf8_lossy(&seen).contains("PATH="));
    assert_eq!(password_lines(&seen), Vec::<String>::new());
}
