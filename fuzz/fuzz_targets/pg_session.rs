//! Fuzz target `pg_session`: see `sluice::fuzz_entry::pg_session` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::pg_session(data));
