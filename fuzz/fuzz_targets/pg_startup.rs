//! Fuzz target `pg_startup`: see `sluice::fuzz_entry::pg_startup` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::pg_startup(data));
