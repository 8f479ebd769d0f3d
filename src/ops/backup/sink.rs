//! Part of `backup`: where the content of one file goes as it is read.

use std::io::Read;

use crate::chunkstore::{ChunkStore, Prepared};
use crate::error::Result;
use crate::format::tree::{Content, Extent};
use crate::ops::progress::{CountingReader, Progress};
use crate::snapshot::files_cache;
use crate::snapshot::tree::ContentBuilder;
use crate::source::ContentSink;

/// Puts content read from the sources into the chunk store, reporting
/// the bytes (holes included) to the progress, and builds the file's
/// content as the extents come (a huge file or image holds at most one
/// extent list's worth at a time: `tree::ContentBuilder`).
pub(super) struct StoreSink<'s, 'r> {
    pub store: &'s ChunkStore<'r>,
    pub progress: &'s dyn Progress,
    pub content: ContentBuilder<'s, 'r>,
    /// The extents too, for the files cache, while there are few enough
    /// to cache; `None` when not kept.
    pub kept: Option<Vec<Extent>>,
}

impl StoreSink<'_, '_> {
    fn push(&mut self, extent: Extent) -> Result<()> {
        if let Some(kept) = &mut self.kept {
            if kept.len() < files_cache::EXTENTS_MAX {
                kept.push(extent);
            } else {
                self.kept = None;
            }
        }
        self.content.push(extent)
    }

    /// The content stored, and its extents if they were kept.
    pub fn finish(self) -> Result<(Content, Option<Vec<Extent>>)> {
        Ok((self.content.finish()?, self.kept))
    }

    /// Puts a file read and prepared ahead (`backup::read_ahead`).
    pub fn prepared(&mut self, prepared: Prepared) -> Result<()> {
        self.progress.bytes(prepared.len() as u64);
        for r in self.store.put_prepared(prepared)? {
            self.push(Extent::Data {
                id: r.id,
                len: r.len,
            })?;
        }
        Ok(())
    }
}

impl ContentSink for StoreSink<'_, '_> {
    fn data(&mut self, data: &mut (dyn Read + Send)) -> Result<u64> {
        let (store, progress) = (self.store, self.progress);
        let reader = CountingReader {
            inner: data,
            progress,
        };
        store.put_stream_with(reader, &mut |refs| {
            for r in refs {
                self.push(Extent::Data {
                    id: r.id,
                    len: r.len,
                })?;
            }
            Ok(())
        })
    }

    fn hole(&mut self, len: u64) -> Result<()> {
        self.progress.bytes(len);
        self.push(Extent::Hole { len })
    }
}
