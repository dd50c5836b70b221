//! sluice: a connection-pooling proxy for PostgreSQL (and, later, MySQL/MariaDB).
//!
//! Data flow: `listener` accepts, `postgres::client` runs the startup and authentication,
//! `postgres::relay` forwards a session's transactions over server connections borrowed from
//! `pool`, chosen by `routing`. `app` builds everything from the `config` and hands it down.
//! `postgres::wire` is sans-IO and imports nothing else of the crate.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod endpoint;
pub mod errors;
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
