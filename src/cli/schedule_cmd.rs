//! Layer 6 (CLI): `kura schedule install|status|remove [PROFILE]`, the
//! nightly `kura run` as a systemd service and timer (or, where systemd
//! is not running, a cron entry). The units run kura at idle priority,
//! `Persistent=true` (a night missed while the machine was off runs at
//! boot), with a randomized delay, and with the file system read-only but
//! for what a run writes: kura's cache, a local repository, the metrics
//! file's directory. They are written as text here and checked in the
//! tests with `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::profile::Profile;
use super::status_cmd;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Write (and with systemd, enable) a timer that runs the profile
    /// nightly.
    Install(InstallArgs),
    /// Show the schedule of a profile and its last run.
    Status(TargetArgs),
    /// Disable and delete the schedule of a profile.
    Remove(TargetArgs),
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    pub target: super::profile::ProfileArgs,
    /// Where the units (or the cron file) are (default:
    /// /etc/systemd/system, or /etc/cron.d with --cron).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A cron entry instead of systemd units (the default where systemd
    /// is not running).
    #[arg(long)]
    pub cron: bool,
    /// Only write or delete the files: no systemctl calls.
    #[arg(long)]
    pub no_enable: bool,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The time of day, UTC on most servers (HH:MM).
    #[arg(long, default_value = "03:00", value_name = "HH:MM")]
    pub at: String,
    /// Spread the start by up to this many minutes (systemd only).
    #[arg(long, default_value_t = 30, value_name = "MINUTES")]
    pub random_delay: u32,
}

pub fn run_schedule(action: &ScheduleCommand) -> Result<()> {
    match action {
        ScheduleCommand::Install(args) => install(args),
        ScheduleCommand::Status(args) => status(args),
        ScheduleCommand::Remove(args) => remove(args),
    }
}

/// The profile, its name, and the configuration file's absolute path.
fn target(args: &TargetArgs) -> Result<(String, Profile, PathBuf)> {
    let (path, name, p) = args.target.load()?;
    Ok((name, p, std::path::absolute(&path)?))
}

/// Whether systemd is the running init (its own test, sd_booted).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn use_cron(args: &TargetArgs) -> bool {
    args.cron || (args.dir.is_none() && !systemd_running())
}

/// `HH:MM` as hours and minutes.
fn parse_at(text: &str) -> Result<(u8, u8)> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some((h, m))
    });
    parsed.with_context(|| format!("--at takes HH:MM, e.g. 03:00: {text:?}"))
}

/// The unit names of a profile.
fn unit(name: &str, suffix: &str) -> String {
    format!("kura-{}.{suffix}", status_cmd::file_name(name))
}

/// A path as systemd wants it in a unit: absolute, with `%` and white
/// space escaped (specifier and quoting rules of systemd.unit(5)).
fn unit_path(p: &Path) -> String {
    let text = p.display().to_string().replace('%', "%%");
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// The directories a run writes: the cache, a local repository, the
/// metrics file's directory.
fn writable(p: &Profile, cache: &Path) -> Vec<PathBuf> {
    let mut out = vec![cache.to_owned()];
    if let Some(r) = &p.repository
        && r.starts_with('/')
    {
        out.push(PathBuf::from(r));
    }
    if let Some(dir) = p.metrics_file.as_ref().and_then(|m| m.parent()) {
        out.push(dir.to_owned());
    }
    out
}

/// The service unit for `kura run` of profile `name`, with kura's cache
/// at `cache` (the installing user's, so that `kura status` run by that
/// user reads what the timer's runs record).
fn service(name: &str, p: &Profile, config: &Path, kura: &Path, cache: &Path) -> String {
    let rw: Vec<String> = writable(p, cache).iter().map(|d| unit_path(d)).collect();
    format!(
        "[Unit]\n\
         Description=kura backup, profile {name}\n\
         Documentation=man:kura-run(1)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={kura} run --config {config} {name}\n\
         Environment=KURA_CACHE_DIR={cache}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         CPUSchedulingPolicy=batch\n\
         ProtectSystem=strict\n\
         ReadWritePaths=-{rw}\n\
         ProtectKernelTunables=true\n\
         ProtectControlGroups=true\n\
         RestrictSUIDSGID=true\n\
         LockPersonality=true\n",
        kura = unit_path(kura),
        config = unit_path(config),
        cache = unit_path(cache),
        rw = rw.join(" -"),
    )
}

/// The timer unit: daily at `h:m`, persistent, spread by `delay` minutes.
fn timer(name: &str, (h, m): (u8, u8), delay: u32) -> String {
    format!(
        "[Unit]\n\
         Description=kura backup, profile {name}, nightly\n\
         \n\
         [Timer]\n\
         OnCalendar=*-*-* {h:02}:{m:02}:00\n\
         Persistent=true\n\
         RandomizedDelaySec={delay}min\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// The cron.d entry (run as root, idle I/O, low priority).
fn cron_entry(name: &str, config: &Path, kura: &Path, (h, m): (u8, u8)) -> String {
    format!(
        "# kura backup, profile {name} (written by `kura schedule install`)\n\
         {m} {h} * * * root nice -n 10 ionice -c 3 {} run --config {} {name}\n",
        kura.display(),
        config.display()
    )
}

fn install(args: &InstallArgs) -> Result<()> {
    let t = &args.target;
    let (name, p, config) = target(t)?;
    if name.contains(char::is_whitespace) {
        bail!("a scheduled profile needs a name without white space: [{name}]");
    }
    let at = parse_at(&args.at)?;
    let kura = std::env::current_exe().context("finding the kura program")?;
    if use_cron(t) {
        let dir = t
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/cron.d"));
        let file = dir.join(format!("kura-{}", status_cmd::file_name(&name)));
        write(&file, &cron_entry(&name, &config, &kura, at))?;
        println!(
            "wrote {}: `kura run {name}` daily at {}",
            file.display(),
            args.at
        );
        return Ok(());
    }
    let dir = t
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/systemd/system"));
    let (svc, tmr) = (unit(&name, "service"), unit(&name, "timer"));
    let cache = super::cache_root().unwrap_or_else(|| PathBuf::from("/var/cache/kura"));
    kura::chunkstore::index::create_private_dir(&cache)
        .with_context(|| format!("creating {}", cache.display()))?;
    let cache = std::path::absolute(&cache)?;
    write(&dir.join(&svc), &service(&name, &p, &config, &kura, &cache))?;
    write(&dir.join(&tmr), &timer(&name, at, args.random_delay))?;
    println!("wrote {} and {} in {}", svc, tmr, dir.display());
    if !t.no_enable {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", &tmr])?;
        println!(
            "enabled {tmr}: `kura run {name}` daily at {} (`systemctl list-timers {tmr}`)",
            args.at
        );
    }
    Ok(())
}

fn write(file: &Path, text: &str) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

fn systemctl(args: &[&str]) -> Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The schedule's files for a profile.
fn files(t: &TargetArgs, name: &str) -> Vec<PathBuf> {
    if use_cron(t) {
        let dir = t
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/cron.d"));
        vec![dir.join(format!("kura-{}", status_cmd::file_name(name)))]
    } else {
        let dir = t
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/systemd/system"));
        vec![
            dir.join(unit(name, "service")),
            dir.join(unit(name, "timer")),
        ]
    }
}

fn status(t: &TargetArgs) -> Result<()> {
    let (name, _, _) = target(t)?;
    for f in files(t, &name) {
        let state = if f.exists() { "present" } else { "absent" };
        println!("{}: {state}", f.display());
    }
    if !use_cron(t) && !t.no_enable && systemd_running() {
        let _ = Command::new("systemctl")
            .args(["list-timers", "--no-pager", &unit(&name, "timer")])
            .status();
    }
    match status_cmd::load_state(&name) {
        Some(s) => println!(
            "last run: started at {} (Unix), exit {}{}",
            s.started,
            s.exit_code,
            s.error.map(|e| format!(": {e}")).unwrap_or_default()
        ),
        None => println!("no run of [{name}] recorded on this machine"),
    }
    Ok(())
}

fn remove(t: &TargetArgs) -> Result<()> {
    let (name, _, _) = target(t)?;
    if !use_cron(t) && !t.no_enable {
        systemctl(&["disable", "--now", &unit(&name, "timer")])?;
    }
    for f in files(t, &name) {
        match std::fs::remove_file(&f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    if !use_cron(t) && !t.no_enable {
        systemctl(&["daemon-reload"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_units_name_the_profile() {
        assert_eq!(parse_at("03:00").unwrap(), (3, 0));
        assert_eq!(parse_at("23:59").unwrap(), (23, 59));
        for bad in ["3:00", "24:00", "03:60", "0300", "03:00:00"] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
        let t = timer("site", (3, 5), 30);
        assert!(t.contains("OnCalendar=*-*-* 03:05:00") && t.contains("Persistent=true"));
        let p = Profile {
            repository: Some("/srv/backup/site".into()),
            ..Profile::default()
        };
        let s = service(
            "site",
            &p,
            Path::new("/etc/kura/kura.toml"),
            Path::new("/usr/bin/kura"),
            Path::new("/root/.cache/kura"),
        );
        assert!(s.contains("ExecStart=/usr/bin/kura run --config /etc/kura/kura.toml site"));
        assert!(
            s.contains("ReadWritePaths=-/root/.cache/kura -/srv/backup/site"),
            "{s}"
        );
        assert_eq!(unit_path(Path::new("/a b/100%")), "\"/a b/100%%\"");
    }
}
