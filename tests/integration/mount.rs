//! `kura mount` against the real kernel (FUSE): the kura binary mounts
//! into a temporary directory; every file of every nightly snapshot reads
//! back byte for byte with its metadata, `by-date` picks the snapshot in
//! effect at the end of each day, holes are found with SEEK_DATA, a
//! snapshot made while mounted appears, device nodes do not open, writes
//! are EROFS, a missing pack fails only its file, the remote backends
//! serve the same, and SIGTERM unmounts. Without /dev/fuse or permission
//! to mount, each test prints a SKIP line (`common::skip`).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    BIN, CliRepo, FAST_KDF, MANY_EXTENT_BLOCKS, describe, many_extents_file, pseudo_random, skip,
    stderr,
};
use crate::nightly::{add_extras, gen_site};
use crate::servers::{shared_garage, shared_sshd};

const EROFS: i32 = 30;
const EACCES: i32 = 13;
const EIO: i32 = 5;
const ENXIO: i32 = 6;
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;
/// Bound on waiting for the mount to come and go (a debug build over SFTP
/// takes a few seconds).
const WAIT: Duration = Duration::from_secs(60);

/// A running `kura mount`; dropping it unmounts and kills it.
struct Mounted {
    child: Child,
    point: PathBuf,
    log: PathBuf,
}

fn mounted(point: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(point.to_str().unwrap()))
}

impl Mounted {
    /// Runs `cmd` (a `kura ... mount POINT` command) and waits until the
    /// mount is there; `None` (after a SKIP line) where FUSE is missing or
    /// mounting is not permitted.
    fn start(test: &str, mut cmd: Command, point: &Path) -> Option<Self> {
        if !Path::new("/dev/fuse").exists() {
            skip(test, "/dev/fuse is missing");
            return None;
        }
        let point = fs::canonicalize(point).unwrap();
        let log = point.with_extension("log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start kura mount");
        let mut m = Self { child, point, log };
        let deadline = Instant::now() + WAIT;
        while !mounted(&m.point) {
            if let Some(status) = m.child.try_wait().unwrap() {
                let log = m.log_text();
                if log.contains("fusermount") || log.contains("Operation not permitted") {
                    skip(test, &format!("mounting is not permitted here: {log}"));
                    return None;
                }
                panic!("kura mount exited {status}: {log}");
            }
            assert!(Instant::now() < deadline, "not mounted: {}", m.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.point.join(rel)
    }

    /// Sends SIGTERM and waits for kura to end.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "kura did not end on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if mounted(&self.point) {
            for tool in ["fusermount3", "fusermount"] {
                let unmounted = Command::new(tool)
                    .args(["-u", "-z"])
                    .arg(&self.point)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if unmounted {
                    break;
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mount_cmd(cli: &CliRepo, point: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("KURA_PASSWORD_FILE")
        .env_remove("KURA_PASSWORD_COMMAND")
        .env_remove("KURA_NOW")
        .envs(cli.env())
        .arg("-r")
        .arg(&cli.path)
        .arg("mount")
        .arg(point)
        .args(extra);
    cmd
}

/// A sparse disk image: 64 MiB with data at 1 MiB and 40 MiB only.
fn sparse_image(path: &Path) {
    let f = fs::File::create(path).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pseudo_random(256 << 10, 7), 1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pseudo_random(4096, 8), 40 << 20).unwrap();
}

fn lseek(f: &fs::File, offset: i64, whence: i32) -> std::io::Result<i64> {
    nix::unistd::lseek(
        f,
        offset,
        match whence {
            SEEK_DATA => nix::unistd::Whence::SeekData,
            _ => nix::unistd::Whence::SeekHole,
        },
    )
    .map_err(std::io::Error::from)
}

fn backup_at(cli: &CliRepo, site: &Path, now: &str) -> String {
    let mut cmd = Command::new(BIN);
    let out = cmd
        .env_remove("KURA_PASSWORD_FILE")
        .envs(cli.env())
        .env("KURA_NOW", now)
        .arg("-r")
        .arg(&cli.path)
        .args(["--json", "backup", "--host", "web1", "--tag", "nightly"])
        .arg(site)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["snapshot"].as_str().unwrap().to_owned()
}

/// The directory of `site` in a snapshot directory of the mount.
fn site_in(snapshot_dir: &Path, site: &Path) -> PathBuf {
    snapshot_dir.join(site.strip_prefix("/").unwrap())
}

fn assert_same_tree(got: &Path, want: &std::collections::HashMap<PathBuf, String>, what: &str) {
    let got = describe(got);
    assert_eq!(got.len(), want.len(), "{what}: number of entries");
    for (path, d) in want {
        assert_eq!(got.get(path), Some(d), "{what}: {}", path.display());
    }
}

/// One directory name in `dir` that starts with `prefix`.
fn entry_starting(dir: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

const NIGHTS: [&str; 3] = [
    "2026-12-01T03:00:00Z",
    "2026-12-02T03:00:00Z",
    "2026-12-04T03:00:00Z",
];

#[test]
fn nightly_snapshots_read_back_through_the_mount_with_their_metadata() {
    let test = "mount::nightly_snapshots_read_back_through_the_mount_with_their_metadata";
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let cli = CliRepo::init(dir.path());
    let mut nights = Vec::new();
    for (night, now) in NIGHTS.iter().enumerate() {
        gen_site(&site, night as u32);
        if night == 0 {
            add_extras(&site);
            sparse_image(&site.join("extras/disk.img"));
            let dev = nix::sys::stat::makedev(1, 3);
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
            nix::sys::stat::mknod(
                &site.join("extras/null"),
                nix::sys::stat::SFlag::S_IFCHR,
                mode,
                dev,
            )
            .unwrap();
        }
        let id = backup_at(&cli, &site, now);
        nights.push((id, describe(&site)));
    }
    let point = dir.path().join("mnt");
    fs::create_dir(&point).unwrap();
    let Some(mut m) = Mounted::start(test, mount_cmd(&cli, &point, &["--refresh", "0"]), &point)
    else {
        return;
    };

    // Every file of every night, byte for byte and with its metadata.
    for (night, (id, want)) in nights.iter().enumerate() {
        let snap = entry_starting(&m.path("snapshots"), &NIGHTS[night][..19]);
        assert!(
            snap.to_str().unwrap().ends_with(&id[..8]),
            "{}",
            snap.display()
        );
        assert_same_tree(&site_in(&snap, &site), want, &format!("night {night}"));
        let by_host = m.path(&format!("hosts/web1/{}", NIGHTS[night]));
        let by_tag = m.path(&format!("tags/nightly/{}", NIGHTS[night]));
        for other in [by_host, by_tag] {
            assert!(
                site_in(&other, &site).join("extras").is_dir(),
                "{}",
                other.display()
            );
        }
    }
    let latest = fs::read_link(m.path("latest")).unwrap();
    assert!(
        latest.to_str().unwrap().ends_with(&nights[2].0[..8]),
        "{}",
        latest.display()
    );

    by_date_is_the_snapshot_in_effect_at_the_end_of_the_day(&m, &site, &nights[1].1);
    let first = entry_starting(&m.path("snapshots"), &NIGHTS[0][..19]);
    holes_devices_and_writes(&first, &m, &site);

    // A snapshot made while mounted appears (the listing is re-read).
    gen_site(&site, 3);
    let fourth = backup_at(&cli, &site, "2026-12-05T03:00:00Z");
    let want = describe(&site);
    let deadline = Instant::now() + WAIT;
    while fs::read_dir(m.path("snapshots")).unwrap().count() < 4 {
        assert!(Instant::now() < deadline, "the new snapshot did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    let snap = entry_starting(&m.path("snapshots"), "2026-12-05T03:00:00Z");
    assert!(snap.to_str().unwrap().ends_with(&fourth[..8]));
    assert_same_tree(
        &site_in(&snap, &site),
        &want,
        "the snapshot made while mounted",
    );
    let latest = fs::read_link(m.path("latest")).unwrap();
    assert!(
        latest.to_str().unwrap().ends_with(&fourth[..8]),
        "{}",
        latest.display()
    );

    // The kernel drops its dentries and inodes and forgets them; kura
    // drops its nodes too, and every name reads back the same, looked up
    // anew.
    if fs::write("/proc/sys/vm/drop_caches", "2").is_ok() {
        let (_, want) = &nights[0];
        let snap = entry_starting(&m.path("snapshots"), &NIGHTS[0][..19]);
        assert_same_tree(&site_in(&snap, &site), want, "night 0 after forget");
    } else {
        crate::common::skip(
            &format!("{test} (forget)"),
            "cannot drop the kernel's caches here",
        );
    }

    // SIGTERM unmounts and kura exits 0.
    let status = m.terminate();
    assert!(status.success(), "{status}: {}", m.log_text());
    assert!(!mounted(&m.point), "still in /proc/self/mounts");
}

fn by_date_is_the_snapshot_in_effect_at_the_end_of_the_day(
    m: &Mounted,
    site: &Path,
    second_night: &std::collections::HashMap<PathBuf, String>,
) {
    let days: Vec<String> = {
        let mut d: Vec<String> = fs::read_dir(m.path("by-date"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        days,
        ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    );
    // A day dir is dated by the snapshot it shows.
    let night_of = |day: &str| {
        let t = fs::metadata(m.path(&format!("by-date/{day}")))
            .unwrap()
            .mtime();
        let t = kura::snapshot::parse_instant(&format!("@{t}")).unwrap();
        NIGHTS
            .iter()
            .position(|n| kura::snapshot::parse_instant(n).unwrap() == t)
            .unwrap_or_else(|| panic!("{day} shows no night"))
    };
    assert_eq!(night_of("2026-12-01"), 0);
    assert_eq!(night_of("2026-12-02"), 1);
    assert_eq!(night_of("2026-12-03"), 1, "the day without a backup");
    assert_eq!(night_of("2026-12-04"), 2);
    assert_eq!(night_of("2027-01-01"), 2, "a later day");
    assert!(
        !m.path("by-date/2026-11-30").exists(),
        "before the first snapshot"
    );
    assert!(!m.path("by-date/2026-02-30").exists());
    assert_same_tree(
        &site_in(&m.path("by-date/2026-12-03"), site),
        second_night,
        "by-date/2026-12-03",
    );
}

/// Checks in the snapshot at `snap` (the first night's, where the hard
/// link is still one).
fn holes_devices_and_writes(snap: &Path, m: &Mounted, site: &Path) {
    let extras = site_in(snap, site).join("extras");
    // The sparse image: holes found where they are, and read as zeros.
    let f = fs::File::open(extras.join("disk.img")).unwrap();
    assert_eq!(lseek(&f, 0, SEEK_DATA).unwrap(), 1 << 20);
    let hole = lseek(&f, 1 << 20, SEEK_HOLE).unwrap();
    assert!(
        ((1 << 20) + (256 << 10)..40 << 20).contains(&hole),
        "hole at {hole}"
    );
    let data = lseek(&f, hole, SEEK_DATA).unwrap();
    assert!(data > hole && data <= 40 << 20, "data at {data}");
    assert_eq!(lseek(&f, 41 << 20, SEEK_HOLE).unwrap(), 41 << 20);
    assert_eq!(
        lseek(&f, 63 << 20, SEEK_DATA).unwrap_err().raw_os_error(),
        Some(ENXIO)
    );
    let mut f = f;
    let mut buf = vec![1u8; 4096];
    f.seek(SeekFrom::Start(20 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(
        fs::metadata(extras.join("disk.img")).unwrap().blocks() < 4096,
        "holes take no blocks"
    );

    // A device node is listed with its type and number, and does not open.
    let null = fs::symlink_metadata(extras.join("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let e = fs::File::open(extras.join("null")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EACCES), "{e}");

    // Hard links share an inode; nlink as stored.
    let a = fs::metadata(extras.join("nginx.conf")).unwrap();
    let b = fs::metadata(site_in(snap, site).join("config/nginx.conf")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));

    // Every write is EROFS.
    let e = fs::write(extras.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EROFS), "{e}");
    let e = fs::OpenOptions::new()
        .write(true)
        .open(extras.join("secret.key"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EROFS), "{e}");
    for e in [
        fs::create_dir(extras.join("d")).unwrap_err(),
        fs::remove_file(extras.join("secret.key")).unwrap_err(),
        fs::rename(extras.join("secret.key"), extras.join("k")).unwrap_err(),
        fs::set_permissions(extras.join("secret.key"), fs::Permissions::from_mode(0o644))
            .unwrap_err(),
        xattr::set(extras.join("secret.key"), "user.x", b"y").unwrap_err(),
        fs::create_dir(m.path("snapshots/new")).unwrap_err(),
    ] {
        assert_eq!(e.raw_os_error(), Some(EROFS), "{e}");
    }
}

#[test]
fn a_missing_pack_fails_only_the_files_that_need_it() {
    let test = "mount::a_missing_pack_fails_only_the_files_that_need_it";
    let d = crate::check::two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let before = repository_files(&d.cli.path);
    let point = d.src.parent().unwrap().join("mnt");
    fs::create_dir(&point).unwrap();
    let Some(m) = Mounted::start(test, mount_cmd(&d.cli, &point, &[]), &point) else {
        return;
    };
    let src = site_in(&m.path("latest"), &d.src);
    let e = fs::read(src.join("new.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EIO), "{e}");
    assert_eq!(
        fs::read(src.join("old.bin")).unwrap(),
        pseudo_random(1 << 20, 5)
    );
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    let log = m.log_text();
    assert!(
        log.contains(pack) && log.contains("new.bin"),
        "the warning names the pack: {log}"
    );
    drop(m);
    assert_eq!(
        repository_files(&d.cli.path),
        before,
        "the mount wrote nothing"
    );
}

/// Every file of a local repository with its size and mtime.
fn repository_files(repo: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let md = fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                stack.push(path);
            } else {
                out.push((path, md.len(), md.mtime(), md.mtime_nsec()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_busy_or_non_empty_mount_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("f"), b"x").unwrap();
    let out = mount_cmd(&cli, &full, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    let out = mount_cmd(&cli, &dir.path().join("missing"), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = mount_cmd(&cli, Path::new("/proc"), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("mount point"), "{}", stderr(&out));
}

/// A small tree with a symlink and an xattr, backed up to `url`, mounted
/// and compared.
fn remote_mount(test: &str, url: &str, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big.bin"), pseudo_random(3 << 20, 11)).unwrap();
    fs::write(src.join("sub/small.txt"), b"small\n").unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("sub/link")).unwrap();
    xattr::set(src.join("sub/small.txt"), "user.k", b"v").unwrap();
    let kura = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("KURA_PASSWORD_FILE")
            .env_remove("KURA_NOW")
            .env("KURA_PASSWORD", "pw")
            .env("KURA_CACHE_DIR", dir.path().join("cache"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["-r", url])
            .args(args);
        cmd
    };
    let out = kura(&[&["init"][..], &FAST_KDF].concat()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kura(&["backup", src.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = describe(&src);
    let point = dir.path().join("mnt");
    fs::create_dir(&point).unwrap();
    let mut cmd = kura(&["mount"]);
    cmd.arg(&point);
    let Some(mut m) = Mounted::start(test, cmd, &point) else {
        return;
    };
    assert_same_tree(&site_in(&m.path("latest"), &src), &want, test);
    assert!(m.terminate().success(), "{}", m.log_text());
}

#[test]
fn a_repository_over_sftp_mounts() {
    let sshd = shared_sshd();
    let (_, url) = sshd.new_repo_dir("mount");
    remote_mount("mount::a_repository_over_sftp_mounts", &url, &sshd.env());
}

#[test]
fn a_repository_on_s3_mounts() {
    let garage = shared_garage();
    let url = format!("s3://{}/repo", garage.bucket("mount"));
    remote_mount("mount::a_repository_on_s3_mounts", &url, &garage.env());
}

#[test]
fn a_file_of_several_extent_lists_reads_and_seeks_through_the_mount() {
    // 33,000 extents, three extent lists (as `images::a_file_of_several_...`).
    const LIST_BYTES: u64 = 16_384 * 4096; // the span of a full list
    let test = "mount::a_file_of_several_extent_lists_reads_and_seeks_through_the_mount";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let Some(path) = many_extents_file(&src, test) else {
        return;
    };
    let size = fs::metadata(&path).unwrap().len();
    let want = fs::read(&path).unwrap();
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let point = dir.path().join("mnt");
    fs::create_dir(&point).unwrap();
    let Some(m) = Mounted::start(test, mount_cmd(&cli, &point, &[]), &point) else {
        return;
    };
    let mounted_path = site_in(&m.path("latest"), &src).join("many-extents.img");
    let mut f = fs::File::open(&mounted_path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), size);

    // The start, the 2nd and 3rd lists, back to the 1st, across a seam
    // between lists, and the very end (a short read).
    for at in [
        0,
        LIST_BYTES + 3 * 8192 + 100,
        2 * LIST_BYTES + 5000,
        12_345,
        LIST_BYTES - 6000,
        2 * LIST_BYTES - 1,
        LIST_BYTES + 1,
        size - 10_000,
    ] {
        let mut got = Vec::new();
        f.seek(SeekFrom::Start(at)).unwrap();
        (&mut f).take(20_000).read_to_end(&mut got).unwrap();
        let to = (at + 20_000).min(size) as usize;
        assert!(got == want[at as usize..to], "bytes at {at} differ");
    }
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(size)).unwrap();
    f.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty());

    // Holes and data in every list, and across seams.
    let last_data = (MANY_EXTENT_BLOCKS - 1) * 8192;
    for (from, whence, at) in [
        (0, SEEK_HOLE, 4096),
        (4096, SEEK_DATA, 8192),
        (LIST_BYTES - 10, SEEK_DATA, LIST_BYTES),
        (LIST_BYTES + 10, SEEK_HOLE, LIST_BYTES + 4096),
        (2 * LIST_BYTES - 1, SEEK_DATA, 2 * LIST_BYTES),
        (
            2 * LIST_BYTES + 8192 + 7,
            SEEK_DATA,
            2 * LIST_BYTES + 8192 + 7,
        ),
        (last_data, SEEK_HOLE, last_data + 4096),
        (12_288, SEEK_HOLE, 12_288),
    ] {
        let got = lseek(&f, i64::try_from(from).unwrap(), whence).unwrap();
        assert_eq!(got, i64::try_from(at).unwrap(), "{whence} from {from}");
    }
    let e = lseek(&f, i64::try_from(last_data + 4096).unwrap(), SEEK_DATA).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENXIO), "{e}");

    // The whole file, sequentially (readahead across the seams).
    assert!(fs::read(&mounted_path).unwrap() == want, "the file differs");
}
