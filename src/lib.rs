//! kura (蔵): a deduplicating, compressed, encrypted backup repository.
//!
//! One stack, one folder per layer; each layer imports only the layers
//! below it (`../shared/STYLE.md`; `tests/integration/layering.rs` keeps
//! every `use crate::` edge pointing down):
//!
//! | layer | folder | owns |
//! |---|---|---|
//! | 5 | [`ops`] | one file per operation: options in, report out |
//! | 4 | [`snapshot`], [`source`] | trees, selection, retention, time; reading what is backed up |
//! | 3 | [`chunkstore`] | put a stream -> chunk ids, get a chunk by id; packs and the chunk index |
//! | 2 | [`repository`] | open/init, key slots, sealing, typed objects (snapshots, records) |
//! | 1 | [`backend`] | list / ranged read / create-only write / delete; decorators |
//! | codecs | [`format`] | every byte on storage, one module per spec chapter |
//! | leaf | [`algorithms`] | crypto, compression, chunker: no I/O |
//!
//! [`error`], [`id`] and [`clock`] are used by every layer. The binary's `cli` module
//! (layer 6) sits on top.

#![forbid(unsafe_code)]

pub mod algorithms;
pub mod backend;
pub mod chunkstore;
pub mod clock;
pub mod error;
pub mod format;
pub mod id;
pub mod ops;
pub mod repository;
pub mod snapshot;
pub mod source;

pub use error::{Error, ErrorKind, Result};
