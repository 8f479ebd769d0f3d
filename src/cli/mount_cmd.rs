//! `kura mount`: the CLI side of `kura::ops::mount`: arguments into
//! [`MountOptions`], the mount point checked before the password is asked,
//! and SIGINT/SIGTERM turned into a clean unmount (the command then exits
//! 0). Runs in the foreground until unmounted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use kura::ops::mount::{MountOptions, Unmount, check_mountpoint, mount};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::GlobalArgs;
use super::browse_cmds::FilterArgs;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount the repository at.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Let other users in too (FUSE's allow_other; a user other than root
    /// needs user_allow_other in /etc/fuse.conf). File modes still apply.
    #[arg(long)]
    pub allow_other: bool,
    /// MiB of decrypted chunks kept in memory.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub cache_size: usize,
    /// Seconds a snapshot listing is kept before a listing of the
    /// directories above the snapshots reads it again (0: every time).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub refresh: u64,
}

pub fn run_mount(g: &GlobalArgs, args: &MountArgs) -> Result<()> {
    check_mountpoint(&args.mountpoint)?;
    let repo = g.open_admin("mount")?;
    let index = g.synced_index(&repo)?;
    let options = MountOptions {
        filter: args.filter.filter(),
        allow_other: args.allow_other,
        cache_bytes: args.cache_size.saturating_mul(1 << 20),
        refresh: Duration::from_secs(args.refresh),
        ..MountOptions::default()
    };
    // Installed before mounting: a signal that comes early is not lost.
    let signals = Signals::new([SIGINT, SIGTERM])?;
    mount(&repo, &index, &args.mountpoint, &options, |unmount| {
        eprintln!(
            "mounted {} at {}; Ctrl-C or SIGTERM unmounts",
            repo.backend().describe(),
            args.mountpoint.display()
        );
        unmount_on_signal(signals, unmount);
    })?;
    Ok(())
}

/// Unmounts when one of `signals` arrives (tried again at the next one if
/// the kernel refused).
fn unmount_on_signal(mut signals: Signals, mut unmount: Unmount) {
    std::thread::spawn(move || {
        for _ in signals.forever() {
            match unmount.unmount() {
                Ok(()) => return,
                Err(e) => eprintln!("kura: {e}"),
            }
        }
    });
}
