//! Fuzz target `scram_server`: see `sluice::fuzz_entry::scram_server` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::scram_server(data));
