//! Fuzz target `sql_scanners`: see `sluice::fuzz_entry::sql_scanners` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::sql_scanners(data));
