//! Prune records (format-spec/12-prune.md): what a prune run saw and what
//! it condemned, so that a later run may delete it and backups can avoid
//! relying on it.
//!
//! ```text
//! version u8 | created u64 | grace u64
//! | index count u32 | index ids [32]...
//! | orphan count u32 | pack ids [32]...
//! | condemned count u32 | per pack: pack id [32] | size u64
//! | forgotten count u32 | snapshot ids [32]...
//! ```
//!
//! A record whose seen lists and condemned list are all empty is a
//! **forget record**: it only names forgotten snapshots (written by
//! `forget` and `repair snapshots` before they delete, and by any run that
//! deletes records, to carry their names forward). It is never a prune's
//! reference record.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::{ByteReader, put_len, unsupported};
use crate::id::{ID_LEN, IndexId, PackId, SnapshotId};

pub const VERSION: u8 = 2;
/// Largest decoded record a reader accepts.
pub const MAX_LEN: usize = 64 << 20;
const CONDEMNED_LEN: usize = ID_LEN + 8;

/// A decoded prune record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneRecord {
    /// Unix seconds, the writer's clock, when its run started.
    pub created: u64,
    /// Grace period in seconds: the record is ripe at `created + grace`.
    pub grace: u64,
    /// Index files current after the run (what later runs call old).
    pub seen_index: Vec<IndexId>,
    /// Packs no current index file named.
    pub seen_orphans: Vec<PackId>,
    /// Packs to delete once ripe, with their sizes.
    pub condemned: Vec<(PackId, u64)>,
    /// Snapshots deleted by forget or repair (or named by records this
    /// run deleted): their absence is not a rollback (`ops::history`).
    pub forgotten: Vec<SnapshotId>,
}

impl PruneRecord {
    /// Whether the record may be swept at `now` (Unix seconds).
    pub fn is_ripe(&self, now: u64) -> bool {
        self.created.saturating_add(self.grace) <= now
    }

    /// Whether the record only names forgotten snapshots: it has seen
    /// nothing and condemns nothing, so it cannot be a reference record.
    pub fn is_forget_only(&self) -> bool {
        self.seen_index.is_empty() && self.seen_orphans.is_empty() && self.condemned.is_empty()
    }

    /// A forget record created at `created` naming `forgotten`.
    pub fn forgetting(created: u64, forgotten: Vec<SnapshotId>) -> Self {
        Self {
            created,
            forgotten,
            ..Self::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            33 + ID_LEN * (self.seen_index.len() + self.seen_orphans.len() + self.forgotten.len())
                + CONDEMNED_LEN * self.condemned.len(),
        );
        out.push(VERSION);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.grace.to_le_bytes());
        put_len(&mut out, self.seen_index.len());
        for id in &self.seen_index {
            out.extend_from_slice(id.as_bytes());
        }
        put_len(&mut out, self.seen_orphans.len());
        for id in &self.seen_orphans {
            out.extend_from_slice(id.as_bytes());
        }
        put_len(&mut out, self.condemned.len());
        for (id, size) in &self.condemned {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        }
        put_len(&mut out, self.forgotten.len());
        for id in &self.forgotten {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Decodes and validates a record's plaintext.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] if malformed or if a pack is condemned
    /// twice; [`crate::ErrorKind::Unsupported`] for another version.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = ByteReader::new(bytes, "prune record");
        let version = r.u8()?;
        if version != VERSION {
            return Err(unsupported("prune record version", version));
        }
        let created = r.u64()?;
        let grace = r.u64()?;
        let n = r.count(ID_LEN)?;
        let seen_index = (0..n).map(|_| r.id().map(IndexId)).collect::<Result<_>>()?;
        let n = r.count(ID_LEN)?;
        let seen_orphans = (0..n).map(|_| r.id().map(PackId)).collect::<Result<_>>()?;
        let n = r.count(CONDEMNED_LEN)?;
        let mut condemned = Vec::with_capacity(n);
        let mut seen = HashSet::with_capacity(n);
        for _ in 0..n {
            let id = PackId(r.id()?);
            let size = r.u64()?;
            if !seen.insert(id) {
                return Err(Error::corrupt(format!(
                    "prune record condemns pack {id} twice"
                )));
            }
            condemned.push((id, size));
        }
        let n = r.count(ID_LEN)?;
        let forgotten = (0..n)
            .map(|_| r.id().map(SnapshotId))
            .collect::<Result<_>>()?;
        r.finish()?;
        Ok(Self {
            created,
            grace,
            seen_index,
            seen_orphans,
            condemned,
            forgotten,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(i: usize, o: usize, c: usize) -> PruneRecord {
        PruneRecord {
            created: 1_700_000_000,
            grace: 3600,
            seen_index: (0..i).map(|k| IndexId([k as u8; 32])).collect(),
            seen_orphans: (0..o).map(|k| PackId([k as u8 + 100; 32])).collect(),
            condemned: (0..c)
                .map(|k| (PackId([k as u8; 32]), k as u64 * 1000))
                .collect(),
            forgotten: (0..o).map(|k| SnapshotId([k as u8 + 50; 32])).collect(),
        }
    }

    proptest! {
        #[test]
        fn round_trip(i in 0usize..6, o in 0usize..6, c in 0usize..6) {
            let r = sample(i, o, c);
            prop_assert_eq!(PruneRecord::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PruneRecord::decode(&bytes);
        }
    }

    #[test]
    fn ripeness() {
        let r = sample(0, 0, 0);
        assert!(!r.is_ripe(1_700_003_599));
        assert!(r.is_ripe(1_700_003_600));
    }

    #[test]
    fn refuses_malformed_records() {
        let good = sample(1, 1, 2).encode();
        let mut v1 = good.clone();
        v1[0] = 1;
        assert_eq!(
            PruneRecord::decode(&v1).unwrap_err().kind(),
            crate::ErrorKind::Unsupported
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(PruneRecord::decode(&trailing).is_err());
        assert!(PruneRecord::decode(&good[..good.len() - 1]).is_err());
        let mut twice = sample(0, 0, 2);
        twice.condemned[1] = twice.condemned[0];
        assert!(PruneRecord::decode(&twice.encode()).is_err());
        let mut huge = good;
        let at = huge.len() - 4 - 32;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            PruneRecord::decode(&huge).is_err(),
            "forgotten count bounded"
        );
    }

    #[test]
    fn a_forget_record_names_snapshots_and_has_seen_nothing() {
        let r = PruneRecord::forgetting(5, vec![SnapshotId([9; 32])]);
        assert!(r.is_forget_only());
        assert!(!sample(1, 0, 0).is_forget_only());
        assert_eq!(PruneRecord::decode(&r.encode()).unwrap(), r);
    }
}
