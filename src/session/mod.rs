//! Engine-neutral session state: who a session is, why it is pinned to its server connection,
//! and the registry both engines find live sessions in.

pub mod drain;
pub mod keys;
pub mod memo;
pub mod park;
pub mod registry;
pub mod spare;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What `/v1/sessions` shows of a session: fixed at login, never touched on the hot path. No
/// secrets: the user name, not what it logged in with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: u64,
    /// Shared with the endpoint: most of an idle session's listing is these names.
    pub endpoint: Arc<str>,
    pub target_group: Arc<str>,
    pub user: String,
    pub database: Option<String>,
    pub client: SocketAddr,
    pub tls: bool,
    /// Seconds since the Unix epoch at login.
    pub since: u64,
}

impl SessionInfo {
    pub fn new(
        id: u64,
        (endpoint, target_group): (&Arc<str>, &Arc<str>),
        user: &str,
        client: SocketAddr,
        tls: bool,
    ) -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            id,
            endpoint: Arc::clone(endpoint),
            target_group: Arc::clone(target_group),
            user: user.to_owned(),
            database: None,
            client,
            tls,
            since,
        }
    }
}

/// A session as listed: its login facts and the instance serving it right now, if any.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionRow {
    #[serde(flatten)]
    pub info: SessionInfo,
    /// The instance whose server connection the session holds now (`null`: idle).
    pub server: Option<String>,
    pub in_transaction: bool,
    pub pinned: bool,
}

/// What a session's server connection is doing, as the session last said: written by the
/// session after each response (one relaxed store to memory only it writes), read by scrapes.
#[derive(Debug, Default)]
pub struct SessionState(AtomicU8);

impl SessionState {
    const IN_TRANSACTION: u8 = 1;
    const PINNED: u8 = 2;

    pub fn set(&self, in_transaction: bool, pinned: bool) {
        let bits =
            u8::from(in_transaction) * Self::IN_TRANSACTION + u8::from(pinned) * Self::PINNED;
        self.0.store(bits, Ordering::Relaxed);
    }

    /// (in a transaction, pinned)
    pub fn get(&self) -> (bool, bool) {
        let bits = self.0.load(Ordering::Relaxed);
        (bits & Self::IN_TRANSACTION != 0, bits & Self::PINNED != 0)
    }
}

/// The sessions of one engine, for `/v1/sessions`.
pub trait SessionList: Send + Sync + fmt::Debug + 'static {
    fn sessions(&self) -> Vec<SessionRow>;
}

/// Why a client session keeps its server connection past a transaction. Every pin is logged with
/// its reason and (with the metrics issue) counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// A parameter change sluice cannot track: `set_config()` of a computed name, `SET SESSION
    /// AUTHORIZATION` (plain `SET`/`RESET`/`set_config()` are tracked and replayed instead).
    SetParameter,
    /// SQL-level `PREPARE` (protocol-level statements are remapped instead).
    SqlPrepare,
    TempObject,
    Listen,
    AdvisoryLock,
    CursorWithHold,
    Load,
    /// MySQL `LOCK TABLES` / `FLUSH TABLES WITH READ LOCK` (lifted by `UNLOCK TABLES`).
    LockTables,
    /// MySQL user variables (`SET @x`, `@x :=`, `INTO @x`): lifted only by a connection reset.
    UserVariable,
    /// MySQL executable comments (`/*! */`, `/*M! */`): text sluice cannot see as SQL.
    ExecutableComment,
    /// MySQL `HANDLER ... OPEN`.
    ServerCursor,
    /// A cursor a binary-protocol execute opened (lifted when its statement is reset, closed or
    /// executed again without one).
    PreparedCursor,
    /// MySQL XA transactions (lifted by XA COMMIT / XA ROLLBACK).
    Xa,
    /// SQL sluice cannot see into: MySQL `EXECUTE IMMEDIATE`, compound statements
    /// (`BEGIN NOT ATOMIC ... END`).
    DynamicSql,
}

/// Pins and unpins per reason since start: `session_pins_total{reason}` and
/// `session_unpins_total{reason}` for the metrics endpoint.
#[derive(Debug)]
pub struct PinCounts {
    pins: [AtomicU64; PinReason::ALL.len()],
    unpins: [AtomicU64; PinReason::ALL.len()],
}

impl Default for PinCounts {
    fn default() -> Self {
        Self {
            pins: [const { AtomicU64::new(0) }; PinReason::ALL.len()],
            unpins: [const { AtomicU64::new(0) }; PinReason::ALL.len()],
        }
    }
}

impl PinCounts {
    pub fn pinned(&self, reason: PinReason) {
        self.pins[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn unpinned(&self, reason: PinReason) {
        self.unpins[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn pins(&self, reason: PinReason) -> u64 {
        self.pins[reason as usize].load(Ordering::Relaxed)
    }

    pub fn unpins(&self, reason: PinReason) -> u64 {
        self.unpins[reason as usize].load(Ordering::Relaxed)
    }
}

impl PinReason {
    pub const ALL: [PinReason; 14] = [
        Self::SetParameter,
        Self::SqlPrepare,
        Self::TempObject,
        Self::Listen,
        Self::AdvisoryLock,
        Self::CursorWithHold,
        Self::Load,
        Self::LockTables,
        Self::UserVariable,
        Self::ExecutableComment,
        Self::ServerCursor,
        Self::PreparedCursor,
        Self::Xa,
        Self::DynamicSql,
    ];

    /// The label used in logs and in `session_pins_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SetParameter => "set_parameter",
            Self::SqlPrepare => "sql_prepare",
            Self::TempObject => "temp_object",
            Self::Listen => "listen",
            Self::AdvisoryLock => "advisory_lock",
            Self::CursorWithHold => "cursor_with_hold",
            Self::Load => "load",
            Self::LockTables => "lock_tables",
            Self::UserVariable => "user_variable",
            Self::ExecutableComment => "executable_comment",
            Self::ServerCursor => "server_cursor",
            Self::PreparedCursor => "prepared_cursor",
            Self::Xa => "xa",
            Self::DynamicSql => "dynamic_sql",
        }
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        for (i, r) in PinReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in declaration order");
            let counts = PinCounts::default();
            counts.pinned(r);
            assert_eq!((counts.pins(r), counts.unpins(r)), (1, 0));
            counts.unpinned(r);
            assert_eq!((counts.pins(r), counts.unpins(r)), (1, 1));
        }
    }
}
