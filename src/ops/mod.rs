//! Operations layer: one file per operation, Options -> fn -> Report.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod find;
pub mod forget;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod tar;
