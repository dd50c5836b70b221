//! The pipeline's part in LISTEN without pinning: a `LISTEN` goes to the server as a no-op
//! `UNLISTEN` of the same name (its answer is given back the `LISTEN` tag), and the change a
//! statement asks for takes effect as Postgres applies it: at commit, undone by a rollback or by
//! a rollback to a savepoint taken before it. Committed changes wait for the relay, which moves
//! the session's subscriptions on the hub.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use super::{Expect, Pipeline};
use crate::postgres::listen::sql::{self, Op};
use crate::postgres::pinning::Effects;
use crate::session::PinReason;

/// What a session's LISTEN, UNLISTEN and savepoint statements left to apply; boxed in the
/// pipeline once a session has sent one.
#[derive(Debug, Default)]
pub(super) struct ListenTrack {
    /// Changes of completed statements in the open transaction, with its savepoints.
    pending: Vec<Op>,
    /// An error since the last ReadyForQuery: an implicit transaction ending now rolled back.
    failed: bool,
    /// Committed changes, for the relay.
    committed: Vec<Op>,
    /// The change a prepared statement (`""`: the unnamed one) and a portal bound from it make
    /// when executed.
    statements: HashMap<Box<[u8]>, Op>,
    portals: HashMap<Box<[u8]>, Op>,
}

/// A client's statement after sluice looked at it for subscriptions.
pub(super) struct Looked {
    pub op: Option<Op>,
    /// `LISTEN` at this offset: the server gets `UN` inserted before it.
    pub listen_at: Option<usize>,
    /// Not one statement, and it may UNLISTEN among others (a session that listens looks).
    pub unlistens: bool,
}

impl Pipeline {
    /// Whether `sql` changes subscriptions (or, in a transaction that has pending changes, is a
    /// savepoint statement). A recognised LISTEN no longer pins: `fx.pin` is cleared.
    pub(super) fn look(&mut self, fx: &mut Effects, sql: &[u8]) -> Looked {
        let candidate = fx.pin == Some(PinReason::Listen) || fx.unpin_hint;
        if candidate && let Some(sub) = sql::subscription(sql) {
            if sub.listen_at.is_some() {
                fx.pin = None;
            }
            self.listen.get_or_insert_with(Box::default);
            return Looked {
                op: Some(sub.op),
                listen_at: sub.listen_at,
                unlistens: false,
            };
        }
        // Once a session has used LISTEN, its savepoints are followed (a cheap look at the first
        // word for its other statements): a ROLLBACK TO must undo only what came after it.
        let savepoint = self.listen.is_some().then(|| sql::savepoint(sql)).flatten();
        Looked {
            op: savepoint,
            listen_at: None,
            unlistens: fx.unpin_hint && self.listen.is_some(),
        }
    }

    /// A query's UNLISTENs reached its ReadyForQuery: pending in its transaction, committed
    /// with it by `listen_ready` unless something failed.
    pub(super) fn unlistened(&mut self, ops: Vec<Op>) {
        if let Some(l) = self.listen.as_mut() {
            l.pending.extend(ops);
        }
    }

    /// Remembers the change a Parse's statement makes, for the Binds and Executes of it.
    pub(super) fn parsed(&mut self, name: &[u8], op: Option<Op>) {
        let Some(l) = self.listen.as_mut() else {
            return;
        };
        match op {
            Some(op) => {
                l.statements.insert(name.into(), op);
            }
            None => {
                l.statements.remove(name);
            }
        }
    }

    /// A Bind makes `portal` carry its statement's change.
    pub(super) fn bound(&mut self, portal: &[u8], statement: &[u8]) {
        let Some(l) = self.listen.as_mut() else {
            return;
        };
        match l.statements.get(statement).cloned() {
            Some(op) => {
                l.portals.insert(portal.into(), op);
            }
            None => {
                l.portals.remove(portal);
            }
        }
    }

    /// An Execute of `portal`: its change, if any, is expected with its CommandComplete.
    pub(super) fn executing(&mut self, portal: &[u8]) {
        let Some(op) = self.listen.as_ref().and_then(|l| l.portals.get(portal)) else {
            return;
        };
        let op = Box::new(op.clone());
        self.expect.push_back(Expect::Statement(op));
    }

    /// The statement at the front completed: its change is pending in its transaction.
    /// Returns whether it was a LISTEN, whose CommandComplete must say so.
    pub(super) fn statement_completed(&mut self, op: Op) -> bool {
        let Some(l) = self.listen.as_mut() else {
            return false;
        };
        let listen = matches!(op, Op::Listen(_));
        match op {
            Op::RollbackTo(name) => {
                // Back to the savepoint, which stays; one older than every pending change
                // (taken before sluice looked) undoes them all.
                let at = l
                    .pending
                    .iter()
                    .rposition(|o| matches!(o, Op::Savepoint(n) if *n == name));
                l.pending.truncate(at.map_or(0, |i| i + 1));
            }
            Op::Release(name) => {
                if let Some(at) = l
                    .pending
                    .iter()
                    .rposition(|o| matches!(o, Op::Savepoint(n) if *n == name))
                {
                    let kept: Vec<Op> = l
                        .pending
                        .drain(at..)
                        .filter(|o| !matches!(o, Op::Savepoint(_)))
                        .collect();
                    l.pending.extend(kept);
                }
            }
            op => l.pending.push(op),
        }
        listen
    }

    /// A CommandComplete that ends a transaction block: `COMMIT` applies what is pending,
    /// `ROLLBACK` (with no savepoint: ROLLBACK TO came as a statement) and a prepared
    /// transaction (which Postgres refuses after LISTEN) drop it.
    pub(super) fn transaction_tag(&mut self, tag: &[u8]) {
        let Some(l) = self.listen.as_mut() else {
            return;
        };
        match tag {
            b"COMMIT" => l.commit(),
            b"ROLLBACK" | b"PREPARE TRANSACTION" => l.pending.clear(),
            _ => {}
        }
    }

    pub(super) fn listen_failed(&mut self) {
        if let Some(l) = self.listen.as_mut() {
            l.failed = true;
        }
    }

    /// At a ReadyForQuery: out of a transaction, an autocommitted or implicit one that did not
    /// fail has committed.
    pub(super) fn listen_ready(&mut self, idle: bool) {
        let Some(l) = self.listen.as_mut() else {
            return;
        };
        if idle {
            if l.failed {
                l.pending.clear();
            } else {
                l.commit();
            }
        }
        l.failed = false;
    }

    /// The server connection was lost: an open transaction's changes never committed.
    pub(super) fn listen_cut(&mut self) {
        if let Some(l) = self.listen.as_mut() {
            l.pending.clear();
            l.failed = false;
        }
    }

    /// DISCARD ALL: prepared statements and portals are gone, and every subscription ends, in
    /// its place among the committed changes (outside a transaction, as DISCARD ALL runs).
    pub(super) fn listen_discarded(&mut self) {
        if let Some(l) = self.listen.as_mut() {
            l.statements.clear();
            l.portals.clear();
            l.pending.clear();
            l.committed.push(Op::UnlistenAll);
        }
    }

    /// Committed subscription changes are waiting for the relay.
    #[inline]
    pub fn listen_due(&self) -> bool {
        self.listen
            .as_ref()
            .is_some_and(|l| !l.committed.is_empty())
    }

    /// The committed subscription changes, in order.
    pub fn take_listen(&mut self) -> Vec<Op> {
        self.listen
            .as_mut()
            .map(|l| std::mem::take(&mut l.committed))
            .unwrap_or_default()
    }
}

impl ListenTrack {
    fn commit(&mut self) {
        let changes = self
            .pending
            .drain(..)
            .filter(|o| matches!(o, Op::Listen(_) | Op::Unlisten(_) | Op::UnlistenAll));
        self.committed.extend(changes);
    }
}

/// A Query frame of `sql` with `UN` inserted at `at`.
pub(super) fn query_unlisten(out: &mut BytesMut, sql: &[u8], at: usize) {
    out.put_u8(b'Q');
    out.put_i32(i32::try_from(4 + sql.len() + 2 + 1).unwrap_or(i32::MAX));
    out.put_slice(&sql[..at]);
    out.put_slice(b"UN");
    out.put_slice(&sql[at..]);
    out.put_u8(0);
}

/// A Parse body after the statement name (`query\0` then parameter types) with `UN` inserted
/// at `at` in the query.
pub(super) fn rest_unlisten(rest: &[u8], at: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 2);
    out.extend_from_slice(&rest[..at]);
    out.extend_from_slice(b"UN");
    out.extend_from_slice(&rest[at..]);
    out
}
