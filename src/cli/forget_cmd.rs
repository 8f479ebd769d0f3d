//! `kura forget`: retention policy flags in, decisions out.

use anyhow::Result;
use clap::Args;
use kura::ops::forget::{ForgetOptions, forget};
use kura::snapshot::retention::{GroupBy, RetentionPolicy, parse_within};

use super::GlobalArgs;
use super::browse_cmds::FilterArgs;
use super::output::Document;
use super::prune_cmd::{PruneArgs, prune_open};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_hourly: u32,
    /// The same per day (UTC).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: u32,
    /// The same per ISO week.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: u32,
    /// The same per month.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: u32,
    /// The same per year.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_yearly: u32,
    /// Keep snapshots taken within this long before the newest of their
    /// group, e.g. `30d`, `2y6mo`, `12h` (`mo` months of 30 days, `y`
    /// years of 365; a bare `m` is refused as ambiguous).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots with the same values of
    /// these (any of host, paths, tags; empty for one group).
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show what would be kept and removed, and why; delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run prune afterwards (with the prune flags below).
    #[arg(long)]
    pub prune: bool,
    /// Repack until unused space is at most this share (with --prune).
    #[arg(long, default_value = "5%", value_name = "PERCENT", requires = "prune")]
    pub max_unused: String,
    /// Read at most this much of packs for repacking (with --prune).
    #[arg(long, value_name = "SIZE", requires = "prune")]
    pub max_repack_size: Option<String>,
    /// Grace period of the prune (with --prune), e.g. `1h`.
    #[arg(long, value_name = "DURATION", requires = "prune")]
    pub grace: Option<String>,
    /// Prune with grace 0, deleting at once (with --prune): only when no
    /// backup can be running.
    #[arg(long, requires = "prune", conflicts_with = "grace")]
    pub now: bool,
}

/// The forget `args` ask for.
///
/// # Errors
/// A bad `--keep-within` or `--group-by`, a bad `KURA_NOW`.
pub fn forget_options(args: &ForgetArgs) -> Result<ForgetOptions> {
    let policy = RetentionPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within.as_deref().map(parse_within).transpose()?,
        tags: args.keep_tag.clone(),
    };
    Ok(ForgetOptions {
        policy,
        group_by: GroupBy::parse(&args.group_by)?,
        filter: args.filter.filter(),
        dry_run: args.dry_run,
        clock: super::clock_from_env()?,
    })
}

pub fn run_forget(g: &GlobalArgs, args: &ForgetArgs) -> Result<()> {
    let options = forget_options(args)?;
    let prune = PruneArgs {
        max_unused: args.max_unused.clone(),
        max_repack_size: args.max_repack_size.clone(),
        grace: args.grace.clone(),
        now: args.now,
        dry_run: args.dry_run,
    };
    // Flags are checked before anything is removed.
    let prune_options = if args.prune {
        Some(prune.options()?)
    } else {
        None
    };
    let repo = g.open_admin("forget")?;
    let report = forget(&repo, &options)?;
    let json = g.json;
    if g.json {
        Document::of(&report)
            .with("dry_run", args.dry_run)
            .print()?;
    } else {
        print_decisions(&report, args.dry_run);
    }
    if let Some(options) = prune_options {
        if !json {
            println!("prune:");
        }
        prune_open(g, &repo, &options)?;
    }
    Ok(())
}

fn print_decisions(report: &kura::ops::forget::ForgetReport, dry_run: bool) {
    let mut group = None;
    for d in &report.decisions {
        if group.as_ref() != Some(&d.group) {
            println!(
                "{}",
                if d.group.is_empty() {
                    "all snapshots"
                } else {
                    &d.group
                }
            );
            group = Some(d.group.clone());
        }
        let secs = u64::try_from(d.time / 1_000_000_000).unwrap_or(0);
        println!(
            "  {} {}  {:<6} {}",
            &d.id.to_hex()[..16],
            super::key::utc_minutes(secs),
            if d.keep { "keep" } else { "remove" },
            d.reasons.join(", ")
        );
    }
    let gone = report.decisions.iter().filter(|d| !d.keep).count();
    if dry_run {
        println!("dry run: {gone} snapshots would be removed");
    } else {
        println!(
            "{} snapshots removed (their data stays until prune)",
            report.removed.len()
        );
    }
}
