//! Snapshots (format-spec/11-snapshots.md): the commit record of one
//! backup. Plaintext is a UTF-8 JSON object inside a type-7 envelope.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::unsupported;
use crate::id::{ChunkId, RepoId, SnapshotId};

pub const VERSION: u32 = 1;

/// A path as the operating system gave it: a string when it is UTF-8,
/// otherwise its bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawPath {
    Utf8(String),
    Bytes { hex: String },
}

impl RawPath {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::Utf8(s.to_owned()),
            Err(_) => Self::Bytes {
                hex: hex::encode(bytes),
            },
        }
    }

    /// The path's bytes.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] for malformed hex.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match self {
            Self::Utf8(s) => Ok(s.as_bytes().to_vec()),
            Self::Bytes { hex } => {
                hex::decode(hex).map_err(|_| Error::corrupt("snapshot path is not hex"))
            }
        }
    }
}

/// What a backup did, as recorded in its snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Bytes of file content (holes included).
    pub bytes: u64,
    /// Files whose content was reused from the parent without reading.
    pub files_unchanged: u64,
    pub chunks_new: u64,
    pub bytes_stored: u64,
    pub warnings: u64,
}

/// The backup a copied snapshot is a copy of (format-spec/11, "Copies"):
/// the repository where it was made and its snapshot id there, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopyOf {
    pub repository: String,
    pub snapshot: String,
}

impl CopyOf {
    pub fn new(repository: &RepoId, snapshot: &SnapshotId) -> Self {
        Self {
            repository: repository.to_hex(),
            snapshot: snapshot.to_hex(),
        }
    }

    /// The two ids.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] for malformed hex.
    pub fn ids(&self) -> Result<(RepoId, SnapshotId)> {
        let bad = |_| Error::corrupt("snapshot copy_of is malformed");
        Ok((
            RepoId::from_hex(&self.repository).map_err(bad)?,
            SnapshotId::from_hex(&self.snapshot).map_err(bad)?,
        ))
    }
}

/// The decoded snapshot object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Root tree (kind 1 or 3): mirrors the absolute paths backed up.
    pub tree: String,
    pub parent: Option<String>,
    /// Start and end, nanoseconds since the Unix epoch (UTC).
    pub time: i64,
    pub end_time: i64,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<RawPath>,
    pub tags: Vec<String>,
    /// The writer, e.g. "kura 0.1.0".
    pub program: String,
    /// Some files could not be read or changed while read.
    pub incomplete: bool,
    pub summary: Summary,
    /// Only in a copy: the original backup. Absent, not null, otherwise,
    /// so snapshots that are not copies encode as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<CopyOf>,
}

impl Snapshot {
    pub fn tree_id(&self) -> Result<ChunkId> {
        ChunkId::from_hex(&self.tree).map_err(|_| Error::corrupt("snapshot tree id is malformed"))
    }

    pub fn parent_id(&self) -> Result<Option<SnapshotId>> {
        self.parent
            .as_deref()
            .map(|p| {
                SnapshotId::from_hex(p)
                    .map_err(|_| Error::corrupt("snapshot parent id is malformed"))
            })
            .transpose()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshots serialize")
    }

    /// Parses and checks a snapshot's plaintext.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unsupported`] for another version,
    /// [`crate::ErrorKind::Corrupt`] for anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("snapshot does not parse: {e}")))?;
        if v.version != VERSION {
            return Err(unsupported("snapshot version", v.version));
        }
        let snap: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("snapshot does not parse: {e}")))?;
        snap.tree_id()?;
        snap.parent_id()?;
        snap.copy_of.as_ref().map(CopyOf::ids).transpose()?;
        for p in &snap.paths {
            p.to_bytes()?;
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            version: VERSION,
            tree: ChunkId([1; 32]).to_hex(),
            parent: None,
            time: 1_764_115_200_000_000_000,
            end_time: 1_764_115_260_000_000_000,
            hostname: "web1".into(),
            username: "root".into(),
            paths: vec![
                RawPath::from_bytes(b"/srv/www"),
                RawPath::from_bytes(b"/srv/caf\xe9"),
            ],
            tags: vec!["nightly".into()],
            program: "kura 0.1.0".into(),
            incomplete: false,
            summary: Summary::default(),
            copy_of: None,
        }
    }

    #[test]
    fn round_trip_and_version() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        assert_eq!(s.paths[1].to_bytes().unwrap(), b"/srv/caf\xe9");
        let mut newer = s.clone();
        newer.version = 2;
        let err = Snapshot::decode(&newer.encode()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
        let mut bad = s;
        bad.tree = "zz".into();
        assert!(Snapshot::decode(&bad.encode()).is_err());
        assert!(Snapshot::decode(b"{").is_err());
    }

    #[test]
    fn copy_of_is_absent_unless_set_and_checked_when_present() {
        let plain = sample();
        let text = String::from_utf8(plain.encode()).unwrap();
        assert!(!text.contains("copy_of"), "{text}");
        let mut copy = plain;
        copy.copy_of = Some(CopyOf::new(&RepoId([2; 32]), &SnapshotId([3; 32])));
        let text = String::from_utf8(copy.encode()).unwrap();
        assert!(text.ends_with(&format!(
            r#""copy_of":{{"repository":"{}","snapshot":"{}"}}}}"#,
            "02".repeat(32),
            "03".repeat(32)
        )));
        assert_eq!(Snapshot::decode(text.as_bytes()).unwrap(), copy);
        let bad = text.replace(&"03".repeat(32), "zz");
        assert!(Snapshot::decode(bad.as_bytes()).is_err());
    }
}
