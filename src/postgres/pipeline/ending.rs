//! What a transaction did to the session's parameters and pins, and what the relay does about
//! it once the transaction is over: read parameters back, check pins, put values back.

use super::Pipeline;
use crate::postgres::pinning::Effects;
use crate::postgres::settings::{Changes, changes};
use crate::session::PinReason;

/// Parameter tracking between a transaction's statements and sluice's read-back of them.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// What the transaction's queries did to parameters so far (`names`: to read back).
    pub(super) changes: Changes,
    /// Rows of the last read-back: (name, value).
    pub(super) read_back: Vec<(String, Option<String>)>,
    /// The server refused the last read-back.
    pub(super) read_back_failed: bool,
}

/// What the relay does once a transaction is over, as the pipeline's bookkeeping decided.
#[derive(Debug, Default)]
pub struct TransactionEnd {
    /// Parameter values the read-back found (none when it failed).
    pub read_back: Vec<(String, Option<String>)>,
    /// Parameters to read back now.
    pub touched: Vec<String>,
    /// `RESET ALL` ran: every parameter sluice knows of is to be read back too.
    pub reset_all: bool,
    /// Parameters reset (last) by the transaction: back to the session's startup values.
    pub resets: Vec<String>,
    /// A parameter was set after the transaction's `RESET ALL`.
    pub set_after_reset_all: bool,
    /// The read-back failed, so the session is pinned now, for this reason.
    pub pinned: Option<PinReason>,
    /// The pin check found nothing holding the session: this pin is lifted.
    pub unpinned: Option<PinReason>,
    /// A pin check is due: the relay queues it.
    pub check_pins: bool,
}

impl Pipeline {
    pub(super) fn tracked(&mut self) -> &mut Tracked {
        self.tracked.get_or_insert_with(Box::default)
    }

    /// Notes what a statement may do to session state; returns the pin it brings, if any.
    pub(super) fn track(&mut self, fx: Effects, sql: &[u8]) -> Option<PinReason> {
        let mut pin = fx.pin;
        if fx.settings {
            let c = changes(sql);
            let untracked = c.untracked;
            if c.reset_all || !c.names.is_empty() {
                self.tracked().changes.then(c);
            }
            if untracked {
                self.pins.untracked = true;
                pin = pin.or(Some(PinReason::SetParameter));
            }
        }
        self.pins.loaded |= fx.permanent;
        self.pins.check_due |= fx.unpin_hint;
        pin
    }

    /// A DISCARD ALL ran on the server: untracked changes are gone, and the pins may be too.
    /// Values read back so far were read before it (answers come in order): they are gone too.
    pub fn server_discarded(&mut self) {
        self.pins.untracked = false;
        self.pins.check_due = true;
        if let Some(tracked) = self.tracked.as_mut() {
            tracked.read_back.clear();
            tracked.read_back_failed = false;
        }
    }

    /// Takes in what sluice's own queries found once a transaction is over, and says what the
    /// relay does next (read back, check pins, count a pin or unpin).
    pub fn end_transaction(&mut self) -> TransactionEnd {
        let tracked = self.tracked.take().map(|t| *t).unwrap_or_default();
        let mut end = TransactionEnd {
            touched: tracked.changes.names,
            reset_all: tracked.changes.reset_all,
            resets: tracked.changes.resets,
            set_after_reset_all: tracked.changes.set_after_reset_all,
            ..TransactionEnd::default()
        };
        let pins = &mut self.pins;
        if tracked.read_back_failed {
            pins.untracked = true;
            if pins.pinned.is_none() {
                pins.pinned = Some(PinReason::SetParameter);
                end.pinned = pins.pinned;
            }
        } else {
            end.read_back = tracked.read_back;
        }
        let stale = pins.pinned_since_check;
        if pins.check.take() == Some(true) && !stale && !pins.untracked && !pins.loaded {
            end.unpinned = pins.pinned.take();
        }
        let due = std::mem::take(&mut pins.check_due);
        end.check_pins = due && pins.pinned.is_some() && !pins.untracked && !pins.loaded;
        if end.check_pins {
            // The relay sends the check now: it sees every pin made so far.
            pins.pinned_since_check = false;
        }
        end
    }
}
