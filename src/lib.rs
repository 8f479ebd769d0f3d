//! kura (蔵): a deduplicating, compressed, encrypted backup repository.
//!
//! Layers, each calling only the one below (see `../shared/STYLE.md`):
//! - [`chunkstore`]: put a stream -> chunk ids, get a chunk by id;
//! - [`pack`], [`index`]: pack files and the chunk index (redb cache);
//! - [`store`], [`crypto`], [`compress`], [`chunker`]: sealed objects;
//! - [`format`]: every byte on storage, one module per spec chapter;
//! - [`backend`]: list / ranged read / create-only write / delete.
//!
//! [`repo::Repository`] opens a repository (config, key slots, keys).

#![forbid(unsafe_code)]

pub mod backend;
pub mod chunker;
pub mod chunkstore;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod ops;
pub mod pack;
pub mod records;
pub mod repo;
pub mod retention;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod tree;

pub use error::{Error, ErrorKind, Result};
