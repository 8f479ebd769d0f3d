//! Fuzz target `prune_record`: see `kura_fuzz::prune_record` for what is decoded and asserted.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kura_fuzz::prune_record(data));
