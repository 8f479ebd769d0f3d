//! The canonical split of large contents and directories
//! (format-spec/10-trees.md, "Large files" and "Large directories"): how a
//! writer lays them out, and the checks a reader makes of what it read.

use super::{DIR_PART_MAX, Entry, Extent, INLINE_MAX_EXTENTS, LIST_EXTENTS};
use crate::error::{Error, Result};

/// How a writer lays out a file's extents: inline, or as extent lists
/// (each to be stored as a [`TreeBlob::ExtentList`]).
pub fn plan_content(extents: Vec<Extent>) -> std::result::Result<Vec<Extent>, Vec<Vec<Extent>>> {
    if extents.len() <= INLINE_MAX_EXTENTS {
        Ok(extents)
    } else {
        Err(extents
            .chunks(LIST_EXTENTS)
            .map(<[Extent]>::to_vec)
            .collect())
    }
}

/// Splits sorted entries into directory parts by the greedy rule: a new
/// part starts whenever the next entry would push the current one past
/// [`DIR_PART_MAX`]. One part means a plain directory blob.
pub fn plan_directory(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut parts = vec![Vec::new()];
    let mut size = 5;
    for e in entries {
        let len = e.encoded_len();
        if size + len > DIR_PART_MAX && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            size = 5;
        }
        size += len;
        parts.last_mut().expect("one part at least").push(e);
    }
    parts
}

/// Checks the rules that span an indirect content's extent lists: every
/// list but the last is full, the content is too long to be inline, no
/// holes meet at a boundary, and the lengths add up to `size`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] naming the broken rule.
pub fn check_lists(lists: &[Vec<Extent>], size: u64) -> Result<()> {
    let mut check = ListCheck::new(lists.len(), size);
    for l in lists {
        check.list(l)?;
    }
    check.finish()
}

/// [`check_lists`] one list at a time, for a reader that holds one list
/// at a time (a file of millions of extents). A broken rule is found at
/// the list that breaks it, or at [`ListCheck::finish`] for the count and
/// the size.
#[derive(Debug, Clone)]
pub struct ListCheck {
    lists: usize,
    seen: usize,
    count: usize,
    total: Option<u64>,
    size: u64,
    ends_in_hole: bool,
}

impl ListCheck {
    /// A check of `lists` extent lists that should add up to `size` bytes.
    pub fn new(lists: usize, size: u64) -> Self {
        Self {
            lists,
            seen: 0,
            count: 0,
            total: Some(0),
            size,
            ends_in_hole: false,
        }
    }

    /// The next list, in order; returns where its span ends (the bytes the
    /// lists so far cover), so a reader can index lists by offset as it
    /// meets them.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`]: a list before the last that is not
    /// full, a list beyond the count, holes meeting at the seam, or lists
    /// that already cover more than the size.
    pub fn list(&mut self, list: &[Extent]) -> Result<u64> {
        self.seen += 1;
        let last = self.seen == self.lists;
        let starts_with_hole = matches!(list.first(), Some(Extent::Hole { .. }));
        if self.seen > self.lists
            || (!last && list.len() != LIST_EXTENTS)
            || (self.ends_in_hole && starts_with_hole)
        {
            return Err(not_canonical());
        }
        self.ends_in_hole = matches!(list.last(), Some(Extent::Hole { .. }));
        self.count += list.len();
        for e in list {
            self.total = self.total.and_then(|t| t.checked_add(e.len()));
        }
        match self.total {
            Some(total) if total <= self.size => Ok(total),
            _ => Err(not_canonical()),
        }
    }

    /// Checks the whole: every list seen, more extents than fit inline,
    /// and the lengths adding up to the size.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] naming the broken rule.
    pub fn finish(self) -> Result<()> {
        if self.seen != self.lists
            || self.count <= INLINE_MAX_EXTENTS
            || self.total != Some(self.size)
        {
            return Err(not_canonical());
        }
        Ok(())
    }
}

fn not_canonical() -> Error {
    Error::corrupt("extent lists do not form the canonical content of the file")
}

/// Checks that the parts of a large directory are the greedy split of
/// their entries, sorted and unique across parts.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] naming the broken rule.
pub fn check_parts(parts: &[Vec<Entry>]) -> Result<()> {
    for w in parts.windows(2) {
        let size: usize = 5 + w[0].iter().map(Entry::encoded_len).sum::<usize>();
        let (Some(last), Some(next)) = (w[0].last(), w[1].first()) else {
            return Err(Error::corrupt("empty directory part"));
        };
        if last.name >= next.name || size + next.encoded_len() <= DIR_PART_MAX {
            return Err(Error::corrupt(
                "directory parts are not the canonical split",
            ));
        }
    }
    Ok(())
}
