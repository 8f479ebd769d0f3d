//! Layer 5, part of `restore`: the contents of regular files. Owns the
//! resume rule (a regular file already at a name, of the right size, whose
//! every data extent hashes to its chunk id and whose holes read as zeros,
//! is kept and only its metadata set) and the write rule: a new file is
//! created with `O_CREAT | O_EXCL | O_NOFOLLOW` in its directory's
//! descriptor, written with `pwrite` at its extents' offsets (holes are
//! skipped, so it stays sparse; it is extended with `ftruncate` only when
//! it ends in a hole), and its metadata set on the same descriptor.
//! Small files are written in batches whose chunks are fetched together;
//! a large file is written by several threads at once.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use super::dirfd::{self, DirChain, Dirs};
use super::metadata::{self, Applied, Policy};
use crate::chunkstore::ChunkStore;
use crate::error::{Error, Result};
use crate::format::tree::{Content, Entry, Extent, Payload};
use crate::id::ChunkId;
use crate::ops::progress::Progress;
use crate::snapshot::tree;

/// Data bytes per task when one file is written by several threads; a
/// file this large is written alone.
pub(super) const WRITE_GROUP: u64 = 8 << 20;

/// Data bytes per batch of small files, whose chunks are held together
/// (in each restore thread) until the batch is written: 4 MiB held peak
/// RSS of 45 000 small files' restore at 77 MB where 8 MiB took 83-90,
/// for 0.1 s more CPU; 2 MiB 65-70 MB for 0.3-0.4 s more.
const SMALL_BATCH: u64 = 4 << 20;

/// A regular file to write: its directory and its entry.
pub(super) type Queued = (usize, Entry);

/// What restoring one file did: data bytes written (`None`: it was
/// already intact), and what setting its metadata dropped or could not do.
pub(super) type FileOutcome = (Option<u64>, Applied);

/// What writing does with a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holes {
    /// Leave it (a new file: it stays sparse).
    Skip,
    /// Make it read as zeros (a device or an old file being overwritten).
    Zero,
}

/// What a batch shares: the store, the directories and how to set metadata.
pub(super) struct Writer<'a, 's> {
    pub store: &'a ChunkStore<'s>,
    pub progress: &'a dyn Progress,
    pub dirs: &'a Dirs,
    pub root: std::os::fd::BorrowedFd<'a>,
    pub policy: Policy,
}

/// Splits the queued files into batches: consecutive small files up to
/// [`SMALL_BATCH`] bytes together, each file of [`WRITE_GROUP`] bytes or
/// more alone.
pub(super) fn batches(files: Vec<Queued>) -> Vec<Vec<Queued>> {
    let mut out: Vec<Vec<Queued>> = Vec::new();
    let mut open: Vec<Queued> = Vec::new();
    let mut open_bytes = 0u64;
    for q in files {
        let size = q.1.meta.size;
        if size >= WRITE_GROUP {
            out.push(vec![q]);
            continue;
        }
        if open_bytes + size > SMALL_BATCH && !open.is_empty() {
            out.push(std::mem::take(&mut open));
            open_bytes = 0;
        }
        open_bytes += size;
        open.push(q);
    }
    if !open.is_empty() {
        out.push(open);
    }
    out
}

impl Writer<'_, '_> {
    /// Restores one batch (see [`batches`]): files already intact are
    /// kept, the others' chunks fetched together and written.
    pub fn batch(&self, batch: Vec<Queued>) -> Result<Vec<FileOutcome>> {
        let mut chain = DirChain::new(self.root);
        if let [(dir, entry)] = batch.as_slice()
            && entry.meta.size >= WRITE_GROUP
        {
            return Ok(vec![self.large(&mut chain, *dir, entry)?]);
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut todo = Vec::with_capacity(batch.len());
        for (dir, entry) in batch {
            let content = file_content(&entry)?;
            let extents = tree::load_extents(self.store, content, entry.meta.size)?;
            // A directory this restore made is empty: nothing to check.
            if !self.dirs.nodes[dir].fresh {
                let fd = chain.enter(self.dirs, dir)?;
                if let Some(file) = self.intact(fd, &entry, std::iter::once(Ok(extents.clone()))) {
                    self.progress.bytes(entry.meta.size);
                    self.progress.file_done();
                    out.push((None, self.metadata(&file, dir, &entry)));
                    continue;
                }
            }
            todo.push((dir, entry, extents));
        }
        self.write_small(&mut chain, todo, &mut out)?;
        Ok(out)
    }

    /// Restores one large file: its extent lists are read one at a time
    /// (a disk image of millions of chunks holds one list in memory), and
    /// each list's chunks are written by several threads.
    fn large(&self, chain: &mut DirChain<'_>, dir: usize, entry: &Entry) -> Result<FileOutcome> {
        let content = file_content(entry)?;
        let size = entry.meta.size;
        if !self.dirs.nodes[dir].fresh {
            let fd = chain.enter(self.dirs, dir)?;
            if let Some(file) =
                self.intact(fd, entry, tree::extent_lists(self.store, content, size))
            {
                self.progress.bytes(size);
                self.progress.file_done();
                return Ok((None, self.metadata(&file, dir, entry)));
            }
        }
        let file = self.create(chain, dir, entry, false)?;
        let shown = self.dirs.shown(dir, Some(&entry.name));
        let lists = tree::extent_lists(self.store, content, size);
        let written = write_lists(self.store, self.progress, &file, &shown, lists, Holes::Skip)?;
        if written.ends_in_hole {
            file.set_len(size).map_err(|e| Error::io(&shown, e))?;
        }
        self.progress.file_done();
        Ok((Some(written.bytes), self.metadata(&file, dir, entry)))
    }

    /// Fetches the chunks of `todo` together and writes each file.
    fn write_small(
        &self,
        chain: &mut DirChain<'_>,
        todo: Vec<(usize, Entry, Vec<Extent>)>,
        out: &mut Vec<FileOutcome>,
    ) -> Result<()> {
        let ids: Vec<ChunkId> = todo
            .iter()
            .flat_map(|(_, _, extents)| extents.iter())
            .filter_map(|e| match e {
                Extent::Data { id, .. } => Some(*id),
                Extent::Hole { .. } => None,
            })
            .collect();
        let mut chunks = self.store.get_many(&ids)?.into_iter();
        for (dir, entry, extents) in todo {
            let ends_in_hole = matches!(extents.last(), Some(Extent::Hole { .. }));
            let file = self.create(chain, dir, &entry, ends_in_hole)?;
            let shown = self.dirs.shown(dir, Some(&entry.name));
            let bytes = write_fetched(self.progress, &file, &shown, &extents, &mut chunks)?;
            self.progress.file_done();
            out.push((Some(bytes), self.metadata(&file, dir, &entry)));
        }
        Ok(())
    }

    /// Creates the file of `entry` in `dir`, replacing what is there;
    /// sized only when it ends in a hole (writes extend it otherwise).
    fn create(
        &self,
        chain: &mut DirChain<'_>,
        dir: usize,
        entry: &Entry,
        ends_in_hole: bool,
    ) -> Result<File> {
        let fd = chain.enter(self.dirs, dir)?;
        let err = |e| Error::io(self.dirs.shown(dir, Some(&entry.name)), e);
        let file = dirfd::create_file(fd, &entry.name).map_err(err)?;
        if ends_in_hole {
            file.set_len(entry.meta.size).map_err(err)?;
        }
        Ok(file)
    }

    fn metadata(&self, file: &File, dir: usize, entry: &Entry) -> Applied {
        let shown = || self.dirs.shown(dir, Some(&entry.name));
        metadata::on_fd(file.as_fd(), entry, self.policy, &shown)
    }

    /// The regular file at `entry`'s name in `dir` if it already holds
    /// `entry`'s content: the right size, each data extent hashing to its
    /// chunk id, each hole reading as zeros (only the file's data ranges
    /// inside a hole are read). A file with other hard links is only
    /// trusted when the entry has them too, so metadata is never set on
    /// an inode shared with a file elsewhere.
    fn intact(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        entry: &Entry,
        lists: impl IntoIterator<Item = Result<Vec<Extent>>>,
    ) -> Option<File> {
        let (file, st) = dirfd::open_regular(dir, &entry.name)?;
        let size = u64::try_from(st.st_size).ok()?;
        #[allow(clippy::useless_conversion)] // st_nlink is u32 or u64 by architecture
        let nlink = u64::from(st.st_nlink);
        if size != entry.meta.size || (nlink > 1 && entry.meta.nlink < 2) {
            return None;
        }
        let data = crate::source::data_ranges(&file, size);
        let mut buf = Vec::new();
        let mut pos = 0u64;
        for list in lists {
            for e in list.ok()? {
                let ok = match e {
                    Extent::Data { id, len } => {
                        buf.resize(len as usize, 0);
                        file.read_exact_at(&mut buf, pos).is_ok() && self.store.chunk_id(&buf) == id
                    }
                    Extent::Hole { len } => data.iter().all(|&(start, n)| {
                        let (a, b) = (start.max(pos), (start + n).min(pos + len));
                        a >= b || reads_zeros(&file, a, b - a)
                    }),
                };
                if !ok {
                    return None;
                }
                pos += e.len();
            }
        }
        Some(file)
    }
}

/// The content of a queued file.
fn file_content(entry: &Entry) -> Result<&Content> {
    match &entry.payload {
        Payload::File(content) => Ok(content),
        _ => Err(Error::corrupt("only files are queued for writing")),
    }
}

fn reads_zeros(file: &File, pos: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], pos + done).is_err()
            || buf[..n].iter().any(|&b| b != 0)
        {
            return false;
        }
        done += n as u64;
    }
    true
}

/// Extents with their offsets (the first at `pos`), in groups of about
/// [`WRITE_GROUP`] data bytes, so one large file is written by several
/// threads. A group ends where a compression group does (`group_of`
/// names a chunk's): one split between two would be opened by both.
fn extent_groups<G: PartialEq>(
    extents: &[Extent],
    mut pos: u64,
    group_of: impl Fn(&ChunkId) -> Option<G>,
) -> Vec<Vec<(u64, Extent)>> {
    let mut groups = vec![Vec::new()];
    let mut in_group = 0u64;
    let mut last_data: Option<ChunkId> = None;
    // Once a write group is full: the compression group of its last chunk.
    let mut full_at: Option<Option<G>> = None;
    for e in extents {
        if in_group >= WRITE_GROUP {
            let last = full_at.get_or_insert_with(|| last_data.and_then(|l| group_of(&l)));
            let splits_one = matches!(e, Extent::Data { id, .. }
                if last.is_some() && group_of(id) == *last);
            if !splits_one {
                groups.push(Vec::new());
                in_group = 0;
                full_at = None;
            }
        }
        groups.last_mut().expect("one group").push((pos, *e));
        pos += e.len();
        if let Extent::Data { id, len } = e {
            in_group += u64::from(*len);
            last_data = Some(*id);
        }
    }
    groups
}

/// What [`write_lists`] wrote.
pub(super) struct Written {
    /// Data bytes.
    pub bytes: u64,
    /// Whether the content ends in a hole (a new file must then be
    /// extended to its size).
    pub ends_in_hole: bool,
}

/// Writes a file's extent lists into `file` at their offsets, one list at
/// a time, each list's chunks by several threads. Every chunk is
/// authenticated by the store before it is written.
pub(super) fn write_lists(
    store: &ChunkStore<'_>,
    progress: &dyn Progress,
    file: &File,
    shown: &str,
    lists: impl IntoIterator<Item = Result<Vec<Extent>>>,
    holes: Holes,
) -> Result<Written> {
    let mut written = Written {
        bytes: 0,
        ends_in_hole: false,
    };
    let mut pos = 0u64;
    for list in lists {
        let list = list?;
        written.bytes += write_extents(store, progress, file, shown, &list, pos, holes)?;
        pos += list.iter().map(Extent::len).sum::<u64>();
        written.ends_in_hole = matches!(list.last(), Some(Extent::Hole { .. }));
    }
    Ok(written)
}

/// Writes `extents`, the first at `pos`, into `file` at their offsets, in
/// parallel. Returns the data bytes written.
fn write_extents(
    store: &ChunkStore<'_>,
    progress: &dyn Progress,
    file: &File,
    shown: &str,
    extents: &[Extent],
    pos: u64,
    holes: Holes,
) -> Result<u64> {
    extent_groups(extents, pos, |id| store.group_of(id))
        .into_par_iter()
        .map(|group| {
            let mut data = Vec::with_capacity(group.len());
            for (pos, e) in group {
                match e {
                    Extent::Hole { len } => {
                        progress.bytes(len);
                        if holes == Holes::Zero {
                            zero_range(file, pos, len).map_err(|e| Error::io(shown, e))?;
                        }
                    }
                    Extent::Data { id, len } => data.push((id, len, pos)),
                }
            }
            // The group's chunks in one go, written as they come: neighbours
            // in a pack are read together (one request each run, which is
            // what a remote repository needs), and only one run is held.
            let ids: Vec<ChunkId> = data.iter().map(|(id, _, _)| *id).collect();
            let mut written = 0u64;
            store.for_each_chunk(&ids, |k, chunk| {
                let (id, len, pos) = data[k];
                progress.bytes(u64::from(len));
                written += write_chunk(file, shown, chunk, &id, len, pos)?;
                Ok(())
            })?;
            Ok(written)
        })
        .sum()
}

/// Makes `len` bytes at `pos` read as zeros: punched out where the file
/// system or device supports it (no space used, or a discard), else
/// written.
fn zero_range(file: &File, pos: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags as F, fallocate};
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let (Ok(off), Ok(n)) = (i64::try_from(pos), i64::try_from(len)) else {
        return Err(std::io::Error::other("range beyond 2^63"));
    };
    if fallocate(
        file,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        off,
        n,
    )
    .is_ok()
    {
        return Ok(());
    }
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], pos + done)?;
        done += n;
    }
    Ok(())
}

/// Writes `data`, the chunk of extent `id` of `len` bytes, at `pos`;
/// returns the bytes written.
fn write_chunk(
    file: &File,
    shown: &str,
    data: &[u8],
    id: &ChunkId,
    len: u32,
    pos: u64,
) -> Result<u64> {
    if data.len() != len as usize {
        return Err(Error::corrupt(format!(
            "chunk {id} has another length than its tree says"
        )));
    }
    file.write_all_at(data, pos)
        .map_err(|e| Error::io(shown, e))?;
    Ok(u64::from(len))
}

/// Writes a new file from chunks already fetched, in extent order.
fn write_fetched(
    progress: &dyn Progress,
    file: &File,
    shown: &str,
    extents: &[Extent],
    chunks: &mut impl Iterator<Item = Vec<u8>>,
) -> Result<u64> {
    let (mut pos, mut written) = (0u64, 0u64);
    for e in extents {
        progress.bytes(e.len());
        if let Extent::Data { id, len } = *e {
            let data = chunks
                .next()
                .ok_or_else(|| Error::corrupt("fewer chunks than extents"))?;
            written += write_chunk(file, shown, &data, &id, len, pos)?;
        }
        pos += e.len();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u32) -> ChunkId {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        ChunkId(id)
    }

    /// Write groups of a large file end at compression-group ends (here
    /// 100 chunks of 32 KiB), keep every extent in order at its offset,
    /// and still split the file (holes do not count as data).
    #[test]
    fn write_groups_do_not_split_a_compression_group() {
        let mut extents: Vec<Extent> = (0..600)
            .map(|i| Extent::Data {
                id: chunk(i),
                len: 32 << 10,
            })
            .collect();
        extents.insert(10, Extent::Hole { len: 5000 });
        let group_of = |id: &ChunkId| Some(u32::from_le_bytes(id.0[..4].try_into().unwrap()) / 100);
        let groups = extent_groups(&extents, 7, group_of);
        assert!(groups.len() >= 2, "{} groups", groups.len());
        let mut seen = std::collections::HashMap::new();
        let mut pos = 7;
        let mut all = Vec::new();
        for (w, group) in groups.iter().enumerate() {
            for (at, e) in group {
                assert_eq!(*at, pos);
                pos += e.len();
                all.push(*e);
                if let Extent::Data { id, .. } = e {
                    let g = group_of(id).unwrap();
                    assert_eq!(*seen.entry(g).or_insert(w), w, "group {g} split");
                }
            }
        }
        assert_eq!(all, extents);
        // Without groups, the same extents split every WRITE_GROUP bytes.
        let plain = extent_groups(&extents, 7, |_| None::<u32>);
        assert_eq!(plain.len(), 3);
    }
}
