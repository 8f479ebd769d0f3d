//! Repository layer: typed I/O of prune records (format-spec/12-prune.md):
//! reading them all, reading one, writing one. Which packs they condemn,
//! and what a writer does about it, is the chunk store's commit protocol
//! (`chunkstore::commit`).
//!
//! Owns the rule of which records count (format-spec/12, "Author block"):
//! an admin handle honours a record only if its author block verifies as
//! the admin's; any other record (a put-only key's, or a forged one) is
//! reported and left out, so it condemns nothing. For deciding deletions
//! an admin also refuses records dated in the future or before the
//! repository ([`refused_date`]). A put-only
//! handle cannot verify author blocks and honours every record that
//! authenticates, as before roles existed: a record only keeps its writer
//! from reusing the packs it names. Only an admin writes records.

use crate::error::Result;
use crate::format::author::{Authenticity, Authorship};
use crate::format::prune::PruneRecord;
use crate::id::RecordId;
use crate::repository::Repository;

/// How far a record's date may be from the reader's clock, and before
/// the repository's creation, before it is refused for deciding deletions
/// (format-spec/12, "Author block"): a day, as for snapshots.
pub const CLOCK_TOLERANCE: u64 = 86_400;

/// Why an admin handle does not honour a record of `author`, if it does
/// not: see the module doc.
fn refused_author(repo: &Repository, author: &Authorship) -> Option<String> {
    if !repo.is_admin() || author.is_verified_admin() {
        return None;
    }
    Some(if author.authenticity == Authenticity::Forged {
        format!(
            "forged (its author block names {} but does not verify)",
            author.writer
        )
    } else {
        format!(
            "written by {}, and only the admin's records count",
            author.writer
        )
    })
}

/// Why a record may not decide deletions at `now` (Unix seconds) although
/// its author is honoured: a date more than [`CLOCK_TOLERANCE`] after now
/// or before the repository was made. A writer still honours it (it only
/// withholds packs from reuse); prune and check leave it out.
pub fn refused_date(repo: &Repository, record: &PruneRecord, now: u64) -> Option<String> {
    let made = repo.config().created;
    if record.created > now.saturating_add(CLOCK_TOLERANCE) {
        Some(format!(
            "dated in the future: created {} s after this machine's clock ({now})",
            record.created - now
        ))
    } else if record.created.saturating_add(CLOCK_TOLERANCE) < made {
        Some(format!(
            "dated {} s before the repository was made ({made})",
            made - record.created
        ))
    } else {
        None
    }
}

/// One record as an admin judges it: its contents, and why it is not
/// honoured (its author, or with `now` given, its date), if it is not.
///
/// # Errors
/// Backend errors; [`crate::ErrorKind::Corrupt`] for a record that does not
/// authenticate; `NotFound` for one swept meanwhile.
pub fn load_judged(
    repo: &Repository,
    id: &RecordId,
    now: Option<u64>,
) -> Result<(PruneRecord, Option<String>)> {
    let loaded = repo.load_authored::<PruneRecord>(id)?;
    let refused = refused_author(repo, &loaded.author).or_else(|| {
        now.filter(|_| repo.is_admin())
            .and_then(|now| refused_date(repo, &loaded.value, now))
    });
    Ok((loaded.value, refused))
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
        match load_judged(repo, &id, None) {
            Ok((record, None)) => out.push((id, Some(record))),
            Ok((_, Some(_))) => out.push((id, None)),
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => out.push((id, None)),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Warns, once per record per process, that `id` is not honoured.
fn warn_ignored(id: &RecordId, why: &str) {
    crate::error::warn_skipped_damage(
        &format!("prune record {id}"),
        &crate::Error::corrupt(format!("ignored: {why}")),
    );
}

/// Every record in the repository this handle honours (see the module
/// doc), oldest first: what a writer heeds.
///
/// # Errors
/// As [`load_all_at`].
pub fn load_all(repo: &Repository) -> Result<Vec<(RecordId, PruneRecord)>> {
    load_honoured(repo, None)
}

/// [`load_all`] for deciding deletions at `now` (Unix seconds): an
/// admin also leaves out, and reports, records whose dates it refuses
/// ([`refused_date`]).
///
/// # Errors
/// A failed listing, or a record that does not authenticate: a record that
/// cannot be read could condemn anything, so nothing may rely on its
/// absence; its error names the record and `kura repair index`, which
/// deletes it. A record listed but gone when read is skipped (it was swept).
pub fn load_all_at(repo: &Repository, now: u64) -> Result<Vec<(RecordId, PruneRecord)>> {
    load_honoured(repo, Some(now))
}

fn load_honoured(repo: &Repository, now: Option<u64>) -> Result<Vec<(RecordId, PruneRecord)>> {
    let mut out = Vec::new();
    for id in repo.list::<PruneRecord>()? {
        match load_judged(repo, &id, now) {
            Ok((record, None)) => out.push((id, record)),
            Ok((_, Some(why))) => warn_ignored(&id, &why),
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
