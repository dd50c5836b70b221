//! The MySQL/MariaDB engine: wire codec, client and server sides, and the relay between them.

pub mod wire;
