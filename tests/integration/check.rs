//! `kura check` on damaged repositories built by the test: each kind of
//! damage is named with what it affects (exit 14), the unaffected snapshot
//! still restores, and partial data checks cover every pack in turn.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura::backend::{Backend, LocalBackend};
use kura::format::layout;
use kura::format::pack::PackKind;
use kura::id::PackId;
use kura::index::ChunkIndex;
use kura::ops::check::{CheckOptions, Subset, check};
use kura::pack::read_header;
use kura::repo::Repository;

use crate::common::{CliRepo, pseudo_random, stderr};

struct Damaged {
    _dir: tempfile::TempDir,
    cli: CliRepo,
    src: PathBuf,
    /// The data pack holding only the second snapshot's new file.
    second_data_pack: PathBuf,
    first: String,
    second: String,
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(out)))
}

fn data_packs(repo: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for sub in fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in fs::read_dir(sub.path()).unwrap().flatten() {
            out.insert(f.path());
        }
    }
    out
}

/// Two snapshots: the second adds `new.bin`, whose chunks land in packs of
/// their own.
fn two_snapshots() -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.bin"), pseudo_random(1 << 20, 5)).unwrap();
    let backup = || {
        let out = cli.run(&["--json", "backup", src.to_str().unwrap()]);
        json(&out)["snapshot"].as_str().unwrap().to_owned()
    };
    let first = backup();
    let before = data_packs(&cli.path);
    fs::write(src.join("new.bin"), pseudo_random(1 << 20, 6)).unwrap();
    let second = backup();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&cli.path));
    let repo = Repository::open(backend, b"pw").unwrap();
    let second_data_pack = data_packs(&cli.path)
        .difference(&before)
        .find(|p| {
            let id = PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let size = fs::metadata(p).unwrap().len();
            read_header(&repo, &id, size).unwrap().kind == PackKind::Data
        })
        .unwrap()
        .clone();
    Damaged {
        _dir: dir,
        cli,
        src,
        second_data_pack,
        first,
        second,
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::remove_file(path).unwrap(); // objects are read-only hard links
    fs::write(path, bytes).unwrap();
}

fn one_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()
}

/// The first snapshot restores byte-identical despite the damage.
fn first_still_restores(d: &Damaged) {
    let target = d
        .cli
        .path
        .with_file_name(format!("restore-{}", &d.first[..8]));
    let out = d
        .cli
        .run(&["restore", &d.first, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target
        .join(d.src.strip_prefix("/").unwrap())
        .join("old.bin");
    assert_eq!(
        fs::read(restored).unwrap(),
        fs::read(d.src.join("old.bin")).unwrap()
    );
}

#[test]
fn a_clean_repository_checks_clean_with_and_without_data() {
    let d = two_snapshots();
    for args in [
        &["--json", "check"][..],
        &["--json", "check", "--read-data"],
    ] {
        let out = d.cli.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let r = json(&out);
        assert_eq!(r["clean"], true);
        assert_eq!(r["snapshots"], 2);
    }
}

#[test]
fn a_missing_pack_is_named_with_the_files_it_takes() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let r = json(&out);
    let text = r["damage"].to_string();
    let pack = d.second_data_pack.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("pack {pack}")) && text.contains("missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} /", &d.second[..16])) && text.contains("new.bin"),
        "{text}"
    );
    assert!(
        !text.contains(&d.first[..16]),
        "the first snapshot is not affected: {text}"
    );
    first_still_restores(&d);
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_read_data() {
    let d = two_snapshots();
    flip(&d.second_data_pack, 100);
    let out = d.cli.run(&["--json", "check"]);
    assert!(
        out.status.success(),
        "structure alone cannot see it: {}",
        stderr(&out)
    );
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let text = json(&out)["damage"].to_string();
    assert!(
        text.contains("damaged pack") && text.contains("new.bin"),
        "{text}"
    );
    assert!(!text.contains(&d.first[..16]), "{text}");
    first_still_restores(&d);
}

#[test]
fn truncated_pack_index_and_snapshot_damage_are_named() {
    let d = two_snapshots();
    // A truncated pack.
    let bytes = fs::read(&d.second_data_pack).unwrap();
    fs::remove_file(&d.second_data_pack).unwrap();
    fs::write(&d.second_data_pack, &bytes[..bytes.len() - 10]).unwrap();
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    assert!(
        json(&out)["damage"].to_string().contains("bytes; index"),
        "{}",
        json(&out)
    );
    fs::remove_file(&d.second_data_pack).unwrap();
    fs::write(&d.second_data_pack, &bytes).unwrap();
    assert!(d.cli.run(&["check"]).status.success());
    // A flipped byte in an index file.
    let index_file = one_file(&d.cli.path.join("index"));
    flip(&index_file, 50);
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    let name = index_file.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        json(&out)["damage"]
            .to_string()
            .contains(&format!("index {name}"))
    );
    flip(&index_file, 50);
    // A flipped byte in a snapshot.
    let snap = d.cli.path.join("snapshots").join(&d.second);
    flip(&snap, 60);
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    assert!(
        json(&out)["damage"]
            .to_string()
            .contains(&format!("snapshot {}", d.second))
    );
    first_still_restores(&d);
}

#[test]
fn read_data_subsets_cover_every_pack_within_their_period() {
    use crate::common::{PASSWORD, memory_repo};
    let (_backend, repo) = memory_repo();
    let index = ChunkIndex::open(None).unwrap();
    // Enough data for a dozen packs.
    let store = kura::chunkstore::ChunkStore::new(
        &repo,
        &index,
        kura::chunkstore::ChunkStoreOptions::default(),
    );
    for i in 0..12u64 {
        store
            .put_stream(&pseudo_random(5 << 20, 900 + 2 * i)[..])
            .unwrap();
    }
    store.flush().unwrap();
    drop(store);
    let _ = PASSWORD;
    let packs: Vec<PackId> = repo
        .backend()
        .list(layout::DATA_DIR)
        .unwrap()
        .iter()
        .map(|i| layout::parse_pack_path(&i.path).unwrap())
        .collect();
    assert!(packs.len() >= 7, "{} packs", packs.len());
    let per_night = packs.len().div_ceil(7);
    for night in 0..7 {
        let options = CheckOptions {
            read_data: Some(Subset::Fraction(1, 7)),
        };
        let r = check(&repo, &index, &options).unwrap();
        assert!(r.is_clean());
        assert_eq!(r.packs_read, per_night, "night {night}");
    }
    for p in &packs {
        assert!(
            index.verified_at(p).unwrap().is_some(),
            "pack {p} never read"
        );
    }
}

#[test]
fn repair_index_drops_a_lost_pack_and_the_next_backup_is_whole() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let out = d.cli.run(&["--json", "repair", "index", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["index_files_written"], 0);
    assert!(
        d.cli.run(&["check"]).status.code() == Some(14),
        "dry run changed nothing"
    );
    let out = d.cli.run(&["--json", "repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    assert!(r["index_files_deleted"].as_u64().unwrap() >= 2, "{r}");
    // The lost data is now simply absent from the index: the second
    // snapshot is still damaged, the first is whole.
    let out = d.cli.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(14));
    let text = json(&out)["damage"].to_string();
    assert!(
        text.contains("is in no index") && text.contains(&d.second[..16]),
        "{text}"
    );
    assert!(!text.contains("missing (named by index"), "{text}");
    // A new backup stores the lost chunks again: its snapshot is whole.
    let out = d.cli.run(&["--json", "backup", d.src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let third = json(&out)["snapshot"].as_str().unwrap().to_owned();
    let out = d.cli.run(&["--json", "check", "--read-data"]);
    let text = json(&out)["damage"].to_string();
    assert!(
        !text.contains(&third[..16]),
        "the new snapshot is whole: {text}"
    );
    let target = d.cli.path.with_file_name("restore-third");
    let out = d
        .cli
        .run(&["restore", &third, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(d.src.strip_prefix("/").unwrap());
    for name in ["old.bin", "new.bin"] {
        assert_eq!(
            fs::read(restored.join(name)).unwrap(),
            fs::read(d.src.join(name)).unwrap()
        );
    }
    first_still_restores(&d);
}
