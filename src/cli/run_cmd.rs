//! Layer 6 (CLI): `kura run [PROFILE]`, one nightly run of a `kura.toml`
//! profile end to end, and `kura config check`. Composes the operations
//! the single commands run, with their semantics: the `before` hooks, the
//! backup of every source of the profile into one snapshot, `forget` by
//! the retention policy and `prune`, a `check` (a read-data subset if the
//! profile names one), then the `after` or `on_failure` hooks and the
//! notification. A step that fails ends the run there (a failed dump
//! command leaves no snapshot, and nothing is forgotten after a failed
//! backup); the hooks and the notification for failure still run.
//!
//! Owned invariants: one run of a profile at a time on this machine (an
//! exclusive lock on `<cache root>/run-<profile>.lock`: a second run exits
//! 11 at once, or waits with `--wait`); the exit code is the worst thing
//! that happened (a failure's own code; else damage 14; else a repository
//! that went back 20; else an incomplete snapshot 3; else 0). With a
//! put-only key a run backs up and skips forget, prune and check, which
//! need the admin key (they run from the admin machine's profile).

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use kura::ops::check::{CheckOptions, Subset, check};
use kura::ops::forget::forget;
use kura::ops::prune::prune;
use kura::repository::Repository;

use super::browse_cmds::FilterArgs;
use super::forget_cmd::{ForgetArgs, forget_options};
use super::output::Document;
use super::profile::Profile;
use super::prune_cmd::PruneArgs;
use super::snapshot_cmds::{BackupArgs, backup_options};
use super::status_cmd;
use super::{GlobalArgs, cache_root, exit};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
    /// If the profile is running already, wait for that run to end
    /// (default: exit 11 at once).
    #[arg(long)]
    pub wait: bool,
    /// Write the run's outcome to this file as Prometheus text
    /// (node_exporter's textfile collector), instead of the profile's
    /// `metrics_file`.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
}

/// `kura config check`: validates the file and prints the resolved
/// profile, secrets masked.
pub fn run_config_check(g: &GlobalArgs, args: &ConfigCheckArgs) -> Result<()> {
    let (_, name, p) = args.target.load()?;
    let merged = merged(g, &p);
    let mut shown = p.masked();
    shown.repository = merged.repo.as_ref().map(|r| r.display().to_string());
    if g.json {
        return Document::object()
            .with("profile", &name)
            .with("settings", &shown)
            .print();
    }
    println!("profile [{name}] is valid; as a run would use it:");
    let text = toml::to_string_pretty(&shown).context("showing the profile")?;
    print!("{text}");
    Ok(())
}

/// The global options of a run: the command line's (and environment's),
/// and where they are not given, the profile's.
pub(super) fn merged(g: &GlobalArgs, p: &Profile) -> GlobalArgs {
    let mut m = g.clone();
    let password_given =
        g.password_file.is_some() || g.password_command.is_some() || g.key_file.is_some();
    if !password_given {
        m.password_file.clone_from(&p.password_file);
        m.password_command.clone_from(&p.password_command);
        m.key_file.clone_from(&p.key_file);
    }
    m.repo = g
        .repo
        .clone()
        .or_else(|| p.repository.as_ref().map(PathBuf::from));
    m.key_slot = g.key_slot.clone().or_else(|| p.key_slot.clone());
    m.s3_endpoint = g.s3_endpoint.clone().or_else(|| p.s3_endpoint.clone());
    m.s3_region = g.s3_region.clone().or_else(|| p.s3_region.clone());
    m.ssh_config = g.ssh_config.clone().or_else(|| p.ssh_config.clone());
    m.io_timeout = g.io_timeout.or(p.io_timeout.map(Duration::from_secs));
    m
}

/// One step of a run as the summary shows it.
#[derive(Debug, serde::Serialize)]
#[allow(clippy::struct_field_names)] // `step` is its name in the JSON
struct Step {
    step: &'static str,
    ok: bool,
    /// One line: what it did, or why it failed or was skipped.
    summary: String,
}

/// What a run did (printed, and `--json`).
#[derive(Debug, serde::Serialize)]
struct RunReport {
    profile: String,
    ok: bool,
    exit_code: u8,
    seconds: f64,
    snapshot: Option<kura::id::SnapshotId>,
    steps: Vec<Step>,
}

/// What the steps found that is not a failure but sets the exit code.
#[derive(Default)]
struct Findings {
    /// The profile's name (its recorded state decides a full check).
    profile: String,
    incomplete: bool,
    bytes_added: u64,
    /// Whether the check found the repository clean, if one ran.
    checked_clean: Option<bool>,
    /// Bytes of all packs at the end of a run that succeeded.
    repository_bytes: Option<u64>,
    /// Whether the check read every pack.
    full_check: bool,
    damage: Option<String>,
    rolled_back: Option<kura::Error>,
}

/// `kura run`.
pub fn run_profile(g: &GlobalArgs, args: &RunArgs) -> Result<()> {
    let (_, name, p) = args.target.load()?;
    let g = merged(g, &p);
    let _lock = lock(&name, args.wait)?;
    let started = Instant::now();
    let started_at = super::clock_from_env()?.now_unix();
    let mut steps = Vec::new();
    let mut found = Findings {
        profile: name.clone(),
        ..Findings::default()
    };
    let mut snapshot = None;
    let outcome = steps_of(&g, &name, &p, &mut steps, &mut found, &mut snapshot);
    let failure = outcome.err();
    let hooks = if failure.is_some() {
        &p.hooks.on_failure
    } else {
        &p.hooks.after
    };
    let after = if failure.is_some() {
        "on_failure"
    } else {
        "after"
    };
    let hook_error = run_hooks(
        &p,
        &name,
        after,
        hooks,
        failure.as_ref(),
        &mut steps,
        g.json,
    )
    .err();
    let failure = failure.or(hook_error);
    let code = match &failure {
        Some(e) => super::exit_code(e),
        None if found.damage.is_some() => exit::CORRUPT,
        None if found.rolled_back.is_some() => exit::ROLLED_BACK,
        None if found.incomplete => exit::INCOMPLETE,
        None => exit::OK,
    };
    let report = RunReport {
        profile: name,
        ok: code == exit::OK,
        exit_code: code,
        seconds: started.elapsed().as_secs_f64(),
        snapshot,
        steps,
    };
    notify(&p, &report, failure.as_ref());
    let state = record(&report, &found, started_at, failure.as_ref());
    let saved = status_cmd::save_state(&state).and_then(|()| status_cmd::append_history(&state));
    if let Err(e) = saved {
        eprintln!("warning: the run's state was not recorded: {e:#}");
    }
    if let Some(file) = args.metrics_file.as_ref().or(p.metrics_file.as_ref())
        && let Err(e) = status_cmd::write_metrics(file, &state)
    {
        eprintln!("warning: the metrics file was not written: {e:#}");
    }
    if let Some(url) = &p.notify.url {
        status_cmd::ping(url, report.ok);
    }
    if g.json {
        Document::of(&report).print()?;
    } else {
        print_summary(&report, failure.as_ref());
    }
    match (failure, found) {
        (Some(e), _) => Err(e),
        (
            None,
            Findings {
                damage: Some(d), ..
            },
        ) => Err(kura::Error::new(kura::ErrorKind::Corrupt, d).into()),
        (
            None,
            Findings {
                rolled_back: Some(e),
                ..
            },
        ) => Err(e.into()),
        (
            None,
            Findings {
                incomplete: true, ..
            },
        ) => Err(super::Incomplete.into()),
        (None, _) => Ok(()),
    }
}

/// The state this run leaves for `kura status` and the metrics: this
/// run's facts, and the last success and check carried over from earlier
/// runs where this one has none.
fn record(
    report: &RunReport,
    found: &Findings,
    started: u64,
    failure: Option<&anyhow::Error>,
) -> status_cmd::RunState {
    let before = status_cmd::load_state(&report.profile).unwrap_or_default();
    let checked = found.checked_clean.is_some();
    status_cmd::RunState {
        profile: report.profile.clone(),
        started,
        seconds: report.seconds,
        ok: report.ok,
        exit_code: report.exit_code,
        error: failure.map(|e| format!("{e:#}")),
        snapshot: report.snapshot.map(|id| id.to_hex()),
        bytes_added: found.bytes_added,
        repository_bytes: found.repository_bytes.or(before.repository_bytes),
        last_success: if report.ok {
            Some(started)
        } else {
            before.last_success
        },
        last_check: if checked {
            Some(started)
        } else {
            before.last_check
        },
        last_check_clean: found.checked_clean.or(before.last_check_clean),
        last_drill: before.last_drill,
        last_drill_ok: before.last_drill_ok,
        last_full_check: if found.full_check {
            Some(started)
        } else {
            before.last_full_check
        },
    }
}

/// The run's steps up to the first failure.
fn steps_of(
    g: &GlobalArgs,
    profile: &str,
    p: &Profile,
    steps: &mut Vec<Step>,
    found: &mut Findings,
    snapshot: &mut Option<kura::id::SnapshotId>,
) -> Result<()> {
    run_hooks(p, profile, "before", &p.hooks.before, None, steps, g.json)?;
    let repo = step(steps, g.json, "open", || {
        let repo = g.open()?;
        Ok((repo.backend().describe(), repo))
    })?;
    found.rolled_back = super::history_alarm(&repo)?;
    if !p.sources.is_empty() {
        *snapshot = Some(step(steps, g.json, "backup", || {
            backup(g, &repo, p, found)
        })?);
    }
    if !repo.is_admin() {
        let why = "skipped: the key is put-only (forget, prune and check run with the admin key)";
        log(steps, g.json, "maintenance", true, why.to_owned());
        return Ok(());
    }
    if p.retention.is_set() {
        step(steps, g.json, "forget", || forget_step(&repo, p))?;
        if p.prune.enabled {
            step(steps, g.json, "prune", || prune_step(g, &repo, p))?;
        }
    }
    if p.check.enabled {
        step(steps, g.json, "check", || check_step(g, &repo, p, found))?;
    }
    found.repository_bytes = repo.list_packs().ok().map(|packs| packs.values().sum());
    Ok(())
}

/// Runs one step, logging its line; its error ends the run.
fn step<T>(
    steps: &mut Vec<Step>,
    json: bool,
    name: &'static str,
    f: impl FnOnce() -> Result<(String, T)>,
) -> Result<T> {
    match f() {
        Ok((summary, value)) => {
            log(steps, json, name, true, summary);
            Ok(value)
        }
        Err(e) => {
            log(steps, json, name, false, format!("failed: {e:#}"));
            Err(e)
        }
    }
}

/// Records a step and prints its log line (on standard error with
/// `--json`, whose standard output is the one document).
fn log(steps: &mut Vec<Step>, json: bool, step: &'static str, ok: bool, summary: String) {
    let line = format!("kura run: {step:<11} {summary}");
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    steps.push(Step { step, ok, summary });
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The profile's sources as one snapshot.
fn backup(
    g: &GlobalArgs,
    repo: &Repository,
    p: &Profile,
    found: &mut Findings,
) -> Result<(String, kura::id::SnapshotId)> {
    let args = BackupArgs {
        paths: p.sources.paths.clone(),
        image: p.sources.images.clone(),
        stdin: false,
        stdin_filename: PathBuf::from("stdin"),
        stdin_from_command: p
            .sources
            .commands
            .iter()
            .map(|(name, cmd)| format!("{}={cmd}", name.display()))
            .collect(),
        tags: p.tags.clone(),
        host: p.host.clone(),
        parent: None,
        no_parent: false,
        exclude: p.sources.exclude.clone(),
        exclude_file: Vec::new(),
        exclude_if_present: p.sources.exclude_if_present.clone(),
        one_file_system: p.sources.one_file_system,
        read_ahead: None,
        quiet: true,
    };
    let options = backup_options(repo, &args, g.store_options())?;
    let index = g.synced_index(repo)?;
    let report = kura::ops::backup::backup(repo, &index, &options)?;
    kura::ops::history::remember_snapshot(repo, cache_root().as_deref(), report.snapshot);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    found.incomplete = !report.warnings.is_empty();
    found.bytes_added = report.summary.bytes_stored;
    let s = report.summary;
    let mut line = format!(
        "snapshot {}: {} files ({} unchanged), {}; {} added",
        &report.snapshot.to_hex()[..16],
        s.files,
        s.files_unchanged,
        mb(s.bytes),
        mb(s.bytes_stored)
    );
    if found.incomplete {
        let _ = write!(line, "; {} files unreadable (incomplete)", s.warnings);
    }
    Ok((line, report.snapshot))
}

fn forget_step(repo: &Repository, p: &Profile) -> Result<(String, ())> {
    let r = &p.retention;
    let args = ForgetArgs {
        keep_last: r.keep_last,
        keep_hourly: r.keep_hourly,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        keep_yearly: r.keep_yearly,
        keep_within: r.keep_within.clone(),
        keep_tag: r.keep_tag.clone(),
        group_by: r.group_by.clone().unwrap_or_else(|| "host,paths".into()),
        filter: FilterArgs::default(),
        dry_run: false,
        prune: false,
        max_unused: String::new(),
        max_repack_size: None,
        grace: None,
        now: false,
    };
    let report = forget(repo, &forget_options(&args)?)?;
    let kept = report.decisions.iter().filter(|d| d.keep).count();
    Ok((
        format!("{} snapshots removed, {kept} kept", report.removed.len()),
        (),
    ))
}

fn prune_step(g: &GlobalArgs, repo: &Repository, p: &Profile) -> Result<(String, ())> {
    let args = PruneArgs {
        max_unused: p.prune.max_unused.clone().unwrap_or_else(|| "5%".into()),
        max_repack_size: None,
        grace: p.prune.grace.clone(),
        now: false,
        dry_run: false,
    };
    let options = args.options()?;
    let index = g.synced_index(repo)?;
    let scratch = kura::ops::session::scratch_dir(cache_root().as_deref(), repo.id());
    let r = prune(repo, &index, &scratch, &options)?;
    Ok((
        format!(
            "{} packs deleted ({} freed), {} condemned, {} repacked",
            r.deleted_packs,
            mb(r.freed_bytes),
            r.condemned_packs,
            r.repacked_packs
        ),
        (),
    ))
}

fn check_step(
    g: &GlobalArgs,
    repo: &Repository,
    p: &Profile,
    found: &mut Findings,
) -> Result<(String, ())> {
    let mut read_data = p
        .check
        .read_data_subset
        .as_deref()
        .map(Subset::parse)
        .transpose()?;
    if let Some(every) = &p.check.full_every {
        let every = super::prune_cmd::parse_grace(every)?;
        let now = super::clock_from_env()?.now_unix();
        let last = status_cmd::load_state(&found.profile).and_then(|s| s.last_full_check);
        if last.is_none_or(|t| now.saturating_sub(t) >= every) {
            read_data = Some(Subset::All);
        }
    }
    found.full_check = matches!(read_data, Some(Subset::All));
    let index = g.synced_index(repo)?;
    let options = CheckOptions {
        read_data,
        clock: super::clock_from_env()?,
    };
    let report = check(repo, &index, &options)?;
    let read = format!(
        "{} packs read, {}",
        report.packs_read,
        mb(report.bytes_read)
    );
    found.checked_clean = Some(report.is_clean());
    if report.is_clean() {
        return Ok((format!("no damage found ({read})"), ()));
    }
    for d in &report.damage {
        eprintln!("damaged: {} {}", d.object, d.problem);
    }
    let what = format!(
        "the repository is damaged: {} problems (`kura check` names them)",
        report.damage.len()
    );
    found.damage = Some(what.clone());
    Ok((format!("{what} ({read})"), ()))
}

/// Runs `hooks` in order (`sh -c`), each within the profile's timeout,
/// with `KURA_PROFILE` and, after a failure, `KURA_RUN_ERROR` set. One
/// that fails or times out is the run's failure (the rest are skipped).
fn run_hooks(
    p: &Profile,
    profile: &str,
    name: &'static str,
    hooks: &[String],
    failure: Option<&anyhow::Error>,
    steps: &mut Vec<Step>,
    json: bool,
) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let timeout = p.hook_timeout()?;
    for (i, hook) in hooks.iter().enumerate() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(hook).env("KURA_PROFILE", profile);
        if let Some(e) = failure {
            cmd.env("KURA_RUN_ERROR", format!("{e:#}"));
        }
        if let Err(e) = run_within(&mut cmd, timeout) {
            let e = e.context(format!("{name} hook {} of {}", i + 1, hooks.len()));
            log(steps, json, name, false, format!("failed: {e:#}"));
            return Err(e);
        }
    }
    log(
        steps,
        json,
        name,
        true,
        format!("hooks run: {}", hooks.len()),
    );
    Ok(())
}

/// Runs `cmd` to its end, killing it after `timeout`.
fn run_within(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let mut child = cmd.stdin(Stdio::null()).spawn().context("starting sh")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(anyhow!("it exited with {status}"))
            };
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!(
                "it ran longer than {} s and was killed",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the profile's notification command, if any and if due, with the
/// summary on its standard input. Its own failure is only warned about.
fn notify(p: &Profile, report: &RunReport, failure: Option<&anyhow::Error>) {
    let Some(command) = &p.notify.command else {
        return;
    };
    if report.ok && !p.notify.on_success {
        return;
    }
    let mut text = summary_text(report, failure);
    text.push('\n');
    let status = if report.ok { "ok" } else { "failed" };
    let sent = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KURA_RUN_STATUS", status)
        .env("KURA_PROFILE", &report.profile)
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut input) = child.stdin.take() {
                let _ = input.write_all(text.as_bytes());
            }
            child.wait()
        });
    match sent {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("warning: the notification command exited with {s}"),
        Err(e) => eprintln!("warning: the notification command could not run: {e}"),
    }
}

/// The run in a few lines: the verdict, then each step.
fn summary_text(report: &RunReport, failure: Option<&anyhow::Error>) -> String {
    let verdict = match (report.exit_code, failure) {
        (0, _) => "ok".to_owned(),
        (code, Some(e)) => format!("FAILED (exit {code}): {e:#}"),
        (code, None) => format!("finished with problems (exit {code})"),
    };
    let mut out = format!(
        "kura run [{}]: {verdict}, {:.1} s",
        report.profile, report.seconds
    );
    for s in &report.steps {
        let mark = if s.ok { "ok  " } else { "FAIL" };
        let _ = write!(out, "\n  {mark} {:<11} {}", s.step, s.summary);
    }
    out
}

/// The verdict line after the steps' own lines.
fn print_summary(report: &RunReport, failure: Option<&anyhow::Error>) {
    let text = summary_text(report, failure);
    println!("{}", text.lines().next().unwrap_or_default());
}

/// Holds the lock of one profile's runs on this machine.
struct RunLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Takes the run lock of `profile`; with `wait`, waits for it.
fn lock(profile: &str, wait: bool) -> Result<RunLock> {
    use nix::fcntl::{Flock, FlockArg};
    let dir = cache_root().unwrap_or_else(std::env::temp_dir);
    kura::chunkstore::index::create_private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("run-{}.lock", status_cmd::file_name(profile)));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the run lock {}", path.display()))?;
    let how = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(file, how).map(RunLock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            kura::Error::new(
                kura::ErrorKind::Locked,
                format!(
                    "another `kura run {profile}` is running on this machine (lock {}); \
                     it was left alone; use --wait to wait for it",
                    path.display()
                ),
            )
            .into()
        } else {
            anyhow!("locking {}: {errno}", path.display())
        }
    })
}
