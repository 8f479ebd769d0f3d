//! Shared fixtures: fast repositories and deterministic data.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use kura::algorithms::crypto::kdf::KdfParams;
use kura::backend::{Backend, MemoryBackend};
use kura::repository::{InitOptions, Repository};

pub const PASSWORD: &[u8] = b"correct horse battery staple";

/// Init options with the cheapest KDF the policy accepts.
pub fn fast_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams::FLOOR,
        ..InitOptions::default()
    }
}

/// A new repository in memory; returns the backend too for tampering.
pub fn memory_repo() -> (Arc<MemoryBackend>, Repository) {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(
        backend.clone() as Arc<dyn Backend>,
        PASSWORD,
        &fast_options(),
    )
    .expect("init");
    (backend, repo)
}

/// Data blocks of a file of many extents: [`many_extents_file`].
pub const MANY_EXTENT_BLOCKS: u64 = 16_500;

/// Writes `dir/many-extents.img`: 16,500 blocks of 4 KiB data, each
/// followed by a 4 KiB hole, ending in a hole: 33,000 extents, so that
/// its content is three extent lists (format-spec/10). Returns its path,
/// or `None` (after a SKIP line naming `test`) where the file system
/// does not keep 4 KiB holes.
pub fn many_extents_file(dir: &Path, test: &str) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("many-extents.img");
    let file = fs::File::create(&path).unwrap();
    let blocks: Vec<Vec<u8>> = (0..7).map(|s| pseudo_random(4096, 40 + s)).collect();
    for i in 0..MANY_EXTENT_BLOCKS {
        file.write_all_at(&blocks[(i % 7) as usize], i * 8192)
            .unwrap();
    }
    file.set_len(MANY_EXTENT_BLOCKS * 8192 + 4096).unwrap();
    drop(file);
    if fs::metadata(&path).unwrap().blocks() * 512 > MANY_EXTENT_BLOCKS * 4096 + (1 << 20) {
        skip(test, "this file system does not keep 4 KiB holes");
        return None;
    }
    Some(path)
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic compressible text, like a SQL dump.
pub fn text_like(len: usize, seed: u64) -> Vec<u8> {
    let words = pseudo_random(len / 4 + 64, seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0usize;
    while out.len() < len {
        let n = u32::from_le_bytes(words[i % (words.len() - 4)..][..4].try_into().unwrap());
        out.extend_from_slice(
            format!(
                "{}\tuser{}\tpost title {}\t2026-11-{:02}\n",
                i,
                n % 5000,
                n % 977,
                n % 28 + 1
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Every object of a repository, as (path, bytes).
pub fn all_objects(backend: &dyn Backend) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        "config".to_owned(),
        backend.read("config", None).expect("config"),
    )];
    for dir in ["keys", "data", "index", "snapshots"] {
        for info in backend.list(dir).expect("list") {
            let bytes = backend.read(&info.path, None).expect("read");
            out.push((info.path, bytes));
        }
    }
    out
}

/// Everything restore must reproduce, per relative path.
pub fn describe(root: &Path) -> HashMap<PathBuf, String> {
    describe_impl(root, true)
}

/// [`describe`] with mtimes in whole seconds (what tar keeps).
pub fn describe_seconds(root: &Path) -> HashMap<PathBuf, String> {
    describe_impl(root, false)
}

fn describe_impl(root: &Path, nanoseconds: bool) -> HashMap<PathBuf, String> {
    let mut out = HashMap::new();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let md = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let nsec = if nanoseconds { md.mtime_nsec() } else { 0 };
            let mut d = format!(
                "mode {:o} owner {}:{} mtime {}.{nsec}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.mtime(),
            );
            if md.is_dir() {
                stack.push(path.clone());
            } else if md.file_type().is_symlink() {
                let _ = write!(d, " -> {}", fs::read_link(&path).unwrap().display());
            } else if md.is_file() {
                let _ = write!(
                    d,
                    " size {} blake3 {}",
                    md.len(),
                    blake3::hash(&fs::read(&path).unwrap()).to_hex()
                );
                if md.nlink() > 1 {
                    let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                    let _ = write!(d, " linked-with {}", first.display());
                }
            }
            let mut names: Vec<_> = xattr::list(&path)
                .map(Iterator::collect)
                .unwrap_or_default();
            names.sort();
            for name in names {
                let v = xattr::get(&path, &name).unwrap().unwrap_or_default();
                let _ = write!(
                    d,
                    " xattr {}={}",
                    name.to_string_lossy(),
                    String::from_utf8_lossy(&v)
                );
            }
            out.insert(rel, d);
        }
    }
    out
}

// ---- the kura binary

pub const BIN: &str = env!("CARGO_BIN_EXE_kura");
pub const FAST_KDF: [&str; 4] = ["--kdf-memory", "19456", "--kdf-passes", "2"];

/// Runs kura on `repo` with none of the caller's KURA_* variables, only
/// those in `env`.
pub fn kura_env(repo: &Path, env: &[(&str, &OsStr)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("-r").arg(repo).args(args);
    for var in [
        "KURA_PASSWORD",
        "KURA_PASSWORD_FILE",
        "KURA_PASSWORD_COMMAND",
        "KURA_REPOSITORY",
        "KURA_NEW_PASSWORD",
        "KURA_TO_PASSWORD",
        "KURA_TO_PASSWORD_FILE",
        "KURA_TO_PASSWORD_COMMAND",
        "KURA_NOW",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run kura")
}

pub fn kura(repo: &Path, password: Option<&str>, args: &[&str]) -> Output {
    match password {
        Some(p) => kura_env(repo, &[("KURA_PASSWORD", OsStr::new(p))], args),
        None => kura_env(repo, &[], args),
    }
}

pub fn init(repo: &Path) {
    let out = kura(repo, Some("pw"), &[&["init"][..], &FAST_KDF].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository at `dir/repo` made with `kura init`, opened by password
/// "pw" with its index cache in `dir/cache`.
pub struct CliRepo {
    pub path: PathBuf,
    cache: PathBuf,
}

impl CliRepo {
    pub fn init(dir: &Path) -> Self {
        let path = dir.join("repo");
        init(&path);
        Self {
            path,
            cache: dir.join("cache"),
        }
    }

    pub fn env(&self) -> [(&'static str, &OsStr); 2] {
        [
            ("KURA_PASSWORD", OsStr::new("pw")),
            ("KURA_CACHE_DIR", self.cache.as_os_str()),
        ]
    }

    /// Runs kura on this repository.
    pub fn run(&self, args: &[&str]) -> Output {
        kura_env(&self.path, &self.env(), args)
    }
}

/// A snapshot object (not stored) of `tree` at `time` for `host`, tagged.
pub fn snapshot_at(
    tree: &str,
    time: i64,
    host: &str,
    tags: &[&str],
) -> kura::format::snapshot::Snapshot {
    kura::format::snapshot::Snapshot {
        version: 1,
        tree: tree.to_owned(),
        parent: None,
        time,
        end_time: time + 1,
        hostname: host.into(),
        username: String::new(),
        paths: vec![kura::format::snapshot::RawPath::from_bytes(b"/x")],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        program: "test".into(),
        incomplete: false,
        summary: kura::format::snapshot::Summary::default(),
        copy_of: None,
    }
}

/// Records that test `test` could not run on this machine: prints a
/// `SKIP:` line and appends it to `target/tmp/skipped-tests.txt`, which
/// `scripts/test.sh` prints and counts after the run (cargo test hides the
/// output of a test that passes, so a skip would otherwise look green).
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIP: {test}: {why}\n");
    eprint!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("recording a skip in {}: {e}", path.display()));
}
