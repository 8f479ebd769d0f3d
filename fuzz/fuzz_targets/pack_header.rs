//! Fuzz target `pack_header`: see `kura_fuzz::pack_header` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::pack_header(data));
