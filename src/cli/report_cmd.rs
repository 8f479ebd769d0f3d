//! Layer 6 (CLI): `kura report [PROFILE] --html FILE`, one self-contained
//! page (inline CSS and SVG, no script, nothing fetched) that people look
//! at instead of reading logs: what needs attention in plain words, the
//! last run, check and drill, snapshots per day as a calendar, repository
//! size and bytes added per run as plots, and the last runs. Its data are
//! the profile's run history on this machine (`runs/<profile>.jsonl`) and
//! the repository's snapshots (admin key). Each figure carries its numbers
//! in `data-` attributes, which the browser test reads back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::GlobalArgs;
use super::status_cmd::{self, RunState};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
    /// Write the page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// Days the calendar shows, ending today.
    #[arg(long, default_value_t = 91, value_name = "N")]
    pub days: u32,
    /// Say so when the last successful backup is older than this.
    #[arg(long, default_value = "26h", value_name = "DURATION")]
    pub max_age: String,
}

/// `kura report`.
pub fn run_report(g: &GlobalArgs, args: &ReportArgs) -> Result<()> {
    let (_, name, p) = args.target.load()?;
    let g = super::run_cmd::merged(g, &p);
    let now = super::clock_from_env()?.now_unix();
    let max_age = super::prune_cmd::parse_grace(&args.max_age).context("--max-age")?;
    let repo = g.open_admin("report")?;
    let host = p
        .host
        .clone()
        .unwrap_or_else(super::snapshot_cmds::hostname);
    let mut per_day: BTreeMap<i64, u32> = BTreeMap::new();
    for (_, s) in kura::repository::snapshots::list(&repo)? {
        if s.hostname == host {
            *per_day
                .entry(s.time.div_euclid(86_400 * 1_000_000_000))
                .or_default() += 1;
        }
    }
    let runs = status_cmd::load_history(&name);
    let check_max = p
        .check
        .max_age
        .as_deref()
        .map(super::prune_cmd::parse_grace);
    let (problems, facts) = status_cmd::judge_runs(
        &name,
        status_cmd::load_state(&name),
        now,
        max_age,
        check_max.transpose()?,
    );
    let page = Page {
        profile: &name,
        location: &repo.backend().describe(),
        now,
        days: args.days,
        per_day: &per_day,
        runs: &runs,
        problems: &problems,
        facts: &facts,
    };
    std::fs::write(&args.html, page.html())
        .with_context(|| format!("writing {}", args.html.display()))?;
    if !g.json {
        println!(
            "wrote {} ({} runs, {} days with snapshots)",
            args.html.display(),
            runs.len(),
            per_day.len()
        );
    }
    Ok(())
}

struct Page<'a> {
    profile: &'a str,
    location: &'a str,
    now: u64,
    days: u32,
    /// Snapshots per day (days since 1970-01-01, UTC).
    per_day: &'a BTreeMap<i64, u32>,
    runs: &'a [RunState],
    problems: &'a [String],
    facts: &'a [String],
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `YYYY-MM-DD` of a day number.
fn date(day: i64) -> String {
    let (y, m, d, _) = kura::snapshot::civil_utc(day * 86_400 * 1_000_000_000);
    format!("{y:04}-{m:02}-{d:02}")
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Page<'_> {
    fn html(&self) -> String {
        let verdict = if self.problems.is_empty() {
            "<p id=\"verdict\" class=\"ok\">All is well.</p>".to_owned()
        } else {
            let mut items = String::new();
            for p in self.problems {
                let _ = write!(items, "<li>{}</li>", esc(p));
            }
            format!(
                "<p id=\"verdict\" class=\"bad\">Needs attention:</p><ul id=\"warnings\">{items}</ul>"
            )
        };
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>kura: {profile}</title><style>\
             body{{font-family:sans-serif;margin:1.5em;color:#222}}\
             .ok{{color:#176317;font-weight:bold}}.bad{{color:#b00;font-weight:bold}}\
             table{{border-collapse:collapse}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}}\
             svg{{display:block;margin:.5em 0 1.5em}}</style></head><body>\
             <h1>Backups of [{profile}]</h1><p>Repository <code>{location}</code>; \
             page made {made} UTC.</p>{verdict}<p id=\"facts\">{facts}</p>\
             <h2>Snapshots per day</h2>{calendar}\
             <h2>Repository size after each run</h2>{size}\
             <h2>Bytes added per run</h2>{added}\
             <h2>Last runs</h2>{table}</body></html>\n",
            profile = esc(self.profile),
            location = esc(self.location),
            made = esc(&super::key::utc_minutes(self.now)),
            facts = esc(&self.facts.join("; ")),
            calendar = self.calendar(),
            size = self.plot("size", |r| r.repository_bytes),
            added = self.plot("added", |r| Some(r.bytes_added)),
            table = self.table(),
        )
    }

    /// Weeks as columns, days as rows; a day with a snapshot is green.
    fn calendar(&self) -> String {
        let today = i64::try_from(self.now / 86_400).unwrap_or(0);
        let first = today - i64::from(self.days) + 1;
        let weekday = |day: i64| (day + 3).rem_euclid(7); // 1970-01-01 was a Thursday
        let start = first - weekday(first);
        let weeks = (today - start) / 7 + 1;
        let mut svg = format!(
            "<svg id=\"calendar\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"snapshots per day\">",
            weeks * 14 + 2,
            7 * 14 + 2
        );
        for day in first..=today {
            let count = self.per_day.get(&day).copied().unwrap_or(0);
            let fill = match count {
                0 => "#e4e4e4",
                1 => "#57b55a",
                _ => "#1f7a24",
            };
            let (x, y) = ((day - start) / 7 * 14 + 1, weekday(day) * 14 + 1);
            let _ = write!(
                svg,
                "<rect class=\"day\" data-date=\"{d}\" data-count=\"{count}\" x=\"{x}\" y=\"{y}\" \
                 width=\"12\" height=\"12\" fill=\"{fill}\"><title>{d}: {count} snapshots</title></rect>",
                d = date(day)
            );
        }
        svg.push_str("</svg>");
        svg
    }

    /// Bars of `value` per run, scaled to the largest.
    fn plot(&self, class: &str, value: impl Fn(&RunState) -> Option<u64>) -> String {
        let points: Vec<(&RunState, u64)> = self
            .runs
            .iter()
            .filter_map(|r| value(r).map(|v| (r, v)))
            .collect();
        if points.is_empty() {
            return format!("<p id=\"{class}\">No runs recorded yet.</p>");
        }
        let max = points.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
        let width = (points.len() * 14 + 2).max(160);
        let mut svg = format!(
            "<svg id=\"{class}\" width=\"{width}\" height=\"122\" role=\"img\" aria-label=\"{class} per run\">"
        );
        for (i, (r, v)) in points.iter().enumerate() {
            let h = (*v as f64 / max as f64 * 100.0).round().max(1.0);
            let fill = if r.ok { "#3b6fb6" } else { "#b00" };
            let _ = write!(
                svg,
                "<rect class=\"{class}\" data-bytes=\"{v}\" data-started=\"{s}\" x=\"{x}\" y=\"{y}\" \
                 width=\"12\" height=\"{h}\" fill=\"{fill}\"><title>{when}: {m}</title></rect>",
                s = r.started,
                x = i * 14 + 1,
                y = 111.0 - h,
                when = esc(&super::key::utc_minutes(r.started)),
                m = mb(*v)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"1\" y=\"121\" font-size=\"9\">max {}</text></svg>",
            mb(max)
        );
        svg
    }

    /// The newest runs, newest first.
    fn table(&self) -> String {
        let mut out = String::from(
            "<table id=\"runs\"><tr><th>started (UTC)</th><th>result</th><th>added</th>\
             <th>seconds</th><th>snapshot</th></tr>",
        );
        for r in self.runs.iter().rev().take(14) {
            let result = if r.ok {
                "<span class=\"ok\">ok</span>".to_owned()
            } else {
                format!(
                    "<span class=\"bad\">exit {}</span> {}",
                    r.exit_code,
                    esc(r.error.as_deref().unwrap_or(""))
                )
            };
            let _ = write!(
                out,
                "<tr class=\"run\"><td>{}</td><td>{result}</td><td>{}</td><td>{:.1}</td><td><code>{}</code></td></tr>",
                esc(&super::key::utc_minutes(r.started)),
                mb(r.bytes_added),
                r.seconds,
                r.snapshot.as_deref().map_or("", |s| &s[..16.min(s.len())])
            );
        }
        out.push_str("</table>");
        out
    }
}
