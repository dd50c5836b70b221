//! The PostgreSQL engine: wire codec, client and server sides, and the relay between them.

pub mod cancel;
pub mod client;
pub mod cluster;
pub mod errors;
pub mod listen;
pub mod pinning;
pub mod pipeline;
pub mod pools;
pub mod probe;
pub mod relay;
pub mod scan;
pub mod server;
pub mod settings;
pub mod statements;
pub mod wire;
