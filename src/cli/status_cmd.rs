//! Layer 6 (CLI): knowing that backups stopped. `kura run` leaves what it
//! did in a small state file per profile, `<cache root>/runs/<profile>.json`
//! (time, outcome, snapshot, bytes added, the last check and its verdict,
//! the last success); it is this machine's record, not the repository's.
//! From it `kura status [PROFILE]` says in plain sentences whether
//! anything needs attention (the last successful backup older than
//! `--max-age`, the last run failed, the last check found damage or is
//! older than the profile's `check.max_age`) and exits 21 if so. Without a
//! profile it asks the repository (`-r`) for its newest snapshot. A run
//! also writes the state as a Prometheus textfile (node_exporter's
//! textfile collector) when given `--metrics-file` or the profile's
//! `metrics_file`, and pings the profile's `notify.url`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::output::Document;
use super::{GlobalArgs, cache_root};

/// What the last run of a profile left (`runs/<profile>.json`). Times
/// are Unix seconds of the run's clock (`KURA_NOW` when set).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub profile: String,
    pub started: u64,
    pub seconds: f64,
    pub ok: bool,
    pub exit_code: u8,
    /// Why it failed, if it did.
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub bytes_added: u64,
    /// Bytes of all packs after the run (a listing), if it was taken.
    pub repository_bytes: Option<u64>,
    /// When a run last succeeded (this one or an earlier one).
    pub last_success: Option<u64>,
    /// When a run last checked the repository, and whether it was clean.
    pub last_check: Option<u64>,
    pub last_check_clean: Option<bool>,
    /// When `kura drill` last ran, and whether every file restored right.
    #[serde(default)]
    pub last_drill: Option<u64>,
    #[serde(default)]
    pub last_drill_ok: Option<bool>,
    /// When a run last read every pack (`check.full_every`).
    #[serde(default)]
    pub last_full_check: Option<u64>,
}

/// Where the state of `profile` lives.
pub fn state_file(profile: &str) -> PathBuf {
    let root = cache_root().unwrap_or_else(std::env::temp_dir);
    root.join("runs")
        .join(format!("{}.json", file_name(profile)))
}

/// A profile name as a file name: other characters become `_`.
pub fn file_name(profile: &str) -> String {
    profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The recorded state of `profile`, if any run left one.
pub fn load_state(profile: &str) -> Option<RunState> {
    let text = std::fs::read_to_string(state_file(profile)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records `state`, replacing the file atomically.
///
/// # Errors
/// The cache directory cannot be written.
pub fn save_state(state: &RunState) -> Result<()> {
    let file = state_file(&state.profile);
    let text = serde_json::to_string_pretty(state)?;
    write_atomically(&file, text.as_bytes())
}

/// Runs kept in a profile's history (`runs/<profile>.jsonl`), for
/// `kura report`: about a year of nights.
const HISTORY_MAX: usize = 400;

fn history_file(profile: &str) -> PathBuf {
    state_file(profile).with_extension("jsonl")
}

/// Appends `state` to the profile's run history, keeping the newest
/// [`HISTORY_MAX`] runs.
///
/// # Errors
/// The cache directory cannot be written.
pub fn append_history(state: &RunState) -> Result<()> {
    let mut runs = load_history(&state.profile);
    runs.push(state.clone());
    let skip = runs.len().saturating_sub(HISTORY_MAX);
    let mut text = String::new();
    for r in &runs[skip..] {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomically(&history_file(&state.profile), text.as_bytes())
}

/// The recorded runs of `profile`, oldest first; lines that do not
/// parse are skipped.
pub fn load_history(profile: &str) -> Vec<RunState> {
    std::fs::read_to_string(history_file(profile))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Writes `bytes` to `file` through a temporary file and a rename, so a
/// reader (node_exporter) never sees half a file.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    kura::chunkstore::index::create_private_dir(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))
}

/// The state as Prometheus text exposition (the textfile collector's
/// format), one gauge per fact, labelled with the profile.
pub fn metrics(state: &RunState) -> String {
    let label = state.profile.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        let Some(v) = value else { return };
        let _ = writeln!(out, "# HELP kura_{name} {help}");
        let _ = writeln!(out, "# TYPE kura_{name} gauge");
        let _ = writeln!(out, "kura_{name}{{profile=\"{label}\"}} {v}");
    };
    let secs = |t: Option<u64>| t.map(|t| t as f64);
    gauge(
        "last_run_timestamp_seconds",
        "When the last run started.",
        secs(Some(state.started)),
    );
    gauge(
        "last_run_duration_seconds",
        "How long the last run took.",
        Some(state.seconds),
    );
    gauge(
        "last_run_success",
        "1 if the last run succeeded, else 0.",
        Some(f64::from(u8::from(state.ok))),
    );
    gauge(
        "last_run_exit_code",
        "The exit code of the last run.",
        Some(f64::from(state.exit_code)),
    );
    gauge(
        "last_success_timestamp_seconds",
        "When a run last succeeded.",
        secs(state.last_success),
    );
    gauge(
        "last_run_bytes_added",
        "Bytes the last run stored.",
        Some(state.bytes_added as f64),
    );
    gauge(
        "repository_bytes",
        "Bytes of all packs after the last run.",
        secs(state.repository_bytes),
    );
    gauge(
        "last_check_timestamp_seconds",
        "When a run last checked the repository.",
        secs(state.last_check),
    );
    gauge(
        "last_check_clean",
        "1 if the last check found no damage, else 0.",
        state.last_check_clean.map(|c| f64::from(u8::from(c))),
    );
    gauge(
        "last_drill_timestamp_seconds",
        "When kura drill last ran.",
        secs(state.last_drill),
    );
    gauge(
        "last_drill_success",
        "1 if the last drill restored every file right, else 0.",
        state.last_drill_ok.map(|c| f64::from(u8::from(c))),
    );
    out
}

/// Writes the metrics of `state` to `file`.
///
/// # Errors
/// The file cannot be written.
pub fn write_metrics(file: &Path, state: &RunState) -> Result<()> {
    write_atomically(file, metrics(state).as_bytes())
}

/// Pings `url` (healthchecks style): the URL itself after a success,
/// `URL/fail` after a failure. A ping that fails is only warned about.
pub fn ping(url: &str, ok: bool) {
    let target = if ok {
        url.to_owned()
    } else {
        format!("{}/fail", url.trim_end_matches('/'))
    };
    let sent = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("{e}"))
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()?;
                client.get(&target).send().await?.error_for_status()
            })
            .map_err(|e| anyhow!("{e}"))
        });
    if let Err(e) = sent {
        eprintln!("warning: the ping to {} failed: {e}", masked_url(&target));
    }
}

/// A URL with its path hidden (ping URLs carry their secret there).
pub fn masked_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{host}/…")
        }
        None => "(a URL)".to_owned(),
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
    /// Say so when the last successful backup is older than this.
    #[arg(long, default_value = "26h", value_name = "DURATION")]
    pub max_age: String,
}

/// `kura status` found something that needs attention (exit 21).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NeedsAttention(pub String);

/// `kura status`.
pub fn run_status(g: &GlobalArgs, args: &StatusArgs) -> Result<()> {
    let max_age = super::prune_cmd::parse_grace(&args.max_age).context("--max-age")?;
    let now = super::clock_from_env()?.now_unix();
    // Without a configuration (or with -r and no profile named): the
    // repository's newest snapshot is judged.
    let found = super::profile::locate(args.target.config.as_deref());
    let (subject, problems, facts) = match found {
        Some(_) if g.repo.is_none() || args.target.profile.is_some() => {
            let (_, name, p) = args.target.load()?;
            let check_max = p
                .check
                .max_age
                .as_deref()
                .map(super::prune_cmd::parse_grace);
            let check_max = check_max.transpose().context("check.max_age")?;
            let (problems, facts) = judge_runs(&name, load_state(&name), now, max_age, check_max);
            (format!("profile [{name}]"), problems, facts)
        }
        _ => judge_repository(g, now, max_age)?,
    };
    if g.json {
        Document::object()
            .with("subject", &subject)
            .with("ok", problems.is_empty())
            .with("problems", &problems)
            .with("facts", &facts)
            .print()?;
    } else if problems.is_empty() {
        println!("ok: {subject}: {}", facts.join("; "));
    } else {
        for p in &problems {
            println!("attention: {subject}: {p}");
        }
        if !facts.is_empty() {
            println!("({})", facts.join("; "));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NeedsAttention(format!("{subject}: {}", problems.join("; "))).into())
    }
}

/// "3 h ago" and the like.
fn ago(now: u64, t: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// The problems and facts of a profile's recorded runs.
pub fn judge_runs(
    name: &str,
    state: Option<RunState>,
    now: u64,
    max_age: u64,
    check_max: Option<u64>,
) -> (Vec<String>, Vec<String>) {
    let Some(s) = state else {
        return (
            vec![format!(
                "no run of [{name}] is recorded on this machine (`kura run {name}` records one)"
            )],
            Vec::new(),
        );
    };
    let mut problems = Vec::new();
    let mut facts = vec![format!(
        "last run {} (exit {})",
        ago(now, s.started),
        s.exit_code
    )];
    match s.last_success {
        Some(t) if now.saturating_sub(t) > max_age => problems.push(format!(
            "the last successful backup was {}, longer ago than {} s",
            ago(now, t),
            max_age
        )),
        Some(t) => facts.push(format!("last success {}", ago(now, t))),
        None => problems.push("no run has succeeded yet".to_owned()),
    }
    if !s.ok {
        let why = s.error.as_deref().unwrap_or("see its log");
        problems.push(format!("the last run failed (exit {}): {why}", s.exit_code));
    }
    match (s.last_check, s.last_check_clean) {
        (Some(t), Some(false)) => problems.push(format!(
            "the last check ({}) found damage: run `kura check --read-data`",
            ago(now, t)
        )),
        (Some(t), _) if check_max.is_some_and(|m| now.saturating_sub(t) > m) => {
            problems.push(format!(
                "the last check was {}, longer ago than check.max_age",
                ago(now, t)
            ));
        }
        (None, _) if check_max.is_some() => problems.push("no check is recorded".to_owned()),
        (Some(t), _) => facts.push(format!("last check {} clean", ago(now, t))),
        (None, _) => {}
    }
    match (s.last_drill, s.last_drill_ok) {
        (_, Some(false)) => {
            problems.push("the last `kura drill` found files that do not restore right".to_owned());
        }
        (Some(t), Some(true)) => facts.push(format!("last drill {} ok", ago(now, t))),
        _ => {}
    }
    (problems, facts)
}

/// The problems and facts of a repository's newest snapshot (no
/// profile): needs a key that reads snapshots.
fn judge_repository(
    g: &GlobalArgs,
    now: u64,
    max_age: u64,
) -> Result<(String, Vec<String>, Vec<String>)> {
    let repo = g.open_admin("status")?;
    let subject = format!("repository {}", repo.backend().describe());
    let now_ns = i64::try_from(now)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000);
    let newest = kura::repository::snapshots::list(&repo)?
        .into_iter()
        .filter(|(_, s)| !kura::snapshot::is_future(s, now_ns))
        .map(|(_, s)| u64::try_from(s.time / 1_000_000_000).unwrap_or(0))
        .max();
    let (problems, facts) = match newest {
        None => (vec!["it holds no snapshot".to_owned()], Vec::new()),
        Some(t) if now.saturating_sub(t) > max_age => (
            vec![format!(
                "its newest snapshot is from {}, longer ago than {max_age} s",
                ago(now, t)
            )],
            Vec::new(),
        ),
        Some(t) => (Vec::new(), vec![format!("newest snapshot {}", ago(now, t))]),
    };
    Ok((subject, problems, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_judged_by_age_outcome_and_check() {
        let state = RunState {
            profile: "site".into(),
            started: 1000,
            ok: true,
            last_success: Some(1000),
            last_check: Some(1000),
            last_check_clean: Some(true),
            ..RunState::default()
        };
        let (p, _) = judge_runs("site", Some(state.clone()), 2000, 3600, None);
        assert!(p.is_empty(), "{p:?}");
        let (p, _) = judge_runs("site", Some(state.clone()), 10_000, 3600, None);
        assert!(p[0].contains("last successful backup"), "{p:?}");
        let failed = RunState {
            ok: false,
            exit_code: 1,
            error: Some("pg_dump failed".into()),
            last_check_clean: Some(false),
            ..state
        };
        let (p, _) = judge_runs("site", Some(failed), 2000, 3600, Some(60));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("pg_dump failed") && p[1].contains("damage"),
            "{p:?}"
        );
        let (p, _) = judge_runs("site", None, 2000, 3600, None);
        assert!(p[0].contains("no run of [site]"), "{p:?}");
    }

    #[test]
    fn metrics_name_the_profile_and_skip_what_is_unknown() {
        let state = RunState {
            profile: "we\"b".into(),
            started: 5,
            ok: true,
            ..RunState::default()
        };
        let text = metrics(&state);
        assert!(
            text.contains("kura_last_run_success{profile=\"we\\\"b\"} 1"),
            "{text}"
        );
        assert!(!text.contains("kura_last_check_clean"), "{text}");
        assert_eq!(
            masked_url("https://hc-ping.com/abc-secret"),
            "https://hc-ping.com/…"
        );
    }
}
