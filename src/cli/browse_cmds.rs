//! Browsing snapshots without restoring them: the snapshot filter flags
//! of `kura snapshots`.

use std::path::PathBuf;

use clap::Args;
use kura::snapshot;

/// Which snapshots to consider; every condition given must hold.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must be present).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that backed up this path (repeatable: all must be
    /// present), as `kura snapshots` lists them.
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
}

impl FilterArgs {
    pub fn filter(&self) -> snapshot::Filter {
        snapshot::Filter {
            host: self.host.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}
