//! The per-session request/response bookkeeping of the extended protocol, free of I/O.
//!
//! Every message forwarded to the server that produces a response is queued as an [`Expect`],
//! so responses can be matched to requests: that is what lets sluice answer a Parse itself
//! (the statement is already prepared on this connection), prepare a statement the client made
//! on another connection, swallow the responses of its own messages, and know that the server
//! is idle at a ReadyForQuery with nothing in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use super::listen::sql::Op;
use super::statements::{ServerStatements, Statement, StatementRegistry};
use super::wire::{self, Reader, WireError, frontend, status};
use crate::session::PinReason;

#[derive(Debug)]
enum Expect {
    /// `stmt`: the remapped statement, confirmed on success and forgotten again (with the
    /// client's name for it) if the server rejects this Parse.
    Parse {
        visible: bool,
        stmt: Option<Arc<Statement>>,
        client_name: Option<Box<[u8]>>,
    },
    /// The id of the remapped statement bound or described, if any: retired if the server
    /// calls it stale. (An id, not a reference: taking one costs an atomic on a count that every
    /// session of the pool shares.)
    Bind(Option<u64>),
    Describe(Option<u64>),
    /// A Bind or Describe of a statement the server called stale, sent under a name the server
    /// does not know so that it fails in place (and aborts a transaction, skips to Sync) as the
    /// session's own stale statement would: its error is replaced by the statement's.
    Doomed(Arc<Statement>),
    Execute,
    /// `evicted`: the statement sluice closed to make room, prepared again if the server
    /// skipped this Close after an error.
    Close {
        visible: bool,
        evicted: Option<u64>,
    },
    /// Sync, simple Query or FunctionCall: answered with ReadyForQuery. When it went to the
    /// server (the database response latency is measured from here).
    Ready(Instant),
    /// sluice's own Sync, ending the server's skip after an error it swallowed: its
    /// ReadyForQuery is swallowed too.
    Resync,
    /// A response sluice produces itself, in its place in the stream; for a ParseComplete, the
    /// client's statement name to forget if an earlier error means the Parse never happened.
    Synthetic(Reply, Option<Box<[u8]>>),
    /// sluice's own simple query: everything up to its ReadyForQuery is swallowed (rows kept
    /// for the purposes that read them).
    Internal(Purpose),
    /// Ahead of the CommandComplete of a statement that changes the session's subscriptions
    /// (or its savepoints while changes are pending): the change, taken in when it completes.
    Statement(Box<Op>),
    /// Ahead of the ReadyForQuery of a query of several statements: its UNLISTENs, which take
    /// effect with its transaction if nothing in it failed.
    AtReady(Vec<Op>),
}

impl Expect {
    /// A Parse the server answers for the client, remapping nothing.
    fn parse_through() -> Self {
        Self::Parse {
            visible: true,
            stmt: None,
            client_name: None,
        }
    }
}

/// A response sluice gives in the server's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// A Parse of a statement this connection already has.
    ParseComplete,
    /// A Close of a statement the server keeps for other sessions.
    CloseComplete,
    /// `DEALLOCATE name` of a remapped statement: CommandComplete and ReadyForQuery.
    Deallocated,
    /// `DEALLOCATE ALL` of an unpinned session.
    DeallocatedAll,
    /// `DISCARD ALL` of an unpinned session: nothing of it lives on the server to discard.
    DiscardedAll,
}

/// Why sluice runs a query of its own on the session's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sets the session's parameters where the connection's differ.
    Replay,
    /// Reads back parameters a transaction may have changed: rows of (name, value).
    ReadBack,
    /// Counts what still pins the session: one row, zero when nothing does.
    PinCheck,
}

/// Statement names no client can hold a mapping for: binding them fails as Postgres would.
const MISSING_UNNAMED: &[u8] = b"_sluice_unnamed_statement_of_another_session";
/// Every server-side name sluice makes starts so; a client naming one it does not hold a
/// mapping for is never let through to touch another session's statement.
const SERVER_NAME_PREFIX: &[u8] = b"_sluice_";

/// Whether the first word of `sql` may be `DISCARD`/`DEALLOCATE` (or hides behind a comment).
fn starts_with_d_or_comment(sql: &[u8]) -> bool {
    sql.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| matches!(b, b'd' | b'D' | b'-' | b'/'))
}

/// The client's extended-protocol messages since its last Sync (one byte: every session task
/// holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Synced,
    /// Messages not yet followed by Sync.
    Open,
    /// ... and one of them was an Execute: an error now rolls its effects back.
    Executed,
}

#[derive(Debug)]
pub struct Pipeline {
    session_id: u64,
    expect: VecDeque<Expect>,
    statements: HashMap<Box<[u8]>, Arc<Statement>>,
    /// Extended-protocol messages the client sent since its last Sync.
    segment: Segment,
    /// DDL ran and its transaction has not ended: other sessions may have planned statements on
    /// the old schema since, stamped with the new epoch; it moves again when it ends.
    ddl_open: bool,
    /// The server answered something no request asked for: its connection cannot be trusted
    /// to line up with requests any more (the next session could read this one's rows).
    out_of_order: bool,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    /// Boxed, not a String: 8 bytes of every session task, and rarely set.
    internal_error: Option<Box<str>>,
    /// A DISCARD ALL took effect, here or on the server: the session's parameters are its
    /// startup ones again.
    discarded: Option<Discard>,
    /// Parameter names and values in flight between statements and sluice's read-back;
    /// boxed because most sessions never change a parameter.
    tracked: Option<Box<Tracked>>,
    pins: PinState,
    /// How long the borrow for this transaction's first request waited (µs): part of that
    /// request's response time as the client sees it, taken at its ReadyForQuery.
    borrow_wait_us: u32,
    /// A request sluice may run again if the server calls its statement stale; boxed and kept
    /// once a session has used a prepared statement.
    retry: Option<Box<Retry>>,
    /// Subscription changes on their way to commit; boxed once a session sends LISTEN/UNLISTEN.
    listen: Option<Box<ListenTrack>>,
    /// The last Query's and Parse's texts and what their scans found: drivers send the same
    /// statements again and again. Dropped when the session parks.
    scans: Option<Box<memo::Scans>>,
}

/// What ties a session to its server connection, and the connection to no one else. One byte
/// each: every session task holds them.
#[derive(Debug, Default, PartialEq, Eq)]
struct PinState {
    pinned: Option<PinReason>,
    /// A parameter change sluice cannot name: the session keeps its connection until DISCARD ALL.
    untracked: bool,
    /// `LOAD` ran: the session keeps its connection for good.
    loaded: bool,
    /// A pinned session ran something that may have dropped what pins it.
    check_due: bool,
    /// Outcome of the last pin check: `Some(true)` when nothing pins the session any more.
    check: Option<bool>,
    /// A statement that pins was sent after the last pin check: the check answers for the
    /// server as it was before, so its "nothing pins" no longer holds.
    pinned_since_check: bool,
    /// The connection must not serve anyone else (a `DEALLOCATE` sluice cannot attribute, a
    /// `RESET ALL` that undid the init query).
    retire: bool,
}

/// Where a `DISCARD ALL` took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Answered by sluice: the server connection was not touched.
    Local,
    /// Ran on the server: the connection lost every session-level value sluice had set.
    Server,
}

impl Pipeline {
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            expect: VecDeque::new(),
            statements: HashMap::new(),
            segment: Segment::Synced,
            ddl_open: false,
            out_of_order: false,
            status: status::IDLE,
            internal_error: None,
            discarded: None,
            tracked: None,
            pins: PinState::default(),
            borrow_wait_us: 0,
            retry: None,
            listen: None,
            scans: None,
        }
    }

    /// Whether nothing distinguishes it from `Pipeline::new`'s but its id and the last borrow's
    /// wait: a parked session then keeps no pipeline and starts a new one when it resumes.
    /// Every field is named here, so a new one must say whether it survives an idle wait.
    pub fn pristine(&self) -> bool {
        let Self {
            session_id: _,
            expect,
            statements,
            segment,
            ddl_open,
            out_of_order,
            status: ready,
            internal_error,
            discarded,
            tracked,
            pins,
            borrow_wait_us: _,
            retry,
            listen,
            scans: _,
        } = self;
        expect.is_empty()
            && statements.is_empty()
            && *segment == Segment::Synced
            && !ddl_open
            && !out_of_order
            && *ready == status::IDLE
            && internal_error.is_none()
            && discarded.is_none()
            && tracked.is_none()
            && *pins == PinState::default()
            && retry.is_none()
            && listen.is_none()
    }

    /// Before the session parks: what only saves work while it is busy goes.
    pub fn forget_scan(&mut self) {
        self.scans = None;
    }

    /// The server connection may go back to the pool: nothing in flight, idle, not pinned.
    pub fn releasable(&self) -> bool {
        self.expect.is_empty()
            && self.segment == Segment::Synced
            && self.status == status::IDLE
            && self.pins.pinned.is_none()
    }

    /// Something for the relay to do once the transaction is over (rare: after parameter
    /// changes, pin-releasing statements and sluice's own queries about them).
    #[inline]
    pub fn after_transaction_due(&self) -> bool {
        self.tracked.is_some() || self.pins.check_due || self.pins.check.is_some()
    }

    /// Nothing is in flight (a pinned or in-transaction session may still hold the connection).
    pub fn quiet(&self) -> bool {
        self.expect.is_empty() && self.segment == Segment::Synced
    }

    /// Queues sluice's own simple query ahead of the client's messages.
    pub fn internal_query(&mut self, purpose: Purpose, sql: &str, sout: &mut BytesMut) {
        wire::query(sout, sql);
        self.expect.push_back(Expect::Internal(purpose));
    }

    fn push(&mut self, e: Expect, cout: &mut BytesMut) {
        match e {
            // Nothing ahead of it: answer at once.
            Expect::Synthetic(reply, _) if self.expect.is_empty() => {
                synth(reply, self.status, cout)
            }
            e => self.expect.push_back(e),
        }
    }

    /// When the request a ReadyForQuery arriving now answers went to the server; `None` when
    /// it answers sluice's own query.
    pub fn ready_sent(&self) -> Option<Instant> {
        if matches!(
            self.expect.front(),
            Some(Expect::Internal(_) | Expect::Resync)
        ) || self.retry_swallowed()
        {
            return None;
        }
        self.expect.iter().find_map(|e| match e {
            Expect::Ready(sent) => Some(*sent),
            _ => None,
        })
    }

    /// Handles one complete client message `frame` (header included), writing what goes to
    /// the server into `sout` and any immediate answer into `cout`.
    /// Returns the pin reason if this message newly pins the session.
    pub fn client_message(
        &mut self,
        frame: &[u8],
        server: &mut ServerStatements,
        registry: &StatementRegistry,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<Option<PinReason>, WireError> {
        let tag = frame[0];
        let body = &frame[wire::FRAME_HEADER_LEN..];
        let mut pin = None;
        tracing::trace!(session = self.session_id, tag = %(tag as char), expect = self.expect.len(), "client message");
        self.client_goes_on(cout);
        match tag {
            frontend::QUERY => {
                // The text runs to the message's last byte, its NUL, so it needs no search. A
                // NUL inside makes the server refuse the whole message: nothing after it runs.
                let sql = match body.split_last() {
                    Some((0, text)) => text,
                    _ => Reader::new(body, "Query").cstr()?,
                };
                // Most queries cannot be DISCARD or DEALLOCATE: skip both scans for them.
                let maybe_reset = starts_with_d_or_comment(sql);
                if maybe_reset && self.discard_all_locally(sql, cout) {
                    return Ok(None);
                }
                pin = self.query(frame, sql, maybe_reset, sout, cout);
            }
            frontend::FUNCTION_CALL => {
                sout.extend_from_slice(frame);
                self.push(Expect::Ready(Instant::now()), cout);
            }
            frontend::SYNC => {
                sout.extend_from_slice(frame);
                self.segment = Segment::Synced;
                self.push(Expect::Ready(Instant::now()), cout);
            }
            frontend::PARSE => pin = self.parse(frame, (server, registry, prefix), sout, cout)?,
            frontend::BIND | frontend::DESCRIBE => {
                if tag == frontend::BIND && self.listen.is_some() {
                    let mut r = Reader::new(body, "Bind");
                    let (portal, statement) = (r.cstr()?, r.cstr()?);
                    self.bound(portal, statement);
                }
                let named = self.bind_or_describe(frame, (server, prefix), sout, cout)?;
                self.record(frame, named.prepared());
                let expect = if tag == frontend::BIND {
                    named.expect(Expect::Bind)
                } else {
                    named.expect(Expect::Describe)
                };
                self.push(expect, cout);
                return Ok(self.newly_pinned(pin));
            }
            frontend::CLOSE => self.close(frame, sout, cout)?,
            frontend::EXECUTE => {
                sout.extend_from_slice(frame);
                if self.listen.is_some() {
                    self.executing(Reader::new(body, "Execute").cstr()?);
                }
                self.push(Expect::Execute, cout);
                // After record(): the Execute of a request being recorded is its own.
                self.record(frame, None);
                self.segment = Segment::Executed;
                return Ok(self.newly_pinned(pin));
            }
            frontend::FLUSH => sout.extend_from_slice(frame),
            _ => sout.extend_from_slice(frame),
        }
        self.record(frame, None);
        Ok(self.newly_pinned(pin))
    }

    fn open_segment(&mut self) {
        if self.segment == Segment::Synced {
            self.segment = Segment::Open;
        }
    }

    /// `pin`, if it is the session's first.
    fn newly_pinned(&mut self, pin: Option<PinReason>) -> Option<PinReason> {
        self.pins.pinned_since_check |= pin.is_some();
        let reason = pin.filter(|_| self.pins.pinned.is_none())?;
        self.pins.pinned = Some(reason);
        Some(reason)
    }

    /// The session freed all its statements (DEALLOCATE ALL, DISCARD ALL). They stay shared:
    /// drivers free statements routinely (psycopg and Rails when their caches evict, Npgsql's
    /// DISCARD ALL on every reopen), and retiring them would make every session prepare
    /// again. What a schema change made stale is retired by the change (the epoch) or by the
    /// server's error, whichever comes first.
    fn forget_statements(&mut self) {
        self.statements.clear();
    }

    /// Where a DISCARD ALL took effect since the last call (the relay resets parameters).
    pub fn take_discard(&mut self) -> Option<Discard> {
        self.discarded.take()
    }

    /// sluice's own query is the oldest thing in flight.
    pub fn internal(&self) -> bool {
        matches!(self.expect.front(), Some(Expect::Internal(_)))
    }

    /// Takes the error of sluice's parameter replay, once its ReadyForQuery has come.
    pub fn take_internal_error(&mut self) -> Option<Box<str>> {
        if self.internal() {
            return None;
        }
        self.internal_error.take()
    }

    /// Transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn pinned(&self) -> Option<PinReason> {
        self.pins.pinned
    }

    /// Whether the connection may serve no one else; taken when it is released.
    pub fn take_retire(&mut self) -> bool {
        std::mem::take(&mut self.pins.retire)
    }

    /// The server sent a response out of order since the last call.
    pub fn take_out_of_order(&mut self) -> bool {
        std::mem::take(&mut self.out_of_order)
    }

    pub fn retiring(&self) -> bool {
        self.pins.retire
    }

    pub fn retire_connection(&mut self) {
        self.pins.retire = true;
    }

    /// The session may have left state on the server that sluice cannot name (a pin, a
    /// parameter change not read back yet): a reset is due before anyone else uses it.
    pub fn server_state_unknown(&self) -> bool {
        self.pins.pinned.is_some() || self.tracked.is_some()
    }

    /// How long this transaction's borrow waited (µs), told when the borrow succeeds.
    pub fn set_borrow_wait(&mut self, us: u32) {
        self.borrow_wait_us = us;
    }

    pub fn take_borrow_wait(&mut self) -> u32 {
        std::mem::take(&mut self.borrow_wait_us)
    }

    /// Statements the session has prepared (protocol level).
    pub fn statements_len(&self) -> usize {
        self.statements.len()
    }
}

mod cut;
mod ending;
mod listen;
mod local;
mod memo;
mod naming;
mod requests;
mod responses;
mod retry;

pub use cut::Cut;
pub use ending::TransactionEnd;

use ending::Tracked;
use listen::ListenTrack;
use naming::Bound;
use responses::synth;
use retry::Retry;

#[cfg(test)]
mod tests;
