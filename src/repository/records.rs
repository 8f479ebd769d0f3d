//! Prune records in the repository (format-spec/12-prune.md): reading them
//! all, writing one, and the set of packs they condemn, which backups must
//! not rely on.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::format::prune::PruneRecord;
use crate::id::{PackId, RecordId};
use crate::repository::Repository;

/// Every record in the repository, oldest first.
///
/// # Errors
/// A failed listing, or a record that does not authenticate: a record that
/// cannot be read could condemn anything, so nothing may rely on its
/// absence. A record listed but gone when read is skipped (it was swept).
pub fn load_all(repo: &Repository) -> Result<Vec<(RecordId, PruneRecord)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match load(repo, &id) {
            Ok(record) => out.push((id, record)),
            // Listed, then swept by a prune running now: that prune
            // deleted the record's packs before the record (format-spec
            // 12, step 8), so it condemns nothing that still exists.
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                tracing::debug!("prune record {id} was swept while being read");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(id, r)| (r.created, *id));
    Ok(out)
}

/// Reads and authenticates one record.
///
/// # Errors
/// Backend errors; [`crate::ErrorKind::Corrupt`] for a damaged record.
pub fn load(repo: &Repository, id: &RecordId) -> Result<PruneRecord> {
    repo.load(id)
}

/// Seals and writes `record` under `id` (create-only).
///
/// # Errors
/// Backend errors.
pub fn save(repo: &Repository, id: &RecordId, record: &PruneRecord) -> Result<()> {
    repo.save(id, record, 3)
}

/// Packs condemned by some record: for each, the records condemning it
/// and their grace (seconds).
#[derive(Debug, Clone, Default)]
pub struct Condemned {
    packs: HashMap<PackId, Vec<(RecordId, u64)>>,
}

impl Condemned {
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a (RecordId, PruneRecord)>,
    ) -> Self {
        let mut packs: HashMap<PackId, Vec<(RecordId, u64)>> = HashMap::new();
        for (id, r) in records {
            for (p, _) in &r.condemned {
                packs.entry(*p).or_default().push((*id, r.grace));
            }
        }
        Self { packs }
    }

    /// Lists and reads every record.
    ///
    /// # Errors
    /// As [`load_all`].
    pub fn load(repo: &Repository) -> Result<Self> {
        Ok(Self::from_records(&load_all(repo)?))
    }

    pub fn contains(&self, pack: &PackId) -> bool {
        self.packs.contains_key(pack)
    }

    /// The records condemning `pack`, with their grace.
    pub fn by(&self, pack: &PackId) -> &[(RecordId, u64)] {
        self.packs.get(pack).map_or(&[], Vec::as_slice)
    }

    pub fn packs(&self) -> HashSet<PackId> {
        self.packs.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }
}
