//! Engine-neutral session state: why a session is pinned to its server connection.

use std::fmt;

/// Why a client session keeps its server connection past a transaction. Every pin is logged with
/// its reason and (with the metrics issue) counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// `SET`/`RESET`/`set_config()` of a session parameter (until parameters are tracked).
    SetParameter,
    /// SQL-level `PREPARE` (protocol-level statements are remapped instead).
    SqlPrepare,
    TempObject,
    Listen,
    AdvisoryLock,
    CursorWithHold,
    Load,
    /// `DISCARD`/`DEALLOCATE` inside a multi-statement query or the extended protocol.
    SessionReset,
}

impl PinReason {
    pub const ALL: [PinReason; 8] = [
        Self::SetParameter,
        Self::SqlPrepare,
        Self::TempObject,
        Self::Listen,
        Self::AdvisoryLock,
        Self::CursorWithHold,
        Self::Load,
        Self::SessionReset,
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
            Self::SessionReset => "session_reset",
        }
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
