//! How sluice's own failures reach a Postgres client: SQLSTATE and message, never a secret.

use bytes::BytesMut;

use super::wire;
use crate::errors::{BorrowError, ConnectError, Rejected};

pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const CONNECTION_FAILURE: &str = "08006";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const PROGRAM_LIMIT: &str = "54000";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const QUERY_CANCELED: &str = "57014";
/// A transaction cut by a failover before its commit: retrying it is safe.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// A statement or commit in flight when its server went away: it may or may not have committed.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";

/// Writes a FATAL ErrorResponse; the caller closes the connection after sending it.
pub fn fatal(buf: &mut BytesMut, code: &str, message: &str) {
    wire::error_response(buf, "FATAL", code, message);
}

/// The SQLSTATE and message a client sees when no server connection could be had.
pub fn borrow_failure(e: &BorrowError) -> (&'static str, String) {
    match e {
        BorrowError::Timeout { .. } | BorrowError::Closed { .. } => {
            (TOO_MANY_CONNECTIONS, e.to_string())
        }
        BorrowError::Connect(c) => connect_failure(c),
        BorrowError::NoInstance { .. } => (CANNOT_CONNECT_NOW, e.to_string()),
        // Postgres' own words for a cancelled statement.
        BorrowError::Cancelled => (
            QUERY_CANCELED,
            "canceling statement due to user request".into(),
        ),
    }
}

pub fn connect_failure(e: &ConnectError) -> (&'static str, String) {
    let ConnectError::Refused {
        rejected, message, ..
    } = e
    else {
        return (CONNECTION_FAILURE, e.to_string());
    };
    // The database's own verdict on what the client asked for (e.g. 3D000 unknown database).
    let code = match rejected {
        // sluice's secret was refused: the client's credentials were fine, sluice's were not.
        Rejected::Credentials => return (CONNECTION_FAILURE, credentials_refused(e)),
        Rejected::UnknownDatabase => "3D000",
        Rejected::TooManyConnections => TOO_MANY_CONNECTIONS,
        Rejected::NotReady => CANNOT_CONNECT_NOW,
        Rejected::Other => CONNECTION_FAILURE,
    };
    (code, message.clone())
}

fn credentials_refused(e: &ConnectError) -> String {
    let ConnectError::Refused { instance, .. } = e else {
        return e.to_string();
    };
    format!("sluice could not log in to {instance} with the configured secret")
}
