//! Command-line layer: clap definitions, password sources, output, and the
//! mapping from library error kinds to documented exit codes. It converts
//! arguments into library options and prints reports; it holds no logic of
//! its own beyond that.

mod browse_cmds;
mod check_cmd;
mod copy_cmd;
mod docs_cmd;
mod drill_cmd;
pub mod exit;
mod forget_cmd;
mod key;
mod mount_cmd;
mod names;
mod output;
mod password;
mod profile;
mod progress;
mod prune_cmd;
mod recovery;
mod report_cmd;
mod run_cmd;
mod schedule_cmd;
pub mod secrets;
mod serve_cmd;
mod snapshot_cmds;
mod status_cmd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kura::algorithms::crypto::kdf::KdfParams;
use kura::backend::{Backend, Location, RemoteOptions};
use kura::chunkstore::index::ChunkIndex;
use kura::clock::Clock;
use kura::ops::session::{IndexOptions, open_index};
use kura::repository::unlock::UnlockOptions;
use kura::repository::{InitOptions, Repository};

pub use password::PasswordSource;

/// A backup that committed a snapshot with files missing (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("the snapshot is incomplete: some files could not be read (see the warnings)")]
pub struct Incomplete;

/// A command line asking for what kura refuses without an explicit
/// option (exit code 2, as clap's own usage errors): plain http to a
/// remote S3 endpoint without `--insecure-http`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Usage(#[from] kura::Error);

/// Maps an error from anywhere in the program to its exit code.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<Incomplete>().is_some() {
        return exit::INCOMPLETE;
    }
    if err.downcast_ref::<Usage>().is_some() {
        return exit::USAGE;
    }
    if err.downcast_ref::<status_cmd::NeedsAttention>().is_some() {
        return exit::ATTENTION;
    }
    err.chain()
        .find_map(|c| c.downcast_ref::<kura::Error>())
        .map_or(exit::ERROR, |e| exit::for_kind(e.kind()))
}

#[derive(Parser, Debug)]
#[command(
    name = "kura",
    version,
    about = "Deduplicating, compressed, encrypted backups",
    after_help = "Environment:\n  KURA_NOW  Take this time as now: an RFC 3339 time in UTC \
                  (2026-12-04T03:00:00Z) or Unix seconds (@1796353200). It dates \
                  snapshots and key slots and decides when prune's grace has passed; \
                  for tests and for replaying a schedule."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location: a local directory, sftp://[user@]host[:port]/path
    /// (host//abs/path for an absolute path), kura+ssh://[user@]host[:port]/path
    /// (a server running `kura serve`) or s3://bucket/prefix.
    #[arg(short = 'r', long = "repo", env = "KURA_REPOSITORY", global = true)]
    pub repo: Option<PathBuf>,
    /// Read the password from this file (first line).
    #[arg(
        long,
        env = "KURA_PASSWORD_FILE",
        global = true,
        hide_env_values = true
    )]
    pub password_file: Option<PathBuf>,
    /// Read the password from this key file (first line), for unattended
    /// use such as a put-only key on a server; refused unless only its
    /// owner may access it (mode 0600 or stricter). Wins over the other
    /// password sources.
    #[arg(long, env = "KURA_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Run this shell command and use its first line of output as the password.
    #[arg(
        long,
        env = "KURA_PASSWORD_COMMAND",
        global = true,
        hide_env_values = true
    )]
    pub password_command: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// S3 endpoint for s3:// locations, e.g. http://127.0.0.1:3900
    /// (default: AWS).
    #[arg(long, env = "KURA_S3_ENDPOINT", global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region for s3:// locations (e.g. garage, us-east-1).
    #[arg(long, env = "KURA_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// ssh configuration file for sftp:// and kura+ssh:// locations (ssh -F),
    /// instead of ~/.ssh/config.
    #[arg(long, env = "KURA_SSH_CONFIG", global = true, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Seconds one request to a remote repository may take, a whole pack
    /// upload (about 8 MiB) included, before it is retried (default 120);
    /// a repository that stays silent fails the run after the retries.
    #[arg(long, env = "KURA_IO_TIMEOUT", global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    pub io_timeout: Option<std::time::Duration>,
    /// Unlock with this key slot only (an id or unique prefix, as `kura key
    /// list` shows). Without it kura tries the slot that opened the
    /// repository last on this machine, then the others, up to 8 slots and
    /// a bound on password-hashing work; a slot beyond that bound is named
    /// in the error and opened with this option.
    #[arg(long, env = "KURA_KEY_SLOT", global = true, value_name = "ID")]
    pub key_slot: Option<String>,
    /// Allow plain http to an S3 endpoint that is not on this machine
    /// (without it only localhost, 127.0.0.0/8 and ::1 may be http).
    /// KURA_INSECURE_HTTP: 0, false, no, off or empty mean no.
    #[arg(
        long,
        env = "KURA_INSECURE_HTTP",
        global = true,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub insecure_http: bool,
    /// The kura program to run on the server for kura+ssh:// locations
    /// (default: kura; an authorized_keys forced command overrides it).
    #[arg(
        long,
        env = "KURA_SERVE_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    pub serve_command: Option<String>,
    /// How much memory a backup or copy may use: `default`, or `small`
    /// for machines with 1 GB or less (README, "Memory"): one worker
    /// thread, one upload at a time (two to a remote repository, and two
    /// reads in flight), 4 MiB packs, an index file every 8 packs, 2 MiB
    /// page caches; slower, see the README.
    #[arg(
        long,
        env = "KURA_MEMORY",
        global = true,
        value_enum,
        default_value = "default"
    )]
    pub memory: MemoryProfile,
}

/// The page cache of the index cache (and of the tables beside it: prune's
/// live set, copy's translations) with `--memory small`; the default is
/// `kura::chunkstore::index::CACHE_BYTES`.
const SMALL_INDEX_CACHE: usize = 2 << 20;

/// Requests to a remote repository at once with `--memory small` (reads
/// in flight, uploads; each may hold a pack). The default is the
/// backend's: 8 for S3.
const SMALL_REMOTE_REQUESTS: usize = 2;

/// The memory settings `--memory` chooses.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryProfile {
    Default,
    Small,
}

impl GlobalArgs {
    /// How chunk stores that write are set up for `--memory`.
    pub fn store_options(&self) -> kura::chunkstore::ChunkStoreOptions {
        let default = kura::chunkstore::ChunkStoreOptions::default();
        match self.memory {
            MemoryProfile::Default => default,
            MemoryProfile::Small => kura::chunkstore::ChunkStoreOptions {
                packer: kura::chunkstore::pack::PackerOptions {
                    target_size: 4 << 20,
                    open_packs: 2,
                },
                index_every: 8,
                segment: 512 << 10,
                upload_queue: 1,
                upload_threads: 1,
                ..default
            },
        }
    }

    /// Applies `--memory` to the process: with `small`, one worker thread.
    fn apply_memory(&self) {
        if self.memory == MemoryProfile::Small {
            // Fails only if the pool exists already; then it stays.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build_global();
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init {
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Manage the repository's key slots (passwords).
    Key {
        #[command(subcommand)]
        action: key::KeyCommand,
    },
    /// Back up files and directories into a new snapshot.
    Backup(snapshot_cmds::BackupArgs),
    /// List snapshots.
    Snapshots(browse_cmds::FilterArgs),
    /// Restore a snapshot (or paths of it) into a directory.
    Restore(snapshot_cmds::RestoreArgs),
    /// List the files of a snapshot.
    Ls(snapshot_cmds::LsArgs),
    /// Write a file of a snapshot to standard output, or a directory (or
    /// the whole snapshot) as a tar stream.
    Dump(snapshot_cmds::DumpArgs),
    /// Show what changed between two snapshots.
    Diff(browse_cmds::DiffArgs),
    /// Find files by name or path glob across snapshots.
    Find(browse_cmds::FindArgs),
    /// Browse every snapshot as a read-only file system (FUSE), in the
    /// foreground until Ctrl-C or SIGTERM.
    Mount(mount_cmd::MountArgs),
    /// Verify the repository: structure, and with --read-data every blob.
    Check(check_cmd::CheckArgs),
    /// Repair the repository's metadata.
    Repair {
        #[command(subcommand)]
        action: check_cmd::RepairCommand,
    },
    /// Copy snapshots into another repository (its own password and
    /// keys), sending only the data it lacks.
    Copy(copy_cmd::CopyArgs),
    /// Delete snapshots that a retention policy does not keep.
    Forget(forget_cmd::ForgetArgs),
    /// Delete data no snapshot needs, in two phases safe with running
    /// backups (format-spec/12): condemn now, delete in a later prune.
    Prune(prune_cmd::PruneArgs),
    /// Run a profile of kura.toml: hooks, backup, forget, prune, check,
    /// notification; the nightly job.
    Run(run_cmd::RunArgs),
    /// Say whether backups need attention: the last success too old, the
    /// last run failed, the last check found damage (exit 21).
    Status(status_cmd::StatusArgs),
    /// Rehearse a restore: read back a random sample of the newest
    /// snapshot's files (and the dumps), compare with the files here.
    Drill(drill_cmd::DrillArgs),
    /// Write a self-contained HTML page of a profile's backups: what needs
    /// attention, snapshots per day, repository size and bytes added.
    Report(report_cmd::ReportArgs),
    /// Run a profile nightly: systemd timer (or cron) install, status,
    /// remove.
    Schedule {
        #[command(subcommand)]
        action: schedule_cmd::ScheduleCommand,
    },
    /// Show the repository configuration, or check a kura.toml.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Serve one repository directory on stdin/stdout for kura+ssh://
    /// clients (run by sshd, usually as an authorized_keys forced command).
    Serve(serve_cmd::ServeArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(docs_cmd::CompletionsArgs),
    /// Write kura's manual pages (kura.1, kura-backup.1, ...) into a
    /// directory.
    Man(docs_cmd::ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print format version, features, algorithms and chunker parameters.
    Show,
    /// Validate a kura.toml and print the profile a run would use
    /// (secrets masked).
    Check(run_cmd::ConfigCheckArgs),
}

/// Argon2id cost for a new key slot.
#[derive(Args, Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)] // the flags are --kdf-*
pub struct KdfArgs {
    /// Argon2id memory in KiB.
    #[arg(long, default_value_t = KdfParams::DEFAULT.m_cost)]
    pub kdf_memory: u32,
    /// Argon2id passes.
    #[arg(long, default_value_t = KdfParams::DEFAULT.t_cost)]
    pub kdf_passes: u32,
    /// Argon2id lanes.
    #[arg(long, default_value_t = KdfParams::DEFAULT.p_cost)]
    pub kdf_lanes: u32,
}

impl From<KdfArgs> for KdfParams {
    fn from(a: KdfArgs) -> Self {
        Self {
            m_cost: a.kdf_memory,
            t_cost: a.kdf_passes,
            p_cost: a.kdf_lanes,
        }
    }
}

/// Opens the repository in `backend`: version check first, then the
/// password from `password`.
fn open_at(
    backend: Arc<dyn Backend>,
    password: &PasswordSource,
    prompt: &str,
) -> Result<Repository> {
    open_with_slot(backend, password, prompt, None)
}

/// [`open_at`] with only the key slot `key_slot` (a prefix) tried, if
/// given; the key slot hint lives in the cache root.
fn open_with_slot(
    backend: Arc<dyn Backend>,
    password: &PasswordSource,
    prompt: &str,
    key_slot: Option<&str>,
) -> Result<Repository> {
    Repository::read_header(backend.as_ref())?;
    let password = password.read(prompt)?;
    let unlock = UnlockOptions {
        key_slot: key_slot.map(str::to_owned),
        cache_root: cache_root(),
    };
    let mut repo = Repository::open_with(backend, password.as_bytes(), &unlock)?;
    repo.set_clock(clock_from_env()?);
    Ok(repo)
}

/// The cache root (format-spec/06): `$KURA_CACHE_DIR`,
/// `$XDG_CACHE_HOME/kura`, `~/.cache/kura`, the first that is set.
fn cache_root() -> Option<PathBuf> {
    std::env::var_os("KURA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kura")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kura")))
}

/// Compares `repo` with this machine's memory of it (`ops::history`) and
/// remembers what it sees. A repository that went back is returned as the
/// error to end the command with once its own work is done (exit 19).
fn history_alarm(repo: &Repository) -> Result<Option<kura::Error>> {
    let root = cache_root();
    let report = kura::ops::history::compare_and_remember(repo, root.as_deref())?;
    let Some(root) = root else { return Ok(None) };
    let file = kura::ops::history::history_file(&root, repo.id());
    Ok(report.into_result(&file).err())
}

/// Ends a command with the alarm [`history_alarm`] returned, if any.
fn raise(alarm: Option<kura::Error>) -> Result<()> {
    alarm.map_or(Ok(()), |e| Err(e.into()))
}

impl GlobalArgs {
    /// The index of `repo` from its cache under [`cache_root`], synced,
    /// its page cache as `--memory` sets it.
    fn synced_index(&self, repo: &Repository) -> Result<ChunkIndex> {
        let options = IndexOptions {
            cache_root: cache_root(),
            sync: true,
            cache_bytes: match self.memory {
                MemoryProfile::Default => None,
                MemoryProfile::Small => Some(SMALL_INDEX_CACHE),
            },
        };
        Ok(open_index(repo, &options)?)
    }

    fn backend(&self) -> Result<Arc<dyn Backend>> {
        let path = self
            .repo
            .clone()
            .context("no repository given: use -r/--repo or set KURA_REPOSITORY")?;
        self.backend_at(&path)
    }

    /// The storage at a repository location given on the command line
    /// (`-r`, `copy --from`, `copy --to`): a local directory,
    /// `sftp://...` or `s3://...` (README, "Where repositories live").
    /// Every location goes through here, so each command takes the same
    /// kinds.
    fn backend_at(&self, location: &Path) -> Result<Arc<dyn Backend>> {
        let text = location.to_str();
        let location = match text {
            Some(text) => Location::parse(text, &self.remote_options())?
                .with_serve_command(self.serve_command.as_deref()),
            // A name that is not UTF-8 can only be a local path.
            None => Location::Local(location.to_path_buf()),
        };
        location.check_transport().map_err(Usage)?;
        let backend = location.open()?;
        if !location.is_remote() {
            return Ok(backend);
        }
        // Remote: retried, and its metadata cached on this machine. The
        // cache is keyed by where the repository is (the endpoint too).
        let key = match &location {
            Location::S3(s3) => format!(
                "{} at {}",
                s3.url(),
                s3.endpoint.as_deref().unwrap_or("aws")
            ),
            other => other.display(),
        };
        let max_concurrency = match self.memory {
            MemoryProfile::Default => usize::MAX,
            MemoryProfile::Small => SMALL_REMOTE_REQUESTS,
        };
        Ok(kura::backend::decorate_remote_with(
            backend,
            cache_root().as_deref(),
            &key,
            max_concurrency,
        ))
    }

    fn remote_options(&self) -> RemoteOptions {
        RemoteOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            ssh_config: self.ssh_config.clone(),
            io_timeout: self.io_timeout,
            insecure_http: self.insecure_http,
        }
    }

    fn password_source(&self) -> PasswordSource {
        PasswordSource::from_args(self.password_command.clone(), self.password_file.clone())
            .with_key_file(self.key_file.clone())
    }

    /// Opens the repository: version check first, then the password.
    fn open(&self) -> Result<Repository> {
        open_with_slot(
            self.backend()?,
            &self.password_source(),
            "repository password",
            self.key_slot.as_deref(),
        )
    }

    /// [`Self::open`] for a command that needs the admin key (`what`
    /// names it): a put-only key is refused before any work, with exit
    /// code 19.
    fn open_admin(&self, what: &str) -> Result<Repository> {
        let repo = self.open()?;
        repo.require_admin(what)?;
        Ok(repo)
    }
}

/// Runs one parsed command line.
///
/// # Errors
/// Whatever the command fails with; [`exit_code`] maps it.
pub fn run(cli: &Cli) -> Result<()> {
    let g = &cli.global;
    g.apply_memory();
    match &cli.command {
        Command::Init { kdf } => {
            let backend = g.backend()?;
            let password = g
                .password_source()
                .read_new("password for the new repository")?;
            let opts = InitOptions {
                kdf: (*kdf).into(),
                clock: clock_from_env()?,
                ..InitOptions::default()
            };
            let repo = Repository::init(backend, password.as_bytes(), &opts)?;
            if g.json {
                output::Document::object()
                    .with("repository_id", repo.id())
                    .print()?;
            } else {
                println!(
                    "created kura repository {} at {}",
                    repo.id(),
                    repo.backend().describe()
                );
                println!("Keep the password safe: without it the data cannot be read.");
            }
            Ok(())
        }
        Command::Key { action } => key::run(g, action),
        Command::Backup(args) => {
            if snapshot_cmds::run_backup(g, args)? {
                return Err(Incomplete.into());
            }
            Ok(())
        }
        Command::Snapshots(filter) => snapshot_cmds::run_snapshots(g, filter),
        Command::Restore(args) => snapshot_cmds::run_restore(g, args),
        Command::Ls(args) => snapshot_cmds::run_ls(g, args),
        Command::Dump(args) => snapshot_cmds::run_dump(g, args),
        Command::Diff(args) => browse_cmds::run_diff(g, args),
        Command::Find(args) => browse_cmds::run_find(g, args),
        Command::Mount(args) => mount_cmd::run_mount(g, args),
        Command::Copy(args) => copy_cmd::run_copy(g, args),
        Command::Forget(args) => forget_cmd::run_forget(g, args),
        Command::Prune(args) => prune_cmd::run_prune(g, args),
        Command::Check(args) => check_cmd::run_check(g, args),
        Command::Repair { action } => check_cmd::run_repair(g, action),
        Command::Config {
            action: ConfigCommand::Show,
        } => show_config(g),
        Command::Config {
            action: ConfigCommand::Check(args),
        } => run_cmd::run_config_check(g, args),
        Command::Run(args) => run_cmd::run_profile(g, args),
        Command::Status(args) => status_cmd::run_status(g, args),
        Command::Drill(args) => drill_cmd::run_drill(g, args),
        Command::Report(args) => report_cmd::run_report(g, args),
        Command::Schedule { action } => schedule_cmd::run_schedule(action),
        Command::Serve(args) => serve_cmd::run_serve(args),
        Command::Completions(args) => docs_cmd::run_completions(args),
        Command::Man(args) => docs_cmd::run_man(args),
    }
}

/// `config show --json`: the clear header's fields and the config body.
#[derive(serde::Serialize)]
struct ConfigShown<'a> {
    repository_id: kura::id::RepoId,
    format_version: u32,
    mandatory_features: u64,
    compatible_features: u64,
    config: &'a kura::format::config::ConfigBody,
}

fn show_config(g: &GlobalArgs) -> Result<()> {
    let repo = g.open()?;
    let (h, c) = (repo.header(), repo.config());
    if g.json {
        output::Document::of(&ConfigShown {
            repository_id: h.repo,
            format_version: h.version,
            mandatory_features: h.mandatory_features,
            compatible_features: h.compatible_features,
            config: c,
        })
        .print()?;
    } else {
        let p = c.chunker.params;
        println!("repository   {}", h.repo);
        println!("location     {}", repo.backend().describe());
        println!(
            "format       v{} (mandatory features {:#x}, compatible {:#x})",
            h.version, h.mandatory_features, h.compatible_features
        );
        println!(
            "chunker      {} min {} avg {} max {} normalization {}",
            c.chunker.algorithm, p.min, p.avg, p.max, p.normalization
        );
        println!("chunk id     {}", c.id);
        println!("encryption   {}", c.aead);
        println!("compression  {}", c.compression);
        println!("key slots    {}", c.kdf);
        println!("packs        {}", c.pack);
    }
    Ok(())
}

/// `--io-timeout`: a duration (`90s`, `2min`, plain seconds;
/// `kura::snapshot::duration`); at least one second.
fn parse_seconds(text: &str) -> std::result::Result<std::time::Duration, String> {
    match kura::snapshot::duration::parse_duration(text).map_err(|e| e.to_string())? {
        0 => Err("must be at least 1 second".into()),
        s => Ok(std::time::Duration::from_secs(s)),
    }
}

/// The clock of this run: stopped at `KURA_NOW` when that is set and not
/// empty (`kura::clock`; tests, replaying a schedule), else the system's.
///
/// # Errors
/// `KURA_NOW` is not a time as `kura::snapshot::parse_instant` reads it.
fn clock_from_env() -> Result<Clock> {
    match std::env::var("KURA_NOW") {
        Ok(text) if !text.is_empty() => {
            let ns = kura::snapshot::parse_instant(&text).context("KURA_NOW")?;
            Ok(Clock::Fixed(ns))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(Clock::System),
        Err(e) => Err(anyhow::anyhow!("KURA_NOW: {e}")),
    }
}
