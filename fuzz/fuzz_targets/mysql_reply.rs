//! Fuzz target `mysql_reply`: see `sluice::fuzz_entry::mysql_reply` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::mysql_reply(data));
