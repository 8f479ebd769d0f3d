//! Fuzz target `tree`: see `kura_fuzz::tree` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::tree(data));
