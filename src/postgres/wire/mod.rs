//! Sans-IO PostgreSQL protocol 3.0: bytes in, frames out, and the few messages sluice builds or reads.
//!
//! Nothing here touches a socket or imports the rest of the crate, so it can be unit-tested
//! with byte literals, fuzzed and benchmarked without a database.

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

/// ReadyForQuery transaction status bytes.
pub mod status {
    pub const IDLE: u8 = b'I';
    pub const IN_TRANSACTION: u8 = b'T';
    pub const FAILED: u8 = b'E';
}

#[cfg(test)]
mod tests {
    /// The codec stays sans-IO: no wire file may reach into the rest of the crate or a socket.
    #[test]
    fn wire_imports_nothing_else_of_the_crate() {
        let files = [
            ("frame.rs", include_str!("frame.rs")),
            ("read.rs", include_str!("read.rs")),
            ("startup.rs", include_str!("startup.rs")),
            ("write.rs", include_str!("write.rs")),
            ("mod.rs", include_str!("mod.rs")),
        ];
        for (name, text) in files {
            let uses = text
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("use "));
            for line in uses {
                let outside = line.contains("crate::") && !line.contains("crate::postgres::wire");
                assert!(
                    !outside && !line.contains("tokio"),
                    "{name} imports outside the wire module: {line}"
                );
            }
        }
    }
}
