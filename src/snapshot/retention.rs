//! Snapshot layer: retention policies (which snapshots `forget` keeps).
//! Pure functions of the snapshots' times, hosts, paths and tags; nothing
//! here reads or writes the repository.
//!
//! The rules are restic's, with calendar buckets in UTC (the time zone
//! `kura snapshots` shows):
//!
//! - snapshots are grouped (by default by host and paths; `GroupBy`) and
//!   each group is decided on its own;
//! - within a group, snapshots are visited newest first;
//! - `last N` keeps the N newest;
//! - `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of
//!   each of the N most recent hours (days, ISO weeks, months, years) that
//!   have a snapshot;
//! - `within D` keeps every snapshot taken less than D before now (the
//!   reader's clock, never the newest snapshot's time, which a forged
//!   snapshot could set); if that keeps nothing of a group, its newest
//!   snapshot is kept, so backups that stopped do not empty it;
//! - a snapshot dated more than a day after now (`super::is_future`) is
//!   kept, counted by no rule and never the reason another goes;
//! - `tag T` keeps every snapshot carrying tag T;
//! - a snapshot is kept if any rule keeps it, and each decision names the
//!   rules that kept it.
//!
//! A policy with no rule keeps nothing and is refused by [`decide`]: a
//! forget without a rule must not delete a whole repository by accident.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::snapshot::duration::parse_duration;
use crate::snapshot::{civil_utc, days_from_civil};

const NS_PER_SEC: i64 = 1_000_000_000;

/// Which snapshots to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// Keep snapshots younger than this (nanoseconds) relative to the
    /// newest of their group.
    pub within: Option<i64>,
    pub tags: Vec<String>,
}

impl RetentionPolicy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// What snapshots are grouped by before the policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// Parses `host,paths,tags` (any subset; empty means one group).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for another word.
    pub fn parse(text: &str) -> Result<Self> {
        let mut g = Self {
            host: false,
            paths: false,
            tags: false,
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("--group-by takes host, paths and tags, not {word:?}"),
                    ));
                }
            }
        }
        Ok(g)
    }

    /// The group key of a snapshot, readable.
    pub fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.hostname));
        }
        if self.paths {
            let mut paths: Vec<String> = s
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(&p.to_bytes().unwrap_or_default()).into_owned())
                .collect();
            paths.sort();
            parts.push(format!("paths {}", paths.join(",")));
        }
        if self.tags {
            let mut tags = s.tags.clone();
            tags.sort();
            parts.push(format!("tags {}", tags.join(",")));
        }
        parts.join("; ")
    }
}

/// The fate of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: i64,
    pub group: String,
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, `within`, `tag nightly`...).
    pub reasons: Vec<String>,
}

/// Parses `--keep-within`: a duration in the one grammar
/// ([`crate::snapshot::duration`]), more than zero, in nanoseconds.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for what the grammar refuses (a bare `m`
/// with a hint), a number without a unit, a zero duration, or one too long
/// to add to a time.
pub fn parse_within(text: &str) -> Result<i64> {
    // A plain number is seconds to the grammar, but nobody keeps snapshots
    // for 30 seconds: `--keep-within 30` was refused before and still is.
    if text.trim().bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a keep-within duration needs a unit (e.g. 30d, 6mo, 1y): {text:?}"),
        ));
    }
    let secs = parse_duration(text)?;
    if secs == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a keep-within duration must be more than 0: {text:?}"),
        ));
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(NS_PER_SEC))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("duration too long: {text:?}"),
            )
        })
}

/// ISO 8601 week (year, week) of a time in nanoseconds since the epoch.
fn iso_week(ns: i64) -> (i64, i64) {
    let days = ns.div_euclid(NS_PER_SEC).div_euclid(86_400);
    // 1970-01-01 was a Thursday; weekday 0 = Monday.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _, _) = civil_utc(thursday * 86_400 * NS_PER_SEC);
    let jan1 = days_from_civil(year, 1, 1);
    (year, (thursday - jan1) / 7 + 1)
}

/// Decides, for every snapshot, whether `policy` keeps it.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a policy without any rule.
pub fn decide(
    policy: &RetentionPolicy,
    group_by: GroupBy,
    snapshots: &[(SnapshotId, Snapshot)],
    now_ns: i64,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "no retention rule given (--keep-last, --keep-daily, ...): nothing would be kept",
        ));
    }
    let mut groups: BTreeMap<String, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(&s.1)).or_default().push(s);
    }
    let mut out = Vec::with_capacity(snapshots.len());
    for (key, mut members) in groups {
        // Newest first; ties broken by id so the result is deterministic.
        members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
        out.extend(decide_group(policy, &key, &members, now_ns));
    }
    Ok(out)
}

type Bucket = fn(i64) -> (i64, i64);

/// A calendar rule while a group is decided.
struct CalendarRule {
    name: &'static str,
    left: u32,
    bucket: Bucket,
    last: Option<(i64, i64)>,
}

impl CalendarRule {
    fn new(name: &'static str, count: u32, bucket: Bucket) -> Self {
        Self {
            name,
            left: count,
            bucket,
            last: None,
        }
    }

    /// Whether this rule keeps a snapshot taken at `time` (visited newest
    /// first): the first of a new bucket while buckets are left.
    fn keeps(&mut self, time: i64) -> bool {
        let b = (self.bucket)(time);
        if self.left == 0 || self.last == Some(b) {
            return false;
        }
        self.left -= 1;
        self.last = Some(b);
        true
    }
}

fn decide_group(
    policy: &RetentionPolicy,
    group: &str,
    members: &[&(SnapshotId, Snapshot)],
    now_ns: i64,
) -> Vec<Decision> {
    let hour: Bucket = |t| {
        let (y, m, d, h) = civil_utc(t);
        (y, i64::from(((m * 32) + d) * 24 + h))
    };
    let day: Bucket = |t| {
        let (y, m, d, _) = civil_utc(t);
        (y, i64::from(m * 32 + d))
    };
    let month: Bucket = |t| {
        let (y, m, _, _) = civil_utc(t);
        (y, i64::from(m))
    };
    let year: Bucket = |t| (civil_utc(t).0, 0);
    let mut rules = [
        CalendarRule::new("hourly", policy.hourly, hour),
        CalendarRule::new("daily", policy.daily, day),
        CalendarRule::new("weekly", policy.weekly, iso_week),
        CalendarRule::new("monthly", policy.monthly, month),
        CalendarRule::new("yearly", policy.yearly, year),
    ];
    // The newest snapshot that is not dated in the future: kept when a
    // window alone would forget it (backups that stopped do not empty a
    // group).
    let newest = members.iter().find(|s| !super::is_future(&s.1, now_ns));
    let newest = newest.map(|s| s.0);
    let mut last_left = policy.last;
    let mut out = Vec::with_capacity(members.len());
    for (id, snap) in members.iter().map(|s| (&s.0, &s.1)) {
        let mut reasons = Vec::new();
        if super::is_future(snap, now_ns) {
            // Counted by no rule, so never the reason another goes; kept
            // for the admin to look at (`check` notes it).
            out.push(Decision {
                id: *id,
                time: snap.time,
                group: group.to_owned(),
                keep: true,
                reasons: vec!["future".to_owned()],
            });
            continue;
        }
        if last_left > 0 {
            last_left -= 1;
            reasons.push("last".to_owned());
        }
        for rule in &mut rules {
            if rule.keeps(snap.time) {
                reasons.push(rule.name.to_owned());
            }
        }
        if policy.within.is_some_and(|w| now_ns - snap.time < w) {
            reasons.push("within".to_owned());
        } else if policy.within.is_some() && newest == Some(*id) && reasons.is_empty() {
            reasons.push("within (the newest)".to_owned());
        }
        for t in policy.tags.iter().filter(|t| snap.tags.contains(t)) {
            reasons.push(format!("tag {t}"));
        }
        out.push(Decision {
            id: *id,
            time: snap.time,
            group: group.to_owned(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_and_iso_weeks() {
        let at = |y, m, d, h: i64| (days_from_civil(y, m, d) * 86_400 + h * 3600) * NS_PER_SEC;
        assert_eq!(civil_utc(at(2026, 11, 26, 13)), (2026, 11, 26, 13));
        assert_eq!(civil_utc(at(2000, 2, 29, 0)), (2000, 2, 29, 0));
        assert_eq!(civil_utc(-NS_PER_SEC), (1969, 12, 31, 23));
        // ISO weeks across year ends.
        assert_eq!(iso_week(at(2021, 1, 3, 12)), (2020, 53));
        assert_eq!(iso_week(at(2021, 1, 4, 0)), (2021, 1));
        assert_eq!(iso_week(at(2024, 12, 30, 0)), (2025, 1));
        assert_eq!(iso_week(at(2026, 11, 26, 0)), (2026, 48));
    }

    #[test]
    fn durations() {
        let day = 86_400 * NS_PER_SEC;
        assert_eq!(parse_within("30d").unwrap(), 30 * day);
        assert_eq!(parse_within("1y2mo").unwrap(), 425 * day);
        assert_eq!(parse_within("1w12h").unwrap(), 7 * day + day / 2);
        assert_eq!(parse_within("90s").unwrap(), 90 * NS_PER_SEC);
        for bad in [
            "",
            "30",
            "1y2m",
            "d",
            "5x",
            "0d",
            "0",
            "99999999999999999y",
            "300y",
        ] {
            assert!(parse_within(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_by_words() {
        assert_eq!(GroupBy::parse("host,paths").unwrap(), GroupBy::default());
        assert!(GroupBy::parse("host,user").is_err());
        let none = GroupBy::parse("").unwrap();
        assert!(!none.host && !none.paths && !none.tags);
    }
}
