//! The one integration-test binary: real PostgreSQL and MariaDB servers, the real `sluice` binary, real clients.
//!
//! `support` holds the harness (private servers in temp dirs, the proxy under test, client
//! tools); every other module is a group of tests. Run one group with
//! `cargo test --test it <module>`.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_types,
    clippy::disallowed_methods
)]

#[allow(dead_code)]
mod support;

mod admin_api;
mod admission;
mod attacks;
mod chaos;
mod chaos_mysql;
mod compat;
mod deploy;
mod drivers;
mod failover;
mod fleet;
mod harness_selftest;
mod held;
mod lifecycle;
mod metrics;
mod my_proxy;
mod my_statements;
mod partition;
mod pg_config;
mod pg_faults;
mod pg_listen;
mod pg_protocol;
mod pg_proxy;
mod pg_state;
mod prometheus;
mod queued;
mod refused;
mod reload;
mod restart;
mod secrets_manager;
mod soak;
mod tls;
mod tls_scan;
mod token_auth;
