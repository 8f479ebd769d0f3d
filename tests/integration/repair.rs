//! `kura repair snapshots`: snapshots that need lost data are rewritten to
//! restore the rest, whole snapshots are not touched, data that still
//! reads from a damaged pack is kept, and with `repair index` the
//! repository checks clean.

use std::collections::{HashMap, HashSet};
use std::fs;

use kura::chunkstore::index::BlobLocation;

use crate::check::{
    Damaged, backup, checks_clean, damage_found, first_chunk, flip, json, open_library, pack_file,
    restores_exactly, snapshot_ids, two_snapshots,
};
use crate::common::{CliRepo, pseudo_random, stderr};

fn tags_of(d: &Damaged, id: &str) -> (Vec<String>, i64) {
    let out = d.cli.run(&["--json", "snapshots"]);
    let all = json(&out);
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no snapshot {id}: {all}"));
    let tags = row["snapshot"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (tags, row["snapshot"]["time"].as_i64().unwrap())
}

#[test]
fn repair_snapshots_drops_the_files_of_a_lost_pack() {
    let d = two_snapshots();
    fs::remove_file(&d.second_data_pack).unwrap();
    let new_bin = format!("{}/new.bin", d.src.display());
    let before = snapshot_ids(&d);
    // Naming only the whole snapshot changes nothing.
    let out = d
        .cli
        .run(&["--json", "repair", "snapshots", &d.first[..10]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["snapshots"].as_array().unwrap().len(), 0);
    let out = d.cli.run(&["repair", "snapshots", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "snapshot {}: drop {new_bin} (blob ",
            &d.second[..16]
        )),
        "{text}"
    );
    assert!(
        text.contains("would replace") && !text.contains(&d.first[..16]),
        "{text}"
    );
    assert_eq!(snapshot_ids(&d), before, "a dry run changes nothing");
    let out = d.cli.run(&["--json", "repair", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    let done = &r["snapshots"].as_array().unwrap()[..];
    assert_eq!(done.len(), 1, "{r}");
    assert_eq!(done[0]["snapshot"], d.second.as_str());
    assert_eq!(done[0]["action"], "replaced");
    assert_eq!(done[0]["dropped"][0]["path"], new_bin.as_str());
    assert_eq!(done[0]["dropped"][0]["kind"], "file");
    let repaired = done[0]["new_snapshot"].as_str().unwrap().to_owned();
    assert_eq!(
        snapshot_ids(&d),
        HashSet::from([d.first.clone(), repaired.clone()]),
        "the whole snapshot is untouched, the damaged one replaced"
    );
    let (tags, time) = tags_of(&d, &repaired);
    assert_eq!(tags, ["repaired"]);
    assert!(
        time > tags_of(&d, &d.first).1,
        "the original's time is kept"
    );
    // The snapshots are whole; the index still names the lost pack.
    let text = damage_found(&d, &[]);
    assert!(
        text.contains("missing") && !text.contains("affects\":[\""),
        "{text}"
    );
    let out = d.cli.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
    restores_exactly(&d, &repaired, &["old.bin"], &[]);
    // Nothing is left to repair.
    let out = d.cli.run(&["--json", "repair", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["snapshots"].as_array().unwrap().len(), 0);
    assert_eq!(snapshot_ids(&d).len(), 2);
}

/// A second snapshot adds eight files, which share two packs; each is
/// large enough (600 kB) to be a compression group of its own (smaller
/// files are gathered into shared groups, and damage to a group is damage
/// to every file in it).
fn small_files() -> (Damaged, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.bin"), pseudo_random(100_000, 1)).unwrap();
    let first = backup(&cli, &src);
    let names: Vec<String> = (0..8).map(|i| format!("f{i}.bin")).collect();
    for (i, name) in (0u64..).zip(&names) {
        fs::write(src.join(name), pseudo_random(600_000, 1000 + 2 * i)).unwrap();
    }
    let second = backup(&cli, &src);
    let d = Damaged {
        second_data_pack: src.clone(),
        second_index: src.clone(),
        dir,
        cli,
        src,
        first,
        second,
    };
    (d, names)
}

#[test]
fn repair_snapshots_keeps_what_a_damaged_pack_still_holds() {
    let (d, names) = small_files();
    let (repo, index) = open_library(&d);
    // The pack holding most of the new files (at least four of eight).
    let mut by_pack: HashMap<_, Vec<(&str, BlobLocation)>> = HashMap::new();
    for name in &names {
        let chunk = first_chunk(&repo, &index, &d.second, &d.src.join(name));
        let loc = index.lookup(&chunk).unwrap().unwrap();
        by_pack.entry(loc.pack).or_default().push((name, loc));
    }
    let (pack, shared) = by_pack.iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(shared.len() >= 4);
    let (victim, loc) = shared[0];
    flip(
        &pack_file(&d.cli.path, pack),
        (loc.offset + loc.stored_len / 2) as usize,
    );
    drop((repo, index));
    let text = damage_found(&d, &["--read-data"]);
    for name in &names {
        assert_eq!(
            text.contains(&format!("/{name}\"")),
            *name == victim,
            "{name}: {text}"
        );
    }
    let out = d.cli.run(&["--json", "repair", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    let dropped = r["snapshots"][0]["dropped"].as_array().unwrap().clone();
    assert_eq!(dropped.len(), 1, "{r}");
    assert!(
        dropped[0]["path"].as_str().unwrap().ends_with(victim),
        "{r}"
    );
    assert!(
        r["blobs_salvaged"].as_u64().unwrap() >= shared.len() as u64 - 1,
        "the rest of the damaged pack is stored again: {r}"
    );
    let repaired = r["snapshots"][0]["new_snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    // Dropping the damaged pack from the index now loses nothing more.
    let out = d.cli.run(&["repair", "index", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    checks_clean(&d);
    let mut kept: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != victim)
        .collect();
    kept.push("old.bin");
    restores_exactly(&d, &repaired, &kept, &[]);
    restores_exactly(&d, &d.first, &["old.bin"], &[]);
}
