//! Sans-IO PostgreSQL protocol 3.0: bytes in, frames out, and the few messages sluice builds or reads.
//!
//! Nothing here touches a socket or imports the rest of the crate (`src/layers.rs` checks), so
//! it can be unit-tested with byte literals, fuzzed and benchmarked without a database.

mod frame;
mod read;
mod startup;
mod write;

pub use frame::{FRAME_HEADER_LEN, Frame, Frames, WireError, declared_len, next_frame};
pub use read::{
    AuthRequest, BackendKeyData, ErrorFields, Reader, bind_formats, parse_auth_request,
    parse_backend_key_data, parse_data_row, parse_error_fields, parse_parameter_status,
};
pub use startup::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE, Startup,
    StartupParams, read_startup,
};
pub use write::*;

/// Message tags a client sends. The same byte means different messages in the two directions
/// (`D` is Describe here, DataRow from a server): code names the direction it reads.
pub mod frontend {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, and the SASL responses that share its tag.
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
    /// What a Describe or Close names: a prepared statement ...
    pub const KIND_STATEMENT: u8 = b'S';
    /// ... or a portal.
    pub const KIND_PORTAL: u8 = b'P';
}

/// Message tags a server sends.
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// The one-byte answers to an SSLRequest: go ahead with TLS, or stay in plaintext.
    pub const SSL_ACCEPTED: u8 = b'S';
    pub const SSL_REFUSED: u8 = b'N';
}

/// ReadyForQuery transaction status bytes.
pub mod status {
    pub const IDLE: u8 = b'I';
    pub const IN_TRANSACTION: u8 = b'T';
    pub const FAILED: u8 = b'E';
}
