//! Layer 6 (CLI): `kura.toml`, the nightly job's one configuration file
//! (README, "The nightly job"). Each top-level table is a named profile:
//! where the repository is and how to open it, what to back up (paths,
//! commands whose output is stored, disk images), the retention policy,
//! prune and check settings, hooks and notifications. Parsed with serde
//! and toml into closed structs: an unknown key, a wrong type or a bad
//! duration is refused with its line and column, before anything runs.
//!
//! The file is found at `--config`, `$KURA_CONFIG`, `/etc/kura/kura.toml`
//! or `~/.config/kura/kura.toml`, the first that is given or exists. The
//! options a profile sets for the repository are defaults: the same
//! option given on the command line (or by its environment variable)
//! wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The whole file: profiles by name.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ConfigFile {
    pub profiles: BTreeMap<String, Profile>,
}

/// One named profile.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The repository location, as `-r` takes it.
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key_slot: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub ssh_config: Option<PathBuf>,
    /// Seconds, as `--io-timeout` takes them.
    pub io_timeout: Option<u64>,
    /// Where a run writes its Prometheus textfile (as `run
    /// --metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// The snapshot's host name (default: this machine's).
    pub host: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub sources: Sources,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub prune: Prune,
    #[serde(default)]
    pub check: Check,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub notify: Notify,
}

/// What one snapshot of the profile holds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Snapshot path -> shell command whose standard output is stored
    /// there (`"db/site.sql" = "pg_dump site"`).
    #[serde(default)]
    pub commands: BTreeMap<PathBuf, String>,
    /// Disk images or block devices.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    #[serde(default)]
    pub one_file_system: bool,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.commands.is_empty() && self.images.is_empty()
    }
}

/// `forget`'s policy; nothing set means no forget (and no prune).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tag: Vec<String>,
    /// As `forget --group-by` (default `host,paths`).
    pub group_by: Option<String>,
}

impl Retention {
    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        self.keep_last
            + self.keep_hourly
            + self.keep_daily
            + self.keep_weekly
            + self.keep_monthly
            + self.keep_yearly
            > 0
            || self.keep_within.is_some()
            || !self.keep_tag.is_empty()
    }
}

/// The prune after forget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// Whether a run prunes after forgetting (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// As `prune --grace` (default 1h).
    pub grace: Option<String>,
    /// As `prune --max-unused` (default 5%).
    pub max_unused: Option<String>,
}

impl Default for Prune {
    fn default() -> Self {
        Self {
            enabled: true,
            grace: None,
            max_unused: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The check at the end of a run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Whether a run checks (default true; structure only unless a subset
    /// is given).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// As `check --read-data-subset` (`5%`, `1/30`).
    pub read_data_subset: Option<String>,
    /// `kura status` says so when the last check is older than this (a
    /// duration, e.g. `8d`).
    pub max_age: Option<String>,
    /// Read every pack (`check --read-data`) when the last such check on
    /// this machine is older than this (a duration, e.g. `30d`).
    pub full_every: Option<String>,
}

impl Default for Check {
    fn default() -> Self {
        Self {
            enabled: true,
            read_data_subset: None,
            max_age: None,
            full_every: None,
        }
    }
}

/// Shell commands run around the backup.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before anything; one that fails fails the run (no snapshot).
    #[serde(default)]
    pub before: Vec<String>,
    /// After a run that succeeded.
    #[serde(default)]
    pub after: Vec<String>,
    /// After a run that failed.
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// How long each hook may take (a duration, default `10min`).
    pub timeout: Option<String>,
}

/// How a run tells someone.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A shell command run with the run's summary on standard input and
    /// `KURA_RUN_STATUS` (`ok` or `failed`) in its environment, e.g. a
    /// `mail` command.
    pub command: Option<String>,
    /// Also notify when the run succeeded (default: only on failure).
    #[serde(default)]
    pub on_success: bool,
    /// A healthchecks-style ping URL: fetched after every run that
    /// succeeded, and `URL/fail` after one that failed.
    pub url: Option<String>,
}

/// Which profile a command works on, and where the configuration is:
/// the arguments every profile command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ProfileArgs {
    /// The profile (default: the only one in the configuration).
    pub profile: Option<String>,
    /// The configuration file (default: /etc/kura/kura.toml, then
    /// ~/.config/kura/kura.toml).
    #[arg(long, env = "KURA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ProfileArgs {
    /// The configuration file, read and validated, and the profile.
    ///
    /// # Errors
    /// No configuration file found; as [`load`] and
    /// [`ConfigFile::profile`].
    pub fn load(&self) -> Result<(PathBuf, String, Profile)> {
        let path = locate(self.config.as_deref()).ok_or_else(|| {
            anyhow::anyhow!(
                "no configuration file: give --config FILE (or KURA_CONFIG), or write \
                 /etc/kura/kura.toml or ~/.config/kura/kura.toml"
            )
        })?;
        let (name, profile) = load(&path)?.profile(self.profile.as_deref())?;
        Ok((path, name, profile))
    }
}

/// Where the configuration file is: `given` (`--config` or
/// `$KURA_CONFIG`), else the first of `/etc/kura/kura.toml` and
/// `~/.config/kura/kura.toml` that exists.
pub fn locate(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_owned());
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/kura/kura.toml"));
    [Some(PathBuf::from("/etc/kura/kura.toml")), home]
        .into_iter()
        .flatten()
        .find(|p| p.exists())
}

/// Reads and parses the file at `path`.
///
/// # Errors
/// A file that cannot be read; TOML or schema errors, with the line and
/// column and the file's name.
pub fn load(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses a configuration file's text and checks each profile's values.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str) -> Result<ConfigFile> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, p) in &file.profiles {
        p.validate().with_context(|| format!("profile [{name}]"))?;
    }
    Ok(file)
}

impl ConfigFile {
    /// The profile named `name`, or the only one when no name is given.
    ///
    /// # Errors
    /// No such profile, or several and none named.
    pub fn profile(&self, name: Option<&str>) -> Result<(String, Profile)> {
        let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
        let chosen = match name {
            Some(n) => n,
            None if names.len() == 1 => names[0],
            None => bail!(
                "the configuration has {} profiles ({}); name one",
                names.len(),
                names.join(", ")
            ),
        };
        match self.profiles.get(chosen) {
            Some(p) => Ok((chosen.to_owned(), p.clone())),
            None => bail!(
                "no profile [{chosen}] in the configuration (it has: {})",
                names.join(", ")
            ),
        }
    }
}

impl Profile {
    /// Checks what serde cannot: durations, sizes and shares parse, and at
    /// most one password source is given.
    ///
    /// # Errors
    /// The first bad value, named by its key.
    pub fn validate(&self) -> Result<()> {
        let sources = [
            self.password_file.is_some(),
            self.password_command.is_some(),
            self.key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("give one of password_file, password_command and key_file");
        }
        if let Some(w) = &self.retention.keep_within {
            kura::snapshot::retention::parse_within(w).context("retention.keep_within")?;
        }
        if let Some(g) = &self.retention.group_by {
            kura::snapshot::retention::GroupBy::parse(g).context("retention.group_by")?;
        }
        if let Some(g) = &self.prune.grace {
            super::prune_cmd::parse_grace(g).context("prune.grace")?;
        }
        if let Some(m) = &self.prune.max_unused {
            super::prune_cmd::parse_percent(m).context("prune.max_unused")?;
        }
        if let Some(m) = &self.check.max_age {
            super::prune_cmd::parse_grace(m).context("check.max_age")?;
        }
        if let Some(m) = &self.check.full_every {
            super::prune_cmd::parse_grace(m).context("check.full_every")?;
        }
        if let Some(u) = &self.notify.url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            bail!("notify.url: not an http(s) URL");
        }
        if let Some(s) = &self.check.read_data_subset {
            kura::ops::check::Subset::parse(s).context("check.read_data_subset")?;
        }
        self.hook_timeout().context("hooks.timeout")?;
        for name in self.sources.commands.keys() {
            if name.as_os_str().is_empty() {
                bail!("sources.commands: a command needs a snapshot path");
            }
        }
        Ok(())
    }

    /// How long one hook may run.
    ///
    /// # Errors
    /// A bad duration.
    pub fn hook_timeout(&self) -> Result<std::time::Duration> {
        let text = self.hooks.timeout.as_deref().unwrap_or("10min");
        Ok(std::time::Duration::from_secs(
            super::prune_cmd::parse_grace(text)?,
        ))
    }

    /// The profile as `config check` prints it: password commands and
    /// notification commands masked (they may hold secrets).
    pub fn masked(&self) -> Self {
        let mask = |s: &Option<String>| s.as_ref().map(|_| "(set, not shown)".to_owned());
        let mut p = self.clone();
        p.password_command = mask(&p.password_command);
        p.notify.command = mask(&p.notify.command);
        p.notify.url = p.notify.url.as_deref().map(super::status_cmd::masked_url);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = r#"
[site]
repository = "/srv/backup/site"
key_file = "/etc/kura/site.key"
host = "web1"
tags = ["nightly"]

[site.sources]
paths = ["/srv/www", "/etc/nginx"]
exclude = ["*.log"]
commands = { "db/site.sql" = "pg_dump site" }

[site.retention]
keep_daily = 7
keep_within = "2d"

[site.prune]
grace = "1h"

[site.check]
read_data_subset = "5%"

[site.hooks]
before = ["true"]
timeout = "30s"

[site.notify]
command = "mail -s kura root"
"#;

    #[test]
    fn a_profile_parses_and_is_the_default_when_alone() {
        let file = parse(SITE).unwrap();
        let (name, p) = file.profile(None).unwrap();
        assert_eq!(name, "site");
        assert_eq!(p.sources.paths.len(), 2);
        assert_eq!(p.sources.commands[Path::new("db/site.sql")], "pg_dump site");
        assert_eq!(p.retention.keep_daily, 7);
        assert!(p.retention.is_set() && p.prune.enabled && p.check.enabled);
        assert_eq!(p.hook_timeout().unwrap().as_secs(), 30);
        let masked = p.masked();
        assert_eq!(masked.notify.command.as_deref(), Some("(set, not shown)"));
        assert!(file.profile(Some("other")).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_where() {
        let err = parse(&SITE.replace("keep_daily", "keep_dayly")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("keep_dayly") && text.contains("line"),
            "{text}"
        );
        let err = parse(&SITE.replace("\"2d\"", "\"2m\"")).unwrap_err();
        assert!(
            format!("{err:#}").contains("retention.keep_within"),
            "{err:#}"
        );
        let err = parse(&SITE.replace("\"5%\"", "\"lots\"")).unwrap_err();
        assert!(format!("{err:#}").contains("read_data_subset"), "{err:#}");
        let two = SITE.replace("host = ", "password_file = \"/x\"\nhost = ");
        assert!(format!("{:#}", parse(&two).unwrap_err()).contains("one of"));
    }

    #[test]
    fn several_profiles_need_a_name() {
        let file = parse("[a]\nrepository = \"/a\"\n[b]\nrepository = \"/b\"\n").unwrap();
        let err = file.profile(None).unwrap_err().to_string();
        assert!(err.contains("a, b"), "{err}");
        assert_eq!(file.profile(Some("b")).unwrap().0, "b");
    }
}
