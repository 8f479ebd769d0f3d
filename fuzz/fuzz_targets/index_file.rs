//! Fuzz target `index_file`: see `kura_fuzz::index_file` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::index_file(data));
