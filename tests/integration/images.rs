//! Disk images and block devices: `backup --image` reads the content and
//! records runs of zeros as holes; `restore --image --to` writes a sparse
//! file or back onto a device; a plain restore gives a sparse file.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use crate::common::{
    CliRepo, MANY_EXTENT_BLOCKS, many_extents_file, pseudo_random, stderr, text_like,
};

const MIB: u64 = 1 << 20;

/// 48 MiB written in full (no file-system holes): data, long zero runs,
/// and a short zero run inside data.
fn make_image(path: &Path) -> Vec<u8> {
    let mut img = vec![0u8; 48 << 20];
    let mut put = |at: u64, bytes: &[u8]| {
        img[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(0, &pseudo_random(4 << 20, 21));
    put(MIB, &[0u8; 16 << 10]); // too short to be a hole
    put(20 * MIB, &text_like(1 << 20, 22));
    put(40 * MIB, &pseudo_random(4 << 20, 23));
    fs::write(path, &img).unwrap();
    img
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// A loop device over `file`, if this machine lets us make one.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Self(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn image_zero_runs_become_holes_and_restore_is_sparse_and_identical() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vm.img");
    let want = make_image(&image);
    assert!(allocated(&image) >= 48 * MIB, "the source has no holes");
    let cli = CliRepo::init(dir.path());
    let image_str = image.to_str().unwrap();
    let out = cli.run(&["--json", "backup", "--image", image_str]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["bytes"], 48 << 20);
    let stored = report["summary"]["bytes_stored"].as_u64().unwrap();
    assert!(stored < 10 * MIB, "stored {stored}: zero runs were stored");

    // To a file, through --image/--to: identical and sparse.
    let out_img = dir.path().join("out.img");
    let out = cli.run(&[
        "restore",
        "latest",
        "--image",
        image_str,
        "--to",
        out_img.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs::read(&out_img).unwrap() == want,
        "restored image differs"
    );
    assert!(allocated(&out_img) < 12 * MIB, "{}", allocated(&out_img));

    // A plain restore puts it at its path, sparse as well.
    let target = dir.path().join("target");
    let out = cli.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(image.strip_prefix("/").unwrap());
    assert!(fs::read(&restored).unwrap() == want);
    assert!(allocated(&restored) < 12 * MIB);
}

#[test]
fn block_device_backs_up_and_restores_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let want = make_image(&image);
    let Some(source) = Loop::attach(&image) else {
        // Containers without loop devices: the file path of the same code
        // is covered by the test above.
        crate::common::skip(
            "images: block device backup and restore",
            "no loop device available here",
        );
        return;
    };
    // The restore target: a device full of garbage, larger than the image.
    let garbage = dir.path().join("target.img");
    fs::write(&garbage, vec![0xAAu8; 56 << 20]).unwrap();
    let target = Loop::attach(&garbage).expect("a second loop device");
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["--json", "backup", "--image", &source.0]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["bytes"], 48 << 20, "device size via seek");
    let out = cli.run(&["restore", "latest", "--image", &source.0, "--to", &target.0]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(target);
    let got = fs::read(&garbage).unwrap();
    assert!(
        got[..want.len()] == want[..],
        "device content differs (holes not zeroed?)"
    );
    assert!(
        got[want.len()..].iter().all(|&b| b == 0xAA),
        "wrote past the image"
    );
    // A device smaller than the image is refused before anything is written.
    let small = dir.path().join("small.img");
    let small_file = fs::File::create(&small).unwrap();
    small_file.write_all_at(&[0x55; 1], (32 << 20) - 1).unwrap();
    let small_dev = Loop::attach(&small).expect("a third loop device");
    let out = cli.run(&[
        "restore",
        "latest",
        "--image",
        &source.0,
        "--to",
        &small_dev.0,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds"), "{}", stderr(&out));

    // Through a root-owned symlink to the device (as /dev/disk/by-id/...
    // names are): followed. The same link owned by another user: refused,
    // the device untouched.
    fs::write(&garbage, vec![0xAAu8; 56 << 20]).unwrap();
    let target = Loop::attach(&garbage).expect("a loop device");
    let link = dir.path().join("by-id-link");
    std::os::unix::fs::symlink(&target.0, &link).unwrap();
    let restore_via_link = || {
        cli.run(&[
            "restore",
            "latest",
            "--image",
            &source.0,
            "--to",
            link.to_str().unwrap(),
        ])
    };
    if nix::unistd::Uid::effective().is_root() {
        let out = restore_via_link();
        assert!(out.status.success(), "{}", stderr(&out));
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    }
    let out = restore_via_link();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not followed"), "{}", stderr(&out));
    drop(target);
    let got = fs::read(&garbage).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        assert!(got[..want.len()] == want[..], "written through root's link");
    }
}

/// A sparse file of 4 KiB data blocks every 8 KiB: 33 000 extents, so its
/// content is three extent lists (format-spec/10). Restore, resume,
/// `check --read-data`, `dump` and `copy` read it one list at a time
/// (issue 17); each must give the file back whole.
#[test]
fn a_file_of_several_extent_lists_restores_checks_dumps_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let Some(path) = many_extents_file(&src, "images: a file of several extent lists") else {
        return;
    };
    let want = fs::read(&path).unwrap();
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let target = dir.path().join("target");
    let restored = target.join(path.strip_prefix("/").unwrap());
    for round in ["fresh", "over itself"] {
        let out = cli.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "{round}: {}", stderr(&out));
        assert!(fs::read(&restored).unwrap() == want, "{round}: differs");
        assert!(
            allocated(&restored) < MANY_EXTENT_BLOCKS * 4096 + MIB,
            "{round}: not sparse"
        );
    }
    let out = cli.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["dump", "latest", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == want, "dump differs");

    let other = dir.path().join("other");
    crate::common::init(&other);
    let out = cli.run(&[
        "copy",
        "--to",
        other.to_str().unwrap(),
        "--to-password-command",
        "echo pw",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copied = crate::common::kura(
        &other,
        Some("pw"),
        &["dump", "latest", path.to_str().unwrap()],
    );
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert!(copied.stdout == want, "the copy differs");
}
