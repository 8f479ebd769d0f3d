//! `copy`: copies snapshots from one repository (the source) into another
//! (the target), an off-site copy, sending only the data the target lacks.
//! Operations layer; it owns the invariant that a copied snapshot is
//! committed in the target exactly as a backup commits one.
//!
//! # Different keys, same chunks
//!
//! Each repository has its own keys, so the same plaintext has a different
//! chunk id in each (keyed BLAKE3) and no stored byte can be copied as it
//! is. The source's chunking is kept: every data chunk is read from the
//! source (authenticated and checked against its source id) and put whole
//! into the target's chunk store, which names it with the target's key and
//! stores it only if the target's index lacks it. The target's chunker
//! never runs, so the two repositories may have different chunker
//! parameters, with one limit: a data blob may not be longer than the
//! target's `chunker.max` (format-spec/03), so a copy into a target whose
//! `max` is smaller than the source's is refused before anything is
//! written.
//!
//! Trees name chunk ids and subtree ids, so they are rewritten, bottom-up:
//! every directory (and part of a large directory) and every extent list
//! is read from the source, each data chunk id and subtree id in it is
//! translated, and the tree is stored in the target. Names, metadata,
//! extent lengths and holes are unchanged; each tree is translated once
//! per run however many snapshots share it.
//!
//! # Sending only what the target lacks
//!
//! Translating a chunk id needs the chunk's plaintext. To avoid reading
//! chunks the target already has, the target's index cache (its redb file
//! in the local cache directory) keeps a table of translations, keyed by
//! (source repository id, source chunk id), filled by every copy. An
//! entry is used only if the target's index still lists its target id, in
//! a pack the target's writers trust (not missing, not found damaged, not
//! condemned by a prune), with the chunk's length; otherwise the chunk is
//! read from the source again. The table survives rebuilds of the index
//! cache (a translation never changes: both ids are functions of the
//! plaintext and a repository's fixed keys); losing it costs reads from
//! the source, never uploads of chunks the target has.
//!
//! # Snapshots
//!
//! The copy keeps every member of the source snapshot (times, host, user,
//! paths, tags, program, `incomplete`, and the summary of the original
//! backup) except three (format-spec/11, "Copies"):
//! - `tree`: the translated root tree;
//! - `parent`: the source's parent id means nothing in the target; it
//!   becomes the target's copy of that parent if there is one (snapshots
//!   are copied oldest first), else it is dropped;
//! - `copy_of`: the original backup, as (repository id, snapshot id): the
//!   source snapshot's own `copy_of` if it is itself a copy, else the
//!   source repository's id and the source snapshot's id.
//!
//! A source snapshot is already in the target when some target snapshot
//! has the same original: its `copy_of` names it, or it is that original
//! (a snapshot copied back to where it was made). Such snapshots are
//! skipped without reading their trees, so a copy run again copies nothing
//! and reads no tree and no data chunk. A copy deleted from the target
//! (`forget`) is copied again by the next run that selects it; a copy
//! rewritten by `repair snapshots` loses its `copy_of`, so the next copy
//! brings the whole snapshot back beside the repaired one.
//!
//! # Write ordering and crashes
//!
//! The target sees exactly what a backup does (format-spec/07 and 12):
//! its prune records are read and orphan packs adopted before anything is
//! stored (an interrupted copy resumes from the packs it uploaded), packs
//! that are missing, damaged or condemned are not relied on, and for each
//! snapshot in turn the new packs are written, then the index files
//! naming them, then the commit check runs, then the snapshot is written.
//! A crash at any point leaves one of the crash states of a backup; the
//! snapshots written before it are whole copies. The source is only read.
//!
//! A source snapshot that cannot be read whole (a damaged tree or chunk)
//! stops the copy with that error (`Corrupt`); the snapshots copied before
//! it stay. `check` and `repair snapshots` on the source come first.
