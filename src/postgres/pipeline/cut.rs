//! What is left of a session's pipeline when its server connection is lost mid-request: the
//! requests the client still waits on, and state that went with the server.

use super::{Expect, PinState, Pipeline, Segment, status};

/// The client-visible requests a lost connection leaves unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Sync or Query messages sent to the server and not yet answered with ReadyForQuery.
    pub ready: usize,
    /// Extended-protocol messages sent without their Sync yet: the client will send it.
    pub unsynced: bool,
    /// The session was inside a transaction block.
    pub in_transaction: bool,
}

impl Pipeline {
    /// Forgets everything in flight and all state the server held (pins, parameter read-backs,
    /// statements whose Parse never completed); the session's tracked parameters and completed
    /// statements stay, to be replayed on the next connection.
    pub fn cut(&mut self) -> Cut {
        let mut ready = 0;
        for e in self.expect.drain(..) {
            match e {
                Expect::Ready(_) => ready += 1,
                Expect::Parse {
                    client_name: Some(name),
                    ..
                }
                | Expect::Synthetic(_, Some(name)) => {
                    self.statements.remove(&name);
                }
                _ => {}
            }
        }
        let cut = Cut {
            ready,
            unsynced: self.segment != Segment::Synced,
            in_transaction: self.status != status::IDLE,
        };
        self.segment = Segment::Synced;
        self.ddl_open = false;
        // A request recorded, or whose error was swallowed, went with the server.
        self.retry_off();
        self.status = status::IDLE;
        self.pins = PinState::default();
        self.internal_error = None;
        self.tracked = None;
        self.listen_cut();
        cut
    }
}
