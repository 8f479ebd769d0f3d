//! Algorithms (leaf layer): cryptography, compression and the chunker.
//! Pure functions of their inputs and keys; nothing here does I/O or knows
//! how bytes are laid out on storage (that is [`crate::format`]).

pub mod chunker;
pub mod compress;
pub mod crypto;
