//! Fuzz target `config`: see `sluice::fuzz_entry::config` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::config(data));
