//! Fuzz target `auth_tokens`: see `sluice::fuzz_entry::auth_tokens` for what it drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz_entry::auth_tokens(data));
