//! Operations layer, `mount`: where an open file's extents are, in memory
//! bounded whatever the file's size. Owns the span table of a file whose
//! content is extent lists (format-spec/10): the byte range of each list
//! met so far, met in order and checked one at a time with
//! [`ListCheck`] as the table grows, so a read at an offset decodes lists
//! only up to the one that covers it, and a later read past the last span
//! met goes on from there. Decoded lists are kept for [`RECENT_LISTS`]
//! uses (least recently used out first); a list that left is read again
//! by its index. Memory is the table (one offset per list met, about
//! 2,000 for a 1 TB disk image) and at most [`RECENT_LISTS`] lists.
//!
//! No I/O here: the caller passes the loader of list `k`.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::tree::{Extent, ListCheck};

/// Decoded extent lists an open file keeps (sequential reads and readahead
/// across a seam do not decode a list again).
pub const RECENT_LISTS: usize = 4;

/// One extent list, decoded, with where each of its extents starts in the
/// file.
#[derive(Debug)]
pub struct List {
    pub extents: Vec<Extent>,
    pub starts: Vec<u64>,
    /// Where the list's span ends (its start when it has no extents).
    pub end: u64,
}

impl List {
    /// `extents`, the first of which starts at `start` in the file.
    pub fn new(extents: Vec<Extent>, start: u64) -> Self {
        let mut end = start;
        let starts = extents
            .iter()
            .map(|e| {
                let s = end;
                end = end.saturating_add(e.len());
                s
            })
            .collect();
        Self {
            extents,
            starts,
            end,
        }
    }

    /// The index of the extent holding `offset` (the first for an offset
    /// before the list).
    pub fn at(&self, offset: u64) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// The index of the first extent that starts at or after `end`.
    pub fn before(&self, end: u64) -> usize {
        self.starts.partition_point(|&s| s < end)
    }
}

/// The extent lists of one file met so far: their spans, and the few most
/// recently used lists.
pub struct Spans {
    /// Where the span of each list met so far ends; list `k` spans
    /// `ends[k - 1]..ends[k]` (from 0 for the first).
    ends: Vec<u64>,
    lists: usize,
    /// `None` once every list was met.
    check: Option<ListCheck>,
    /// Why no further list can be met (the lists are not the file's
    /// canonical content).
    broken: Option<String>,
    /// Most recently used first.
    recent: VecDeque<(usize, Arc<List>)>,
}

impl Spans {
    /// The spans of a content of `lists` extent lists that should add up
    /// to `size` bytes; none met yet.
    pub fn new(lists: usize, size: u64) -> Self {
        Self {
            ends: Vec::new(),
            lists,
            check: Some(ListCheck::new(lists, size)),
            broken: None,
            recent: VecDeque::with_capacity(RECENT_LISTS + 1),
        }
    }

    /// The list whose span holds `offset`, meeting the lists up to it in
    /// order (`load(k)` decodes list `k`); `None` when every list was met
    /// and none holds `offset`.
    ///
    /// # Errors
    /// `load`'s; [`crate::ErrorKind::Corrupt`] once the lists met break
    /// the canonical split (every later call that needs a list not met
    /// fails the same way), or when a list read again is not the one met.
    pub fn list_at(
        &mut self,
        offset: u64,
        load: &mut dyn FnMut(usize) -> Result<Vec<Extent>>,
    ) -> Result<Option<Arc<List>>> {
        loop {
            let k = self.ends.partition_point(|&e| e <= offset);
            if k < self.ends.len() {
                return self.list(k, load).map(Some);
            }
            if !self.meet_next(load)? {
                return Ok(None);
            }
        }
    }

    /// Meets the next list; `false` when every list was met.
    fn meet_next(&mut self, load: &mut dyn FnMut(usize) -> Result<Vec<Extent>>) -> Result<bool> {
        if let Some(why) = &self.broken {
            return Err(Error::corrupt(why.clone()));
        }
        let k = self.ends.len();
        let Some(check) = &mut self.check else {
            return Ok(false);
        };
        // A failed load (a missing blob) may be retried by a later read.
        let extents = load(k)?;
        let mut checked = check.list(&extents);
        if k + 1 == self.lists {
            let check = self.check.take().expect("checking");
            checked = checked.and_then(|end| check.finish().map(|()| end));
        }
        let end = match checked {
            Ok(end) => end,
            Err(e) => {
                let e = e.context(format!("extent list {k}"));
                self.broken = Some(e.to_string());
                self.check = None;
                return Err(e);
            }
        };
        let list = Arc::new(List::new(extents, self.start(k)));
        self.ends.push(end);
        self.remember(k, list);
        Ok(true)
    }

    /// List `k` (met already), kept or decoded again.
    fn list(
        &mut self,
        k: usize,
        load: &mut dyn FnMut(usize) -> Result<Vec<Extent>>,
    ) -> Result<Arc<List>> {
        if let Some(at) = self.recent.iter().position(|(i, _)| *i == k) {
            let kept = self.recent.remove(at).expect("present");
            let list = Arc::clone(&kept.1);
            self.recent.push_front(kept);
            return Ok(list);
        }
        let list = Arc::new(List::new(load(k)?, self.start(k)));
        if list.end != self.ends[k] {
            return Err(Error::corrupt(format!(
                "extent list {k} read again is not the list met before"
            )));
        }
        self.remember(k, Arc::clone(&list));
        Ok(list)
    }

    fn start(&self, k: usize) -> u64 {
        k.checked_sub(1).map_or(0, |p| self.ends[p])
    }

    fn remember(&mut self, k: usize, list: Arc<List>) {
        self.recent.push_front((k, list));
        self.recent.truncate(RECENT_LISTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{INLINE_MAX_EXTENTS, LIST_EXTENTS};
    use crate::id::ChunkId;

    /// Three lists of the canonical split (data of 10 bytes and holes of
    /// 5, alternating) and their size.
    fn lists() -> (Vec<Vec<Extent>>, u64) {
        let extents: Vec<Extent> = (0..2 * LIST_EXTENTS + INLINE_MAX_EXTENTS)
            .map(|i| {
                if i % 2 == 0 {
                    Extent::Data {
                        id: ChunkId([(i % 251) as u8; 32]),
                        len: 10,
                    }
                } else {
                    Extent::Hole { len: 5 }
                }
            })
            .collect();
        let size = extents.iter().map(Extent::len).sum();
        let lists = crate::format::tree::plan_content(extents).unwrap_err();
        (lists, size)
    }

    fn loader(
        lists: &[Vec<Extent>],
        loads: &mut Vec<usize>,
    ) -> impl FnMut(usize) -> Result<Vec<Extent>> {
        move |k| {
            loads.push(k);
            Ok(lists[k].clone())
        }
    }

    #[test]
    fn lists_are_met_in_order_only_up_to_the_offset_read() {
        let (lists, size) = lists();
        let span = (LIST_EXTENTS as u64 / 2) * 15; // bytes in a full list
        let mut spans = Spans::new(lists.len(), size);
        let mut loads = Vec::new();
        let got = spans
            .list_at(7, &mut loader(&lists, &mut loads))
            .unwrap()
            .unwrap();
        assert_eq!((got.starts[0], got.end, got.at(7)), (0, span, 0));
        assert_eq!(spans.ends.len(), 1);
        // The third list: the second is met on the way.
        let got = spans
            .list_at(2 * span + 12, &mut loader(&lists, &mut loads))
            .unwrap()
            .unwrap();
        assert_eq!((got.starts[0], got.end), (2 * span, size));
        assert_eq!(got.at(2 * span + 12), 1);
        assert_eq!(got.before(2 * span + 15), 2);
        assert_eq!(loads, [0, 1, 2]);
        // Back to the first: kept, not decoded again; past the end: none.
        let got = spans
            .list_at(span - 1, &mut loader(&lists, &mut loads))
            .unwrap()
            .unwrap();
        assert_eq!(got.at(span - 1), LIST_EXTENTS - 1);
        assert!(
            spans
                .list_at(size, &mut loader(&lists, &mut loads))
                .unwrap()
                .is_none()
        );
        assert_eq!(loads, [0, 1, 2]);
    }

    #[test]
    fn at_most_a_few_lists_are_kept() {
        let (lists, _) = lists();
        // Six full lists stand for a long file.
        let many: Vec<Vec<Extent>> = (0..6).map(|_| lists[0].clone()).collect();
        let span = lists[0].iter().map(Extent::len).sum::<u64>();
        let mut spans = Spans::new(many.len(), 6 * span);
        let mut loads = Vec::new();
        for k in 0..6 {
            spans
                .list_at(k * span, &mut loader(&many, &mut loads))
                .unwrap();
        }
        assert!(spans.recent.len() <= RECENT_LISTS);
        assert_eq!(spans.ends.len(), 6);
        // The oldest went and is decoded again; the newest is kept.
        spans.list_at(0, &mut loader(&many, &mut loads)).unwrap();
        spans
            .list_at(5 * span, &mut loader(&many, &mut loads))
            .unwrap();
        assert_eq!(loads, [0, 1, 2, 3, 4, 5, 0]);
    }

    #[test]
    fn lists_that_break_the_split_fail_where_they_are_met() {
        let (lists, size) = lists();
        let span = lists[0].iter().map(Extent::len).sum::<u64>();
        // The wrong size: the first two lists read, the last fails, and
        // keeps failing.
        let mut spans = Spans::new(lists.len(), size + 1);
        let mut loads = Vec::new();
        spans
            .list_at(span + 1, &mut loader(&lists, &mut loads))
            .unwrap();
        for _ in 0..2 {
            let e = spans
                .list_at(2 * span, &mut loader(&lists, &mut loads))
                .unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{e}");
        }
        assert!(spans.list_at(0, &mut loader(&lists, &mut loads)).is_ok());
        // A short list before the last fails at once.
        let short = vec![lists[2].clone(), lists[0].clone(), lists[1].clone()];
        let mut spans = Spans::new(short.len(), size);
        assert!(spans.list_at(0, &mut loader(&short, &mut loads)).is_err());
        // A failed load is not remembered as damage.
        let mut spans = Spans::new(lists.len(), size);
        let mut fail = |_| Err(Error::corrupt("missing"));
        assert!(spans.list_at(0, &mut fail).is_err());
        assert!(spans.list_at(0, &mut loader(&lists, &mut loads)).is_ok());
    }
}
