//! Fuzz target `mysql_packets`: see `sluice::fuzz_entry::mysql_packets` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::mysql_packets(data));
