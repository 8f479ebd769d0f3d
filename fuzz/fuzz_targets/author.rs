//! Fuzz target `author`: see `kura_fuzz::author` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::author(data));
