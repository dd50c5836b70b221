//! Client authentication and the credentials sluice logs in to databases with.

mod access;
pub mod credentials;
pub mod iam;
pub mod jwt;
pub mod md5;
pub mod mysql;
pub mod scram;
pub mod secret;
pub mod secrets_manager;
pub mod users;

pub use access::ServerAccess;
