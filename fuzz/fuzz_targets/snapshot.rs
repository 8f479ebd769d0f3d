//! Fuzz target `snapshot`: see `kura_fuzz::snapshot` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::snapshot(data));
