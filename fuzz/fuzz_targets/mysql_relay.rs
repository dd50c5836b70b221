//! Fuzz target `mysql_relay`: see `sluice::fuzz_entry::mysql_relay` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::mysql_relay(data));
