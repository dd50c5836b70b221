//! Fuzz target `mysql_auth`: see `sluice::fuzz_entry::mysql_auth` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::mysql_auth(data));
