//! sluice: a connection-pooling proxy for PostgreSQL and MySQL/MariaDB.
//!
//! Data flow: `listener` accepts, an engine's `client` runs the startup and authentication, its
//! `relay` forwards a session's transactions over server connections borrowed from `pool`,
//! on the instance `routing` picks from the `topology` that `health` publishes. `app` builds
//! everything from the `config` (after its `preflight` read the files the config names) and
//! hands it down. Shared by both engines: `endpoint`, `session` (and its registry), `errors`,
//! `auth`, `tls`, `metrics`. The engines never import each other, the `wire` codecs import
//! nothing of the crate, and no module cycle exists: `layers` checks all of it.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod endpoint;
pub mod errors;
#[cfg(any(test, fuzzing))]
pub mod fuzz_entry;
pub mod health;
#[cfg(test)]
mod layers;
pub mod listener;
pub mod metrics;
pub mod mysql;
pub mod pool;
pub mod postgres;
pub mod routing;
pub mod session;
pub mod shutdown;
pub mod tls;
pub mod topology;
