//! The nightly job end to end: the benchmark corpus (gen_site, a copy in
//! tests/fixtures) evolves over nights 0 to 3, each night is backed up with
//! the CLI, and each snapshot restores byte-identical with its metadata.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::common::{CliRepo, describe, stderr};

const GEN_SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gen_site.py");
const SCALE: &str = "0.05";

pub(crate) fn gen_site(root: &Path, night: u32) {
    let status = Command::new("python3")
        .arg(GEN_SITE)
        .arg(root)
        .args(["--night", &night.to_string(), "--scale", SCALE])
        .status()
        .expect("python3 runs gen_site.py");
    assert!(status.success());
}

/// What gen_site does not make but servers have: links, xattrs, odd modes
/// and names, a FIFO.
pub(crate) fn add_extras(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let extras = root.join("extras");
    fs::create_dir_all(&extras).unwrap();
    symlink("../db/site.sql", extras.join("latest.sql")).unwrap();
    symlink("/nonexistent/target", extras.join("dangling")).unwrap();
    fs::hard_link(root.join("config/nginx.conf"), extras.join("nginx.conf")).unwrap();
    fs::write(extras.join("secret.key"), b"not really a key\n").unwrap();
    fs::set_permissions(extras.join("secret.key"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        extras.join(OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name",
    )
    .unwrap();
    nix::unistd::mkfifo(
        &extras.join("queue"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    xattr::set(root.join("config/wp-config.php"), "user.origin", b"cms").unwrap();
    xattr::set(&extras, "user.note", b"a directory xattr").unwrap();
}

#[test]
fn gen_site_nights_0_to_3_restore_byte_identical_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let cli = CliRepo::init(dir.path());
    let site_str = site.to_str().unwrap();
    let mut expected = Vec::new();
    let mut stored = Vec::new();
    for night in 0..=3 {
        gen_site(&site, night);
        if night == 0 {
            add_extras(&site);
        }
        let out = cli.run(&[
            "--json", "backup", "--host", "web1", "--tag", "nightly", site_str,
        ]);
        assert!(out.status.success(), "night {night}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["incomplete"], false);
        if night > 0 {
            // Unchanged files came from the parent without being read.
            assert!(report["summary"]["files_unchanged"].as_u64().unwrap() > 50);
        }
        stored.push(report["summary"]["bytes_stored"].as_u64().unwrap());
        expected.push((
            report["snapshot"].as_str().unwrap().to_owned(),
            describe(&site),
        ));
    }
    // Later nights store less than the first (at this scale the disk
    // image's fixed 8 MiB of new extents a night dominates).
    for (night, bytes) in stored.iter().enumerate().skip(1) {
        assert!(
            *bytes < stored[0] * 3 / 4,
            "night {night} stored {bytes} vs {}",
            stored[0]
        );
    }
    for (night, (id, want)) in expected.iter().enumerate() {
        let target = dir.path().join(format!("restore-{night}"));
        let out = cli.run(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "night {night}: {}", stderr(&out));
        let got = describe(&target.join(site.strip_prefix("/").unwrap()));
        assert_eq!(got.len(), want.len(), "night {night}");
        for (path, d) in want {
            assert_eq!(got.get(path), Some(d), "night {night}: {}", path.display());
        }
        fs::remove_dir_all(&target).unwrap();
    }
}
