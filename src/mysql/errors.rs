//! The MySQL error numbers and SQLSTATEs sluice answers with, and what a failed borrow becomes.

use crate::errors::{BorrowError, ConnectError, Rejected};

/// (errno, SQLSTATE)
pub type Code = (u16, &'static str);

pub const HANDSHAKE: Code = (1043, "08S01");
pub const ACCESS_DENIED: Code = (1045, "28000");
pub const UNKNOWN_COMMAND: Code = (1047, "08S01");
pub const BAD_DB: Code = (1049, "42000");
/// ER_TOO_MANY_USER_CONNECTIONS: the user is at `max_client_connections`.
pub const TOO_MANY_USER_CONNECTIONS: Code = (1203, "42000");
pub const NO_SUCH_THREAD: Code = (1094, "HY000");
pub const UNKNOWN: Code = (1105, "HY000");
pub const PACKET_TOO_LARGE: Code = (1153, "08S01");
pub const OUT_OF_ORDER: Code = (1156, "08S01");
/// ER_SECURE_TRANSPORT_REQUIRED: a plaintext client on an endpoint with `require_tls`.
pub const INSECURE_TRANSPORT: Code = (3159, "HY000");
pub const UNKNOWN_STMT: Code = (1243, "HY000");
pub const NOT_SUPPORTED: Code = (1235, "42000");
/// A transaction cut by a lost server: rolled back, safe to retry, the connection goes on. The
/// deadlock code, which ORMs and sysbench already retry. (2013, the client library's own "lost
/// connection", cannot be sent: Connector/C turns any errno from 2000 to 2999 in an ERR into
/// 2027 "malformed packet".)
pub const CUT_ROLLED_BACK: Code = (1213, "40001");
/// A statement or COMMIT in flight when the server was lost: it may or may not have committed.
pub const CUT_UNKNOWN: Code = (1317, "70100");
/// ER_QUERY_INTERRUPTED: a statement stopped by `KILL QUERY`.
pub const QUERY_INTERRUPTED: Code = (1317, "70100");
/// The session is closed: its state went with the server connection.
pub const CONNECTION_KILLED: Code = (1927, "70100");
/// MySQL 8's "closed for inactivity" notice.
pub const IDLE_TIMEOUT: Code = (4031, "HY000");
/// What RDS Proxy answers when no connection frees up within the borrow timeout.
pub const BORROW_TIMEOUT: Code = (9501, "HY000");

/// The error a client gets when sluice cannot give it a server connection.
pub fn borrow_failure(e: &BorrowError) -> (Code, String) {
    match e {
        BorrowError::Timeout { waited, .. } => (
            BORROW_TIMEOUT,
            format!("Timed-out waiting to acquire database connection ({waited:?})"),
        ),
        BorrowError::Connect(e @ ConnectError::Refused { .. }) => refusal(e),
        BorrowError::Connect(e) => (UNKNOWN, format!("sluice: {e}")),
        BorrowError::Closed { .. } => (UNKNOWN, "sluice: the pool is closed".into()),
        BorrowError::NoInstance { waited, role } => (
            BORROW_TIMEOUT,
            format!("Timed-out waiting for a {role} instance ({waited:?})"),
        ),
        // What the server answers a statement `KILL QUERY` stopped.
        BorrowError::Cancelled => (QUERY_INTERRUPTED, "Query execution was interrupted".into()),
    }
}

/// What a command gets when the server refused something sluice ran for it (a replay, a
/// re-prepare): the server's own errno, or a lost connection.
pub fn refusal(e: &ConnectError) -> (Code, String) {
    match e {
        ConnectError::Refused {
            rejected,
            code,
            message,
            ..
        } => {
            let errno = code.parse().unwrap_or(UNKNOWN.0);
            let state = if *rejected == Rejected::UnknownDatabase {
                BAD_DB.1
            } else {
                UNKNOWN.1
            };
            ((errno, state), message.clone())
        }
        e => (UNKNOWN, format!("sluice: {e}")),
    }
}
