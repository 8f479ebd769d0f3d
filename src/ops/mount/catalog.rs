//! Operations layer, `mount`: the directories above the snapshots' trees,
//! made from one reading of the snapshot list. Owns their names (unique in
//! each directory) and which snapshot `by-date/<day>` shows.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::format::snapshot::Snapshot;
use crate::id::{ChunkId, SnapshotId};
use crate::snapshot::select::{Filter, newest_in};
use crate::snapshot::{civil_utc, days_from_civil};

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// A directory above the snapshots' trees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dir {
    Root,
    Snapshots,
    Hosts,
    Tags,
    ByDate,
    Host(String),
    Tag(String),
}

impl Dir {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "snapshots" => Self::Snapshots,
            "hosts" => Self::Hosts,
            "tags" => Self::Tags,
            "by-date" => Self::ByDate,
            _ => return None,
        })
    }
}

/// What a name in a [`Dir`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    Dir(Dir),
    /// A snapshot's root directory.
    Snapshot {
        id: SnapshotId,
        tree: ChunkId,
        time: i64,
    },
    /// A symlink (`latest`) with its target.
    Link(Vec<u8>),
}

/// The snapshot list as read at one time.
pub struct Catalog {
    /// Oldest first; only those the filter accepts.
    snapshots: Vec<(SnapshotId, Snapshot)>,
    trees: HashMap<SnapshotId, ChunkId>,
    pub read_at: Instant,
}

/// `snapshots/` names a snapshot by its start time and short id.
pub fn snapshot_dir_name(id: &SnapshotId, time_ns: i64) -> String {
    format!("{}_{}", time_name(time_ns), &id.to_hex()[..8])
}

/// `2026-12-04T03:00:00Z`.
fn time_name(ns: i64) -> String {
    let (y, mo, d, h) = civil_utc(ns);
    let secs = ns.div_euclid(1_000_000_000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{:02}:{:02}Z",
        secs.rem_euclid(3600) / 60,
        secs.rem_euclid(60)
    )
}

/// `by-date/` names a day (UTC) `YYYY-MM-DD`.
pub fn day_name(ns: i64) -> String {
    let (y, mo, d, _) = civil_utc(ns);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// The last nanosecond of the day `name` (`YYYY-MM-DD`), if it is one.
fn end_of_day(name: &str) -> Option<i64> {
    let mut parts = name.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let start = days_from_civil(y, m, d).checked_mul(NS_PER_DAY)?;
    // Only a real date: 2026-02-30 would name March 2nd.
    (day_name(start) == name).then(|| start + NS_PER_DAY - 1)
}

/// A name safe as one path component (a tag may hold `/`).
fn component(text: &str) -> String {
    match text.replace(['/', '\0'], "_") {
        s if s.is_empty() || s == "." || s == ".." => format!("_{s}"),
        s => s,
    }
}

impl Catalog {
    /// The catalog of `snapshots` (oldest first) that `filter` accepts; a
    /// snapshot whose tree id does not parse is left out with a warning.
    pub fn new(snapshots: Vec<(SnapshotId, Snapshot)>, filter: &Filter) -> Self {
        let mut trees = HashMap::new();
        let snapshots = snapshots
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .filter(|(id, s)| match s.tree_id() {
                Ok(tree) => trees.insert(*id, tree).is_none(),
                Err(e) => {
                    tracing::warn!("snapshot {id} not shown: {e}");
                    false
                }
            })
            .collect();
        Self {
            snapshots,
            trees,
            read_at: Instant::now(),
        }
    }

    /// The newest snapshot's start time (synthesized directories' mtime).
    pub fn newest_time(&self) -> i64 {
        self.snapshots.last().map_or(0, |(_, s)| s.time)
    }

    /// The names in `dir`, each once, in listing order.
    pub fn list(&self, dir: &Dir) -> Vec<(String, Child)> {
        match dir {
            Dir::Root => self.root(),
            Dir::Snapshots => self.snapshot_dirs(|_| true, false),
            Dir::Hosts => names_of(self.snapshots.iter().map(|(_, s)| s.hostname.clone()))
                .into_iter()
                .map(|h| (component(&h), Child::Dir(Dir::Host(h))))
                .collect(),
            Dir::Tags => names_of(self.snapshots.iter().flat_map(|(_, s)| s.tags.clone()))
                .into_iter()
                .map(|t| (component(&t), Child::Dir(Dir::Tag(t))))
                .collect(),
            Dir::Host(h) => self.snapshot_dirs(|s| &s.hostname == h, true),
            Dir::Tag(t) => self.snapshot_dirs(|s| s.tags.contains(t), true),
            Dir::ByDate => self.days(),
        }
    }

    /// The one name `name` in `dir`, as [`Self::list`] would give it;
    /// `by-date/` also answers days after the newest snapshot's.
    pub fn find(&self, dir: &Dir, name: &str) -> Option<Child> {
        if *dir == Dir::ByDate {
            return self.day(name);
        }
        if *dir == Dir::Root {
            return Dir::named(name)
                .map(Child::Dir)
                .or_else(|| (name == "latest").then(|| self.latest()).flatten());
        }
        self.list(dir)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    fn root(&self) -> Vec<(String, Child)> {
        let mut out: Vec<(String, Child)> = ["snapshots", "hosts", "tags", "by-date"]
            .into_iter()
            .map(|n| (n.to_owned(), Child::Dir(Dir::named(n).expect("known"))))
            .collect();
        out.extend(self.latest().map(|l| ("latest".to_owned(), l)));
        out
    }

    fn latest(&self) -> Option<Child> {
        let (id, s) = self.snapshots.last()?;
        let target = format!("snapshots/{}", snapshot_dir_name(id, s.time));
        Some(Child::Link(target.into_bytes()))
    }

    /// The snapshots `keep` accepts, named by time (`by_time`: the id only
    /// where two share a second) or by time and id.
    fn snapshot_dirs(
        &self,
        keep: impl Fn(&Snapshot) -> bool,
        by_time: bool,
    ) -> Vec<(String, Child)> {
        let chosen: Vec<_> = self.snapshots.iter().filter(|(_, s)| keep(s)).collect();
        let clash = |t: &str| {
            chosen
                .iter()
                .filter(|(_, s)| time_name(s.time) == t)
                .count()
                > 1
        };
        chosen
            .iter()
            .map(|(id, s)| {
                let t = time_name(s.time);
                let name = if by_time && !clash(&t) {
                    t
                } else {
                    snapshot_dir_name(id, s.time)
                };
                (name, self.child(id, s))
            })
            .collect()
    }

    /// Every day from the oldest snapshot's to the newest's.
    fn days(&self) -> Vec<(String, Child)> {
        let (Some(first), Some(last)) = (self.snapshots.first(), self.snapshots.last()) else {
            return Vec::new();
        };
        let (first, last) = (
            first.1.time.div_euclid(NS_PER_DAY),
            last.1.time.div_euclid(NS_PER_DAY),
        );
        (first..=last)
            .filter_map(|d| {
                let name = day_name(d * NS_PER_DAY);
                self.day(&name).map(|c| (name, c))
            })
            .collect()
    }

    /// The snapshot in effect at the end of day `name`.
    fn day(&self, name: &str) -> Option<Child> {
        let (id, s) = newest_in(&self.snapshots, end_of_day(name)?, &Filter::default())?;
        Some(self.child(id, s))
    }

    fn child(&self, id: &SnapshotId, s: &Snapshot) -> Child {
        Child::Snapshot {
            id: *id,
            tree: self.trees[id],
            time: s.time,
        }
    }
}

/// Distinct names, sorted.
fn names_of(names: impl Iterator<Item = String>) -> Vec<String> {
    names.collect::<BTreeSet<_>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_are_named_in_utc() {
        let ns = 1_796_353_200 * 1_000_000_000; // 2026-12-04T03:00:00Z
        assert_eq!(time_name(ns), "2026-12-04T03:00:00Z");
        assert_eq!(day_name(ns), "2026-12-04");
        let end = end_of_day("2026-12-04").unwrap();
        assert_eq!(day_name(end), "2026-12-04");
        assert_eq!(day_name(end + 1), "2026-12-05");
        assert_eq!(end_of_day("2026-02-30"), None);
        assert_eq!(end_of_day("2026-2-3"), None);
        assert_eq!(end_of_day("latest"), None);
    }

    fn snapshot(time: &str, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            version: 1,
            tree: ChunkId([7; 32]).to_hex(),
            parent: None,
            time: crate::snapshot::parse_instant(time).unwrap(),
            end_time: 0,
            hostname: host.into(),
            username: String::new(),
            paths: Vec::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            program: String::new(),
            incomplete: false,
            summary: crate::format::snapshot::Summary::default(),
            copy_of: None,
        }
    }

    fn names(c: &Catalog, dir: &Dir) -> Vec<String> {
        c.list(dir).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn the_layout_names_each_snapshot_by_time_host_tag_and_day() {
        let listing = vec![
            (
                SnapshotId([1; 32]),
                snapshot("2026-12-01T03:00:00Z", "web1", &["nightly"]),
            ),
            (
                SnapshotId([2; 32]),
                snapshot("2026-12-01T03:00:00Z", "db", &[]),
            ),
            (
                SnapshotId([3; 32]),
                snapshot("2026-12-03T23:59:59Z", "web1", &["a/b"]),
            ),
        ];
        let c = Catalog::new(listing.clone(), &Filter::default());
        assert_eq!(
            names(&c, &Dir::Snapshots),
            [
                "2026-12-01T03:00:00Z_01010101",
                "2026-12-01T03:00:00Z_02020202",
                "2026-12-03T23:59:59Z_03030303"
            ]
        );
        assert_eq!(names(&c, &Dir::Hosts), ["db", "web1"]);
        assert_eq!(names(&c, &Dir::Tags), ["a_b", "nightly"]);
        let web1 = names(&c, &Dir::Host("web1".into()));
        assert_eq!(web1, ["2026-12-01T03:00:00Z", "2026-12-03T23:59:59Z"]);
        assert_eq!(names(&c, &Dir::Root).last().unwrap(), "latest");
        assert_eq!(
            c.find(&Dir::Root, "latest"),
            Some(Child::Link(
                b"snapshots/2026-12-03T23:59:59Z_03030303".to_vec()
            ))
        );
        // Days: the snapshot in effect at each day's end, a gap included.
        let days = names(&c, &Dir::ByDate);
        assert_eq!(days, ["2026-12-01", "2026-12-02", "2026-12-03"]);
        let shown = |day: &str| match c.find(&Dir::ByDate, day) {
            Some(Child::Snapshot { id, .. }) => Some(id.0[0]),
            _ => None,
        };
        assert_eq!(
            shown("2026-12-01"),
            Some(2),
            "the newest of the day (id order at a tie)"
        );
        assert_eq!(shown("2026-12-02"), Some(2));
        assert_eq!(
            shown("2026-12-03"),
            Some(3),
            "taken in the day's last second"
        );
        assert_eq!(shown("2030-01-01"), Some(3));
        assert_eq!(shown("2026-11-30"), None);
        // A filter leaves the others out everywhere.
        let only_db = Filter {
            host: Some("db".into()),
            ..Filter::default()
        };
        let c = Catalog::new(listing, &only_db);
        assert_eq!(names(&c, &Dir::Hosts), ["db"]);
        assert_eq!(names(&c, &Dir::ByDate), ["2026-12-01"]);
    }

    #[test]
    fn names_are_single_components() {
        assert_eq!(component("a/b"), "a_b");
        assert_eq!(component(".."), "_..");
        assert_eq!(component(""), "_");
        assert_eq!(component("web1"), "web1");
    }
}
