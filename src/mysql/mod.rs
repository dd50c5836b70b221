//! The MySQL/MariaDB engine: wire codec, client and server sides, and the relay between them.
//! The same file set as `postgres/`, so the two read side by side.

pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod errors;
pub mod fleet;
pub mod kill;
mod login;
pub mod pinning;
pub mod pools;
pub mod probe;
pub mod relay;
pub mod scan;
pub mod server;
pub mod state;
pub mod wire;
