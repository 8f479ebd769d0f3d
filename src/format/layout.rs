//! Repository layout (format-spec/07-layout-and-writes.md): the name of
//! every object. Names are random ids and reveal nothing of the content.
//!
//! ```text
//! config
//! keys/<slot id>
//! data/<first 2 hex of pack id>/<pack id>
//! index/<index id>
//! snapshots/<snapshot id>
//! prune/<record id>
//! ```

use crate::error::{Error, Result};
use crate::id::{IndexId, KeySlotId, PackId, RecordId, SnapshotId};

pub const CONFIG: &str = "config";
/// Plain text for a person who finds the repository (format-spec/07);
/// never read by kura.
pub const README: &str = "README";
pub const KEYS_DIR: &str = "keys";
pub const DATA_DIR: &str = "data";
pub const INDEX_DIR: &str = "index";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const PRUNE_DIR: &str = "prune";

pub fn key_path(id: &KeySlotId) -> String {
    format!("{KEYS_DIR}/{id}")
}

pub fn pack_path(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{DATA_DIR}/{}/{hex}", &hex[..2])
}

pub fn index_path(id: &IndexId) -> String {
    format!("{INDEX_DIR}/{id}")
}

pub fn snapshot_path(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS_DIR}/{id}")
}

pub fn record_path(id: &RecordId) -> String {
    format!("{PRUNE_DIR}/{id}")
}

/// The last path component, which is the object's id in hex.
fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parses a listed key slot path.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a name that is not an id.
pub fn parse_key_path(path: &str) -> Result<KeySlotId> {
    KeySlotId::from_hex(last_component(path)).map_err(|_| stray(path))
}

/// Parses a listed pack path, checking its directory matches its name.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a misplaced or malformed name.
pub fn parse_pack_path(path: &str) -> Result<PackId> {
    let id = PackId::from_hex(last_component(path)).map_err(|_| stray(path))?;
    if pack_path(&id) != path {
        return Err(stray(path));
    }
    Ok(id)
}

/// Parses a listed index path.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a name that is not an id.
pub fn parse_index_path(path: &str) -> Result<IndexId> {
    IndexId::from_hex(last_component(path)).map_err(|_| stray(path))
}

/// Parses a listed snapshot path.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a name that is not an id.
pub fn parse_snapshot_path(path: &str) -> Result<SnapshotId> {
    SnapshotId::from_hex(last_component(path)).map_err(|_| stray(path))
}

/// Parses a listed prune record path.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a name that is not an id.
pub fn parse_record_path(path: &str) -> Result<RecordId> {
    RecordId::from_hex(last_component(path)).map_err(|_| stray(path))
}

fn stray(path: &str) -> Error {
    Error::corrupt(format!(
        "unexpected object name in the repository: {path:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_paths_round_trip() {
        let id = PackId([0xab; 32]);
        let path = pack_path(&id);
        assert!(path.starts_with("data/ab/abab"));
        assert_eq!(parse_pack_path(&path).unwrap(), id);
        assert!(parse_pack_path(&format!("data/cd/{id}")).is_err());
    }
}
