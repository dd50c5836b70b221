//! Why a server connection could not be had, engine-neutral: each engine classifies the
//! server's refusal once, where it reads it, so no caller matches codes or message text.

use std::time::Duration;

use thiserror::Error;

/// What a database's refusal of a login or a setup query means for sluice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The secret was refused (PostgreSQL 28P01 / 28000, MySQL 1045): it may have been rotated.
    Credentials,
    /// The database (schema) asked for does not exist (3D000, MySQL 1049).
    UnknownDatabase,
    /// The server is at its connection limit (53300, MySQL 1040).
    TooManyConnections,
    /// The server is starting or shutting down (57P03, MySQL 1053), or in MySQL's offline mode
    /// (3032).
    NotReady,
    /// Anything else: the server's message says what.
    Other,
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The instance could not be reached, or is starting or shutting down: route again, another
    /// instance (or this one after its probe) may answer. A restart in place is waited out, as
    /// PgBouncer and RDS Proxy hold their clients while a server starts.
    Elsewhere,
    /// The secret was refused: read it again and log in once more.
    WithNewSecret,
    /// The server's verdict stands; the client gets it.
    No,
}

#[derive(Debug, Error, Clone)]
pub enum ConnectError {
    #[error("could not connect to {instance}: {reason}")]
    Unreachable { instance: String, reason: String },
    /// `code` is the server's own (SQLSTATE, or MySQL errno as text), passed on where a client
    /// should see it; `rejected` is what sluice makes of it.
    #[error("{instance} refused the login: {code} {message}")]
    Refused {
        instance: String,
        rejected: Rejected,
        code: String,
        message: String,
    },
    #[error("timed out connecting to {instance}")]
    Timeout { instance: String },
    #[error("protocol error from {instance}: {reason}")]
    Protocol { instance: String, reason: String },
}

impl ConnectError {
    /// An I/O error while logging in to `instance`. A connection reset or closed under the
    /// login (the server is stopping) is an instance out of reach for now, worth routing again;
    /// bytes that are not the protocol's (a certificate TLS refused) are a verdict that stands.
    pub fn from_io(instance: &str, context: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind::{InvalidData, InvalidInput, Unsupported};
        let reason = format!("{context}{e}");
        let instance = instance.to_owned();
        match e.kind() {
            InvalidData | InvalidInput | Unsupported => Self::Protocol { instance, reason },
            _ => Self::Unreachable { instance, reason },
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Refused {
                rejected: Rejected::NotReady,
                ..
            } => Retry::Elsewhere,
            Self::Refused {
                rejected: Rejected::Credentials,
                ..
            } => Retry::WithNewSecret,
            Self::Refused { .. } | Self::Protocol { .. } => Retry::No,
        }
    }

    /// Whether every login of the same pool (one user, secret and database) would be refused
    /// alike now: the server's verdict, not a passing state such as 57P03 (starting up), after
    /// which PgBouncer too lets its waiting clients wait on.
    pub fn refuses_every_login(&self) -> bool {
        matches!(self, Self::Refused { rejected, .. } if *rejected != Rejected::NotReady)
    }
}

#[derive(Debug, Error, Clone)]
pub enum BorrowError {
    #[error("no server connection available in pool {pool} within {waited:?}")]
    Timeout { pool: String, waited: Duration },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("pool {pool} is closed")]
    Closed { pool: String },
    /// Routing found no instance in the role the transaction needs (no writer during a
    /// failover, no usable reader) before the borrow timeout.
    #[error("no {role} instance became available within {waited:?}")]
    NoInstance {
        role: &'static str,
        waited: Duration,
    },
    /// The client cancelled the request (CancelRequest, `KILL QUERY`) while it waited for a
    /// server connection: it never ran.
    #[error("cancelled by the client while waiting for a server connection")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(rejected: Rejected) -> ConnectError {
        ConnectError::Refused {
            instance: "db:5432".into(),
            rejected,
            code: "x".into(),
            message: "no".into(),
        }
    }

    #[test]
    fn unreachable_and_restarting_instances_are_routed_again_and_only_credentials_reread() {
        let lost = ConnectError::Unreachable {
            instance: "db".into(),
            reason: "refused".into(),
        };
        assert_eq!(lost.retry(), Retry::Elsewhere);
        assert_eq!(
            ConnectError::Timeout {
                instance: "db".into()
            }
            .retry(),
            Retry::Elsewhere
        );
        assert_eq!(refused(Rejected::NotReady).retry(), Retry::Elsewhere);
        assert_eq!(refused(Rejected::Credentials).retry(), Retry::WithNewSecret);
        for r in [
            Rejected::UnknownDatabase,
            Rejected::TooManyConnections,
            Rejected::Other,
        ] {
            assert_eq!(refused(r).retry(), Retry::No);
            assert!(matches!(refused(r), ConnectError::Refused { rejected, .. } if rejected == r));
        }
    }

    #[test]
    fn only_a_lasting_refusal_answers_every_login_of_its_pool() {
        for r in [
            Rejected::Credentials,
            Rejected::UnknownDatabase,
            Rejected::TooManyConnections,
            Rejected::Other,
        ] {
            assert!(refused(r).refuses_every_login(), "{r:?}");
        }
        assert!(!refused(Rejected::NotReady).refuses_every_login());
        let lost = ConnectError::Unreachable {
            instance: "db".into(),
            reason: "refused".into(),
        };
        assert!(!lost.refuses_every_login());
    }
}
