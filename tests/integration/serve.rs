//! `kura serve` over the real sshd of the suite (servers.rs), with the
//! forced command of an `authorized_keys` line as a storage host would
//! have it, and storage that refuses deletes (issue 13, item 3): backup,
//! copy and check never delete; delete, overwrite and a planted prune
//! record are refused and logged; prune and forget fail cleanly and leave
//! a repository that checks clean.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use kura::backend::{Backend, HookedBackend, Location, MemoryBackend, RemoteOptions, conformance};
use kura::chunkstore::index::ChunkIndex;
use kura::ops::backup::{BackupOptions, StreamSource, backup};
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::copy::{CopyOptions, copy};
use kura::repository::Repository;
use kura::{Error, ErrorKind};

use crate::common::{
    BIN, FAST_KDF, PASSWORD, describe, fast_options, pseudo_random, skip, stderr, text_like,
};
use crate::servers::Sshd;

/// Storage that refuses every delete: a [`HookedBackend`] over memory
/// whose delete hook records the path and fails.
fn refusing_deletes() -> (Arc<dyn Backend>, Arc<Mutex<Vec<String>>>) {
    let deletes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&deletes);
    let backend = HookedBackend::new(Arc::new(MemoryBackend::new())).on_delete(move |path| {
        seen.lock().unwrap().push(path.to_owned());
        Err(Error::new(
            ErrorKind::AccessDenied,
            "this storage refuses deletes",
        ))
    });
    (Arc::new(backend), deletes)
}

fn synced(repo: &Repository) -> ChunkIndex {
    let index = ChunkIndex::open(None).unwrap();
    index.sync(repo).unwrap();
    index
}

fn site(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("www")).unwrap();
    fs::write(root.join("www/index.php"), text_like(40_000, seed)).unwrap();
    fs::write(root.join("www/logo.bin"), pseudo_random(300_000, seed + 1)).unwrap();
}

#[test]
fn backup_copy_and_check_never_delete() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    site(&src, 1);
    let (source_backend, source_deletes) = refusing_deletes();
    let source = Repository::init(source_backend, PASSWORD, &fast_options()).unwrap();
    let index = synced(&source);
    for night in 0..2u64 {
        site(&src, 10 + night);
        let options = BackupOptions {
            paths: vec![src.clone()],
            streams: vec![StreamSource {
                name: "db/site.sql".into(),
                command: Some(format!("seq 1 {}", 20_000 + night)),
            }],
            hostname: "web1".into(),
            ..BackupOptions::default()
        };
        let report = backup(&source, &index, &options).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }
    for read_data in [None, Some(Subset::All)] {
        let options = CheckOptions {
            read_data,
            ..CheckOptions::default()
        };
        let report = check(&source, &synced(&source), &options).unwrap();
        assert!(report.is_clean(), "{:#?}", report.damage);
    }
    let (target_backend, target_deletes) = refusing_deletes();
    let target = Repository::init(target_backend, PASSWORD, &fast_options()).unwrap();
    let target_index = synced(&target);
    let report = copy(
        &source,
        &synced(&source),
        &target,
        &target_index,
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(report.copied.len(), 2);
    let checked = check(
        &target,
        &synced(&target),
        &CheckOptions {
            read_data: Some(Subset::All),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(checked.is_clean(), "{:#?}", checked.damage);
    assert!(
        source_deletes.lock().unwrap().is_empty(),
        "{source_deletes:?}"
    );
    assert!(
        target_deletes.lock().unwrap().is_empty(),
        "{target_deletes:?}"
    );
}

/// An sshd of its own (its `authorized_keys` is rewritten) and one
/// repository directory on it, served by `kura serve`.
struct Storage {
    sshd: Sshd,
    repo: PathBuf,
    log: PathBuf,
    cache: tempfile::TempDir,
}

impl Storage {
    /// `None` (after a SKIP line) where sshd is not installed.
    fn start(test: &str) -> Option<Self> {
        let installed = ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"]
            .iter()
            .any(|p| Path::new(p).is_file());
        if !installed {
            skip(
                test,
                "sshd is not installed (scripts/install-test-servers.sh)",
            );
            return None;
        }
        let sshd = Sshd::start();
        let repo = sshd.dir.path().join("repos/web1");
        let log = sshd.dir.path().join("serve.log");
        Some(Self {
            sshd,
            repo,
            log,
            cache: tempfile::tempdir().unwrap(),
        })
    }

    /// The client key's `authorized_keys` line: forced to
    /// `kura serve --append-only` on the repository, or a plain login (an
    /// administrator's, whose client runs `kura serve PATH` itself).
    fn authorize(&self, append_only: bool) {
        let key = fs::read_to_string(self.sshd.dir.path().join("client_key.pub")).unwrap();
        let line = if append_only {
            format!(
                "command=\"{BIN} serve --append-only --log {} {}\",restrict {key}",
                self.log.display(),
                self.repo.display()
            )
        } else {
            key
        };
        fs::write(self.sshd.dir.path().join("authorized_keys"), line).unwrap();
    }

    fn url(&self) -> String {
        format!("kura+ssh://{}/{}", self.sshd.alias, self.repo.display())
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        for var in [
            "KURA_PASSWORD_FILE",
            "KURA_PASSWORD_COMMAND",
            "KURA_REPOSITORY",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("-r")
            .arg(self.url())
            .args(args)
            .env("KURA_PASSWORD", "pw")
            .env("KURA_CACHE_DIR", self.cache.path())
            .env("KURA_SSH_CONFIG", &self.sshd.ssh_config)
            .env("KURA_SERVE_COMMAND", BIN)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kura {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The backend as a client holding this login sees it.
    fn backend(&self) -> Arc<dyn Backend> {
        let options = RemoteOptions {
            ssh_config: Some(self.sshd.ssh_config.clone()),
            ..RemoteOptions::default()
        };
        Location::parse(&self.url(), &options)
            .unwrap()
            .with_serve_command(Some(BIN))
            .open()
            .unwrap()
    }

    fn logged(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.ok(&["--json", "snapshots"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Restores snapshot `id` and describes what it holds of `src`.
    fn restored(
        &self,
        id: &str,
        src: &Path,
        target: &Path,
    ) -> std::collections::HashMap<PathBuf, String> {
        self.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        describe(&target.join(src.strip_prefix("/").unwrap()))
    }
}

#[test]
fn append_only_serve_over_sshd_backs_up_restores_and_checks() {
    let Some(storage) = Storage::start("append_only_serve_over_sshd_backs_up_restores_and_checks")
    else {
        return;
    };
    storage.authorize(true);
    storage.ok(&[&["init"][..], &FAST_KDF].concat());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut wanted = Vec::new();
    for night in 0..2u64 {
        site(&src, 20 + night);
        storage.ok(&["backup", "-q", src.to_str().unwrap()]);
        wanted.push(describe(&src));
    }
    storage.ok(&["backup", "-q", "--stdin-from-command", "db.sql=seq 1 30000"]);
    // Copy into it, from a local repository.
    let local = crate::common::CliRepo::init(dir.path());
    let out = local.run(&["backup", "-q", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(BIN)
        .env_remove("KURA_REPOSITORY")
        .env_remove("KURA_PASSWORD_FILE")
        .args([
            "copy",
            "-q",
            "--from",
            local.path.to_str().unwrap(),
            "--to",
            &storage.url(),
        ])
        .env("KURA_PASSWORD", "pw")
        .env("KURA_TO_PASSWORD", "pw")
        .env("KURA_CACHE_DIR", storage.cache.path())
        .env("KURA_SSH_CONFIG", &storage.sshd.ssh_config)
        .output()
        .unwrap();
    assert!(out.status.success(), "copy: {}", stderr(&out));
    storage.ok(&["check"]);
    storage.ok(&["check", "--read-data"]);
    let out = storage.ok(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4, "two nights, one dump, one copied");
    for (n, want) in wanted.iter().enumerate() {
        let id = list[n]["id"].as_str().unwrap();
        let got = storage.restored(id, &src, &dir.path().join(format!("night-{n}")));
        assert_eq!(&got, want, "night {n} restores byte-identical");
    }
    let dumped = dir.path().join("dump");
    storage.ok(&[
        "restore",
        list[2]["id"].as_str().unwrap(),
        "--target",
        dumped.to_str().unwrap(),
    ]);
    let seq = (1..=30_000).fold(String::new(), |mut s, i| {
        s.push_str(&i.to_string());
        s.push('\n');
        s
    });
    assert_eq!(fs::read_to_string(dumped.join("db.sql")).unwrap(), seq);
    assert!(
        !storage.logged().contains("refused delete"),
        "backup, copy and check asked for no delete: {}",
        storage.logged()
    );
    // The served repository is private on the storage host.
    let mode = fs::metadata(&storage.repo).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn append_only_serve_refuses_delete_overwrite_and_planted_record() {
    let Some(storage) =
        Storage::start("append_only_serve_refuses_delete_overwrite_and_planted_record")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // The administrator's login: two nights, the first forgotten and
    // pruned, so the repository holds a prune record.
    storage.authorize(false);
    storage.ok(&[&["init"][..], &FAST_KDF].concat());
    for night in 0..2u64 {
        site(&src, 40 + night);
        storage.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    storage.ok(&["forget", "--keep-last", "1"]);
    storage.ok(&["prune"]);
    // The web server's login from now on.
    storage.authorize(true);
    site(&src, 50);
    storage.ok(&["backup", "-q", src.to_str().unwrap()]);
    let want = describe(&src);
    let before = storage.snapshot_ids();
    assert_eq!(before.len(), 2);

    let backend = storage.backend();
    let pack = backend.list("data").unwrap()[0].path.clone();
    let record = backend.list("prune").unwrap();
    assert!(
        !record.is_empty(),
        "the administrator's prune wrote a record"
    );
    let record = record[0].path.clone();
    let err = backend.delete(&pack).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(
        err.to_string().contains("the server is append-only"),
        "{err}"
    );
    let err = backend.write_bytes(&pack, b"forged pack").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = backend.write_bytes(&record, b"forged record").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = backend
        .remove_stale_temporaries(std::time::Duration::ZERO)
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = backend.delete("../../authorized_keys").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(storage.sshd.dir.path().join("authorized_keys").exists());
    drop(backend);
    let log = storage.logged();
    for line in [
        format!("refused delete {pack:?}: the server is append-only"),
        format!("refused write {pack:?}: the name exists"),
        format!("refused write {record:?}: the name exists"),
        "refused remove_stale_temporaries".to_owned(),
    ] {
        assert!(log.contains(&line), "{line} not in the log:\n{log}");
    }

    // Forget and prune through it fail with the refusal, exit 17, at
    // their first delete (prune's is its first step, before any write):
    // they delete nothing. Forget writes its forget record (naming the
    // snapshots it is about to delete, format-spec/12) before its first
    // delete is refused; such a record only says those snapshots' absence
    // would not be a rollback, so prune records are left out here.
    let objects = || {
        let backend = storage.backend();
        ["keys", "data", "index", "snapshots"]
            .map(|dir| backend.list(dir).unwrap())
            .concat()
    };
    let stored = objects();
    for args in [&["forget", "--keep-last", "1"][..], &["prune"][..]] {
        let out = storage.run(args);
        assert_eq!(out.status.code(), Some(17), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("the server is append-only"),
            "{}",
            stderr(&out)
        );
        assert_eq!(objects(), stored, "{args:?} changed nothing");
    }
    assert_eq!(
        storage.snapshot_ids(),
        before,
        "every snapshot is still there"
    );
    storage.ok(&["check", "--read-data"]);
    let got = storage.restored("latest", &src, &dir.path().join("latest"));
    assert_eq!(got, want);
    // The administrator's login still checks it clean.
    storage.authorize(false);
    storage.ok(&["check", "--read-data"]);
}

#[test]
fn serve_backend_conformance_over_sshd() {
    let Some(storage) = Storage::start("serve_backend_conformance_over_sshd") else {
        return;
    };
    storage.authorize(false);
    fs::create_dir_all(&storage.repo).unwrap();
    conformance::run_shared(storage.backend());
    let leftovers: Vec<_> = fs::read_dir(storage.repo.join("conformance"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // And append-only, on a fresh directory.
    fs::remove_dir_all(&storage.repo).unwrap();
    fs::create_dir_all(&storage.repo).unwrap();
    storage.authorize(true);
    conformance::run_append_only(storage.backend().as_ref());
    assert!(
        storage
            .logged()
            .contains("refused delete \"conformance/kept\"")
    );
}

#[test]
fn a_silent_server_times_out_and_the_next_request_reconnects() {
    let Some(storage) = Storage::start("a_silent_server_times_out_and_the_next_request_reconnects")
    else {
        return;
    };
    storage.authorize(false);
    fs::create_dir_all(&storage.repo).unwrap();
    let options = RemoteOptions {
        ssh_config: Some(storage.sshd.ssh_config.clone()),
        io_timeout: Some(std::time::Duration::from_secs(2)),
        ..RemoteOptions::default()
    };
    let backend = Location::parse(&storage.url(), &options)
        .unwrap()
        .with_serve_command(Some(BIN))
        .open()
        .unwrap();
    backend.write_bytes("snapshots/a", b"night 0").unwrap();
    // The host hangs: its sshd and the kura serve below it stop answering.
    storage.sshd.pause();
    let err = backend.read("snapshots/a", None).unwrap_err();
    storage.sshd.resume();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        err.to_string().contains("no answer from the server"),
        "{err}"
    );
    assert_eq!(backend.read("snapshots/a", None).unwrap(), b"night 0");
}
