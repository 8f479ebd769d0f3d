//! Retention: snapshots with known times, each policy rule checked against
//! the set it must keep; grouping; and `kura forget` on a repository.

use kura::format::snapshot::Snapshot;
use kura::id::SnapshotId;
use kura::snapshot::retention::{GroupBy, RetentionPolicy, decide};

use crate::common::{CliRepo, snapshot_at, stderr};

const HOUR: i64 = 3600 * 1_000_000_000;

/// Nanoseconds of a UTC time.
fn at(text: &str) -> i64 {
    kura::snapshot::parse_utc(text).unwrap()
}

/// The reader's now in these examples: the newest snapshot's time.
const NOW: &str = "2026-11-26 00:00";

fn snap(time: i64, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
    (
        SnapshotId::random(),
        snapshot_at(&"00".repeat(32), time, host, tags),
    )
}

/// The times (as given) of the snapshots `policy` keeps.
fn kept(policy: &RetentionPolicy, times: &[&str]) -> Vec<String> {
    let snaps: Vec<_> = times.iter().map(|t| snap(at(t), "web1", &[])).collect();
    let decisions = decide(policy, GroupBy::default(), &snaps, at(NOW)).unwrap();
    let mut out: Vec<String> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| {
            let i = snaps.iter().position(|(id, _)| *id == d.id).unwrap();
            times[i].to_owned()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn each_rule_keeps_what_it_should() {
    let p = |f: fn(&mut RetentionPolicy)| {
        let mut policy = RetentionPolicy::default();
        f(&mut policy);
        policy
    };
    let days = [
        "2026-11-01 10:00",
        "2026-11-01 22:00",
        "2026-11-02 05:00",
        "2026-11-03 12:00",
        "2026-11-03 13:00",
        "2026-11-05 00:00",
    ];
    assert_eq!(
        kept(&p(|p| p.last = 2), &days),
        ["2026-11-03 13:00", "2026-11-05 00:00"]
    );
    assert_eq!(
        kept(&p(|p| p.daily = 3), &days),
        ["2026-11-02 05:00", "2026-11-03 13:00", "2026-11-05 00:00"]
    );
    let hours = [
        "2026-11-01 10:05",
        "2026-11-01 10:50",
        "2026-11-01 11:10",
        "2026-11-01 12:30",
    ];
    assert_eq!(
        kept(&p(|p| p.hourly = 2), &hours),
        ["2026-11-01 11:10", "2026-11-01 12:30"]
    );
    // 2026-11-02 is a Monday: weeks 45, 45, 46, 47.
    let weeks = [
        "2026-11-02 01:00",
        "2026-11-08 23:00",
        "2026-11-09 00:30",
        "2026-11-20 12:00",
    ];
    assert_eq!(
        kept(&p(|p| p.weekly = 2), &weeks),
        ["2026-11-09 00:30", "2026-11-20 12:00"]
    );
    assert_eq!(
        kept(&p(|p| p.weekly = 3), &weeks),
        ["2026-11-08 23:00", "2026-11-09 00:30", "2026-11-20 12:00"]
    );
    let months = [
        "2026-09-15 00:00",
        "2026-10-01 00:00",
        "2026-10-31 23:59",
        "2026-11-02 00:00",
    ];
    assert_eq!(
        kept(&p(|p| p.monthly = 2), &months),
        ["2026-10-31 23:59", "2026-11-02 00:00"]
    );
    let years = [
        "2024-06-01 00:00",
        "2025-01-01 00:00",
        "2025-12-31 23:00",
        "2026-03-01 00:00",
    ];
    assert_eq!(
        kept(&p(|p| p.yearly = 2), &years),
        ["2025-12-31 23:00", "2026-03-01 00:00"]
    );
    // Within 48 hours of now: strictly less.
    let within = [
        "2026-11-20 00:00",
        "2026-11-24 00:00",
        "2026-11-24 01:00",
        "2026-11-26 00:00",
    ];
    assert_eq!(
        kept(&p(|p| p.within = Some(48 * HOUR)), &within),
        ["2026-11-24 01:00", "2026-11-26 00:00"]
    );
    // Rules add up: the newest 1, plus the newest of each of 2 months.
    assert_eq!(
        kept(
            &p(|p| {
                p.last = 1;
                p.monthly = 2;
            }),
            &months
        ),
        ["2026-10-31 23:59", "2026-11-02 00:00"]
    );
}

#[test]
fn tags_groups_reasons_and_an_empty_policy() {
    let snaps = vec![
        snap(at("2026-11-01 00:00"), "web1", &["monthly"]),
        snap(at("2026-11-02 00:00"), "web1", &[]),
        snap(at("2026-11-03 00:00"), "web1", &[]),
        snap(at("2026-11-01 00:00"), "db1", &[]),
        snap(at("2026-11-02 00:00"), "db1", &[]),
    ];
    let policy = RetentionPolicy {
        last: 1,
        daily: 1,
        tags: vec!["monthly".into()],
        ..RetentionPolicy::default()
    };
    let d = decide(&policy, GroupBy::default(), &snaps, at(NOW)).unwrap();
    let keep = |i: usize| d.iter().find(|x| x.id == snaps[i].0).unwrap();
    // Per host: the newest of each is kept by last and daily.
    assert_eq!(keep(2).reasons, ["last", "daily"]);
    assert_eq!(keep(4).reasons, ["last", "daily"]);
    assert!(keep(0).keep && keep(0).reasons == ["tag monthly"]);
    assert!(!keep(1).keep && !keep(3).keep);
    // One group for all: only the overall newest and the tagged one.
    let one = decide(&policy, GroupBy::parse("").unwrap(), &snaps, at(NOW)).unwrap();
    assert_eq!(one.iter().filter(|x| x.keep).count(), 2);
    assert!(
        decide(
            &RetentionPolicy::default(),
            GroupBy::default(),
            &snaps,
            at(NOW)
        )
        .is_err()
    );
}

#[test]
fn forget_cli_dry_run_then_delete() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join("f.txt"), format!("night {i}")).unwrap();
        let out = cli.run(&["backup", "--quiet", "--host", "web1", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let count = || {
        let out = cli.run(&["--json", "snapshots"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let packs_before = std::fs::read_dir(cli.path.join("data")).unwrap().count();
    // No rule: refused, nothing deleted.
    let out = cli.run(&["forget"]);
    assert!(!out.status.success());
    assert_eq!(count(), 4);
    let out = cli.run(&["--json", "forget", "--keep-last", "2", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decisions"].as_array().unwrap().len(), 4);
    assert_eq!(report["removed"].as_array().unwrap().len(), 0);
    assert_eq!(count(), 4);
    let out = cli.run(&["--json", "forget", "--keep-last", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"].as_array().unwrap().len(), 2);
    assert_eq!(count(), 2);
    // The newest two remain and restore; data is untouched (prune's job).
    assert_eq!(
        std::fs::read_dir(cli.path.join("data")).unwrap().count(),
        packs_before
    );
    let target = dir.path().join("t");
    let out = cli.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = target.join(src.strip_prefix("/").unwrap()).join("f.txt");
    assert_eq!(std::fs::read_to_string(restored).unwrap(), "night 3");
}

/// Runs kura on `cli` with `KURA_NOW` set to `now`.
fn run_at(cli: &CliRepo, now: &str, args: &[&str]) -> std::process::Output {
    let mut env = cli.env().to_vec();
    env.push(("KURA_NOW", std::ffi::OsStr::new(now)));
    crate::common::kura_env(&cli.path, &env, args)
}

#[test]
fn kura_now_dates_the_snapshot_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), "x").unwrap();
    let src = src.to_str().unwrap();
    for now in ["2026-12-04T03:00:00Z", "@1796353200"] {
        let out = run_at(&cli, now, &["--json", "backup", "--tag", now, src]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cli.run(&["--json", "snapshots"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(
            row["snapshot"]["time"], 1_796_353_200_000_000_000_i64,
            "{row}"
        );
        assert_eq!(row["snapshot"]["end_time"], row["snapshot"]["time"]);
    }
    let text = String::from_utf8_lossy(&cli.run(&["snapshots"]).stdout).into_owned();
    assert!(text.contains("2026-12-04 03:00"), "{text}");
    let out = run_at(&cli, "2026-12-04 03:00", &["backup", "-q", src]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("KURA_NOW"), "{}", stderr(&out));
}

#[test]
fn keep_within_refuses_a_bare_m_and_says_mo_or_min() {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliRepo::init(dir.path());
    let out = cli.run(&["forget", "--dry-run", "--keep-within", "6m"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`mo` for months") && err.contains("`min` for minutes"),
        "{err}"
    );
    let out = cli.run(&["forget", "--dry-run", "--keep-within", "6mo"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
