//! Repository layer: typed I/O of prune records (format-spec/12-prune.md):
//! reading them all, reading one, writing one. Which packs they condemn,
//! and what a writer does about it, is the chunk store's commit protocol
//! (`chunkstore::commit`).
//!
//! Owns the rule of which records count (format-spec/12, "Author block"):
//! an admin handle honours a record only if its author block verifies as
//! the admin's; any other record (a put-only key's, or a forged one) is
//! reported ([`ignored`]) and left out, so it condemns nothing. A put-only
//! handle cannot verify author blocks and honours every record that
//! authenticates, as before roles existed: a record only keeps its writer
//! from reusing the packs it names. Only an admin writes records.

use crate::error::Result;
use crate::format::author::{Authenticity, Authorship};
use crate::format::prune::PruneRecord;
use crate::id::RecordId;
use crate::repository::Repository;

/// A record [`load_all`] left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IgnoredRecord {
    pub id: RecordId,
    pub author: crate::format::author::Writer,
    pub forged: bool,
}

/// Whether a handle honours a record of `author`: see the module doc.
fn honoured(repo: &Repository, author: &Authorship) -> bool {
    !repo.is_admin() || author.is_verified_admin()
}

/// The records an admin handle leaves out, each also warned about once
/// (the forged ones and those a put-only key wrote): what prune reports.
///
/// # Errors
/// As [`load_all`].
pub fn ignored(repo: &Repository) -> Result<Vec<IgnoredRecord>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match repo.load_authored::<PruneRecord>(&id) {
            Ok(loaded) if !honoured(repo, &loaded.author) => out.push(IgnoredRecord {
                id,
                author: loaded.author.writer,
                forged: loaded.author.authenticity == Authenticity::Forged,
            }),
            Ok(_) => {}
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Every listed record: `Some` with its contents if this handle honours
/// it, `None` if it does not or cannot be read (damage is reported by
/// `check`; a reader that only needs what records say, such as rollback
/// detection, goes on without it).
///
/// # Errors
/// A failed listing, and backend errors other than a damaged or vanished
/// record.
pub fn load_lenient(repo: &Repository) -> Result<Vec<(RecordId, Option<PruneRecord>)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match repo.load_authored::<PruneRecord>(&id) {
            Ok(loaded) if honoured(repo, &loaded.author) => out.push((id, Some(loaded.value))),
            Ok(_) => out.push((id, None)),
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => out.push((id, None)),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Warns, once per record per process, that `id` is not honoured.
fn warn_ignored(id: &RecordId, author: &Authorship) {
    let why = if author.authenticity == Authenticity::Forged {
        format!(
            "forged (its author block names {} but does not verify)",
            author.writer
        )
    } else {
        format!(
            "written by {}, and only the admin's records count",
            author.writer
        )
    };
    crate::error::warn_skipped_damage(
        &format!("prune record {id}"),
        &crate::Error::corrupt(format!("ignored: {why}")),
    );
}

/// Every record in the repository this handle honours (see the module
/// doc), oldest first.
///
/// # Errors
/// A failed listing, or a record that does not authenticate: a record that
/// cannot be read could condemn anything, so nothing may rely on its
/// absence; its error names the record and `kura repair index`, which
/// deletes it. A record listed but gone when read is skipped (it was swept).
pub fn load_all(repo: &Repository) -> Result<Vec<(RecordId, PruneRecord)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match repo.load_authored::<PruneRecord>(&id) {
            Ok(loaded) if honoured(repo, &loaded.author) => out.push((id, loaded.value)),
            Ok(loaded) => warn_ignored(&id, &loaded.author),
            // Listed, then swept by a prune running now: that prune
            // deleted the record's packs before the record (format-spec
            // 12, step 8), so it condemns nothing that still exists.
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                tracing::debug!("prune record {id} was swept while being read");
            }
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                return Err(e.context(format!(
                    "prune record {id} is damaged, and a record that cannot be read could \
                     condemn any pack, so nothing is written or deleted until it is gone; \
                     run `kura repair index` (it indexes every pack again and deletes the \
                     record)"
                )));
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

/// Seals and writes `record` under `id` (create-only), as the admin.
///
/// # Errors
/// Backend errors; [`crate::ErrorKind::PutOnlyKey`] from a put-only handle.
pub fn save(repo: &Repository, id: &RecordId, record: &PruneRecord) -> Result<()> {
    repo.save(id, record, 3)
}
