//! What the health probes know of a target group: the snapshot routing reads, the failover
//! state machine writes and the metrics report. Plain data, so all three can share it without
//! importing each other.

use std::time::Duration;

/// One instance as the probes last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub healthy: bool,
    pub writable: bool,
    /// Behind the writer; `None` when it cannot be told (no writer, no position).
    pub lag: Option<Duration>,
    pub position: Option<u64>,
}

/// What the probes know of a target group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Grows with every snapshot.
    pub epoch: u64,
    pub writer: Option<usize>,
    pub failovers: u64,
    pub members: Box<[MemberView]>,
}
