//! Integration tests, one binary so the crate links once; one module per area.

// Test fixtures take owned values for brevity.
#![allow(clippy::needless_pass_by_value, clippy::too_many_lines)]

#[path = "integration/common.rs"]
mod common;

#[path = "integration/backends.rs"]
mod backends;
#[path = "integration/bounded.rs"]
mod bounded;
#[path = "integration/browse.rs"]
mod browse;
#[path = "integration/cache.rs"]
mod cache;
#[path = "integration/check.rs"]
mod check;
#[path = "integration/chunkstore.rs"]
mod chunkstore;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/copy.rs"]
mod copy;
#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/crash_kill.rs"]
mod crash_kill;
#[path = "integration/damage.rs"]
mod damage;
#[path = "integration/exit_codes.rs"]
mod exit_codes;
#[path = "integration/future.rs"]
mod future;
#[path = "integration/hygiene.rs"]
mod hygiene;
#[path = "integration/images.rs"]
mod images;
#[path = "integration/layering.rs"]
mod layering;
#[path = "integration/mount.rs"]
mod mount;
#[path = "integration/nightly.rs"]
mod nightly;
#[path = "integration/prune.rs"]
mod prune;
#[path = "integration/prune_full_disk.rs"]
mod prune_full_disk;
#[path = "integration/race.rs"]
mod race;
#[path = "integration/remote.rs"]
mod remote;
#[path = "integration/repair.rs"]
mod repair;
#[path = "integration/restore_safety.rs"]
mod restore_safety;
#[path = "integration/retention.rs"]
mod retention;
#[path = "integration/roles.rs"]
mod roles;
#[path = "integration/rollback.rs"]
mod rollback;
#[path = "integration/run.rs"]
mod run;
#[path = "integration/security.rs"]
mod security;
#[path = "integration/serve.rs"]
mod serve;
#[path = "integration/servers.rs"]
mod servers;
#[path = "integration/snapshots.rs"]
mod snapshots;
#[path = "integration/source.rs"]
mod source;
#[path = "integration/strays.rs"]
mod strays;
#[path = "integration/vectors.rs"]
mod vectors;
#[path = "integration/vectors_roles.rs"]
mod vectors_roles;
#[path = "integration/walk.rs"]
mod walk;
#[path = "integration/walkthrough.rs"]
mod walkthrough;
