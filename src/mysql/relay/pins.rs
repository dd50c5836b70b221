//! A session's pins and the names that lift them: a pin goes once the server confirmed the state
//! is gone (`UNLOCK TABLES`, the last temporary table dropped, the last SQL prepared statement
//! deallocated, the last named lock released), or at a connection reset.

use crate::mysql::pinning::Change;
use std::sync::Arc;

use crate::session::{PinCounts, PinReason};

#[derive(Debug)]
pub struct Pins {
    /// Process-wide counts by reason (the cluster's handle).
    counts: Arc<PinCounts>,
    /// One bit per `PinReason`.
    reasons: u32,
    temp_tables: Vec<Box<[u8]>>,
    prepared: Vec<Box<[u8]>>,
    /// Named locks held; `None` for a name sluice could not read.
    locks: Vec<Option<Box<[u8]>>>,
    /// Client ids of statements with an open cursor.
    cursors: Vec<u32>,
    /// Open HANDLERs, by the name statements use for them.
    handlers: Vec<Box<[u8]>>,
}

impl Pins {
    pub fn new(counts: Arc<PinCounts>) -> Self {
        Self {
            counts,
            reasons: 0,
            temp_tables: Vec::new(),
            prepared: Vec::new(),
            locks: Vec::new(),
            cursors: Vec::new(),
            handlers: Vec::new(),
        }
    }

    pub fn add(&mut self, reason: PinReason) -> bool {
        let bit = 1 << reason as u32;
        let new = self.reasons & bit == 0;
        if new {
            self.counts.pinned(reason);
        }
        self.reasons |= bit;
        new
    }

    fn lift(&mut self, reason: PinReason) {
        let bit = 1 << reason as u32;
        if self.reasons & bit != 0 {
            self.reasons &= !bit;
            self.counts.unpinned(reason);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reasons == 0
            && self.temp_tables.is_empty()
            && self.prepared.is_empty()
            && self.locks.is_empty()
            && self.cursors.is_empty()
            && self.handlers.is_empty()
    }

    pub fn open_cursor(&mut self, statement: u32) {
        if !self.cursors.contains(&statement) {
            self.cursors.push(statement);
        }
    }

    /// True if `statement` had an open cursor.
    pub fn close_cursor(&mut self, statement: u32) -> bool {
        let Some(i) = self.cursors.iter().position(|c| *c == statement) else {
            return false;
        };
        self.cursors.swap_remove(i);
        if self.cursors.is_empty() {
            self.lift(PinReason::PreparedCursor);
        }
        true
    }

    pub fn reasons(&self) -> impl Iterator<Item = PinReason> + '_ {
        PinReason::ALL
            .into_iter()
            .filter(|r| self.reasons & (1 << *r as u32) != 0)
    }

    /// Applies what a statement created, and what it dropped if it `succeeded`.
    pub fn apply(&mut self, changes: &[Change<'_>], succeeded: bool) {
        for change in changes {
            if !succeeded && !change.creates() {
                continue;
            }
            match *change {
                Change::TempCreated(n) => add_name(&mut self.temp_tables, n),
                Change::TableDropped(n) => remove_name(&mut self.temp_tables, n),
                Change::Prepared(n) => add_name(&mut self.prepared, n),
                Change::Deallocated(n) => remove_name(&mut self.prepared, n),
                Change::LockTaken(n) => self.locks.push(n.map(Into::into)),
                Change::LockReleased(n) => {
                    if let Some(i) = self
                        .locks
                        .iter()
                        .position(|l| l.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(n)))
                    {
                        self.locks.swap_remove(i);
                    }
                }
                Change::AllLocksReleased => self.locks.clear(),
                Change::TablesUnlocked => self.lift(PinReason::LockTables),
                Change::XaEnded => self.lift(PinReason::Xa),
                Change::HandlerOpened(n) => add_name(&mut self.handlers, n),
                Change::HandlerClosed(n) => remove_name(&mut self.handlers, n),
                Change::Renamed(from, to) => {
                    if self.temp_tables.iter().any(|n| **n == *from) {
                        remove_name(&mut self.temp_tables, from);
                        add_name(&mut self.temp_tables, to);
                    }
                }
            }
        }
        if self.temp_tables.is_empty() {
            self.lift(PinReason::TempObject);
        }
        if self.prepared.is_empty() {
            self.lift(PinReason::SqlPrepare);
        }
        if self.locks.is_empty() {
            self.lift(PinReason::AdvisoryLock);
        }
        if self.handlers.is_empty() {
            self.lift(PinReason::ServerCursor);
        }
    }

    /// All pins go (a connection reset).
    pub fn clear(&mut self) {
        self.cursors.clear();
        self.handlers.clear();
        for r in PinReason::ALL {
            self.lift(r);
        }
    }
}

fn add_name(names: &mut Vec<Box<[u8]>>, name: &[u8]) {
    if !names.iter().any(|n| **n == *name) {
        names.push(name.into());
    }
}

fn remove_name(names: &mut Vec<Box<[u8]>>, name: &[u8]) {
    names.retain(|n| **n != *name);
}

/// Why a session keeps its connection for the next command although no transaction is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(in crate::mysql) enum Hold {
    #[default]
    None,
    /// SHOW WARNINGS, FOUND_ROWS() read the previous statement's result: kept briefly, since an
    /// idle client must not occupy a server connection for long to make them exact.
    Soft,
    /// `SET TRANSACTION`, long data: state on the connection that must not reach another
    /// session, kept until the command that consumes it.
    Hard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_lift_when_their_names_are_gone() {
        let mut p = Pins::new(Default::default());
        p.add(PinReason::TempObject);
        p.apply(
            &[Change::TempCreated(b"a"), Change::TempCreated(b"b")],
            true,
        );
        p.apply(&[Change::TableDropped(b"B")], true);
        assert!(!p.is_empty(), "names compare exactly");
        p.apply(&[Change::Renamed(b"b", b"c")], true);
        p.apply(
            &[Change::TableDropped(b"a"), Change::TableDropped(b"b")],
            true,
        );
        assert!(!p.is_empty(), "b is now c");
        p.apply(&[Change::TableDropped(b"c")], false);
        assert!(!p.is_empty(), "a failed statement drops nothing");
        p.apply(&[Change::TableDropped(b"c")], true);
        assert!(p.is_empty());

        p.add(PinReason::AdvisoryLock);
        p.apply(
            &[Change::LockTaken(Some(b"x")), Change::LockTaken(None)],
            false,
        );
        p.apply(&[Change::LockReleased(b"x")], true);
        assert!(!p.is_empty(), "a lock with an unknown name is still held");
        p.apply(&[Change::AllLocksReleased], true);
        assert!(p.is_empty());

        p.add(PinReason::PreparedCursor);
        p.open_cursor(4);
        assert!(!p.close_cursor(5));
        assert!(p.close_cursor(4));
        assert!(p.is_empty(), "the last cursor closed lifts the pin");

        p.add(PinReason::UserVariable);
        p.apply(&[Change::TablesUnlocked, Change::AllLocksReleased], true);
        assert_eq!(
            p.reasons().collect::<Vec<_>>(),
            vec![PinReason::UserVariable]
        );
        p.clear();
        assert!(p.is_empty());
    }
}
