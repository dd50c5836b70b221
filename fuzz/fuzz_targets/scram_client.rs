//! Fuzz target `scram_client`: see `sluice::fuzz_entry::scram_client` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::scram_client(data));
