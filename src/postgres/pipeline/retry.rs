//! Running a request again when the server calls its shared statement stale, so that a schema
//! change made behind sluice's back costs the client nothing where a fresh statement would have
//! worked.
//!
//! A statement prepared before an `ALTER TABLE` fails with "cached plan must not change result
//! type" (or "cache lookup failed for type" after a type was dropped and made again). On a
//! direct connection that happens only to a session that prepared before the change; through
//! sluice, a session that prepared after it may have been handed the shared, older statement.
//! So when such a request fails before anything of it reached the client, outside a
//! transaction, with nothing else in flight, and it will describe what it runs (so the client
//! learns the new row shape), sluice swallows the error, points the session's name at a new
//! statement of the same text, and sends the same messages again: they prepare it afresh.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Bound, Expect, Pipeline, Reply, Segment};
use crate::postgres::statements::{ServerStatements, Statement, StatementRegistry};
use crate::postgres::wire::{self, frontend, status};

#[derive(Debug, Default)]
pub(super) struct Retry {
    state: State,
    /// The id of the statement the request binds or describes first.
    stmt: Option<u64>,
    /// The client's messages of the request, from that Bind or Describe through its Sync.
    frames: BytesMut,
    /// A Bind is recorded: a request of one Bind only is sent again, so that its Describe
    /// speaks for the statement that failed.
    bound: bool,
    /// The statement's Parse gave every parameter's type.
    typed: bool,
    /// The request (or its first message) describes what it runs: its answer tells the client
    /// the row shape, which a stale statement may have changed.
    describes: bool,
    /// The swallowed error, given to the client after all should it send more before the
    /// retry could start.
    error: BytesMut,
}

/// What becomes of an ErrorResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Forward,
    /// Swallowed; the request is sent again after its ReadyForQuery.
    Swallow,
    /// Swallowed; the request, not yet synced, is sent again at once behind a Sync of sluice's.
    ResendNow,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Off,
    Recording,
    /// Its Sync is recorded, and nothing has been sent after it.
    Recorded,
    /// The server rejected the statement; its ReadyForQuery is awaited.
    Failed,
    /// Sent again: once is enough.
    Done,
}

/// The server says a cached plan no longer matches the schema: the result type changed
/// (0A000 from RevalidateCachedQuery; its message is localized, the routine is not), or a type
/// it names is gone (an internal error, whose message is never localized).
pub(super) fn stale_plan(body: &[u8]) -> bool {
    wire::parse_error_fields(body).is_ok_and(|f| {
        (f.code == "0A000"
            && (f.routine == "RevalidateCachedQuery"
                || f.message == "cached plan must not change result type"))
            || (f.code == "XX000" && f.message.starts_with("cache lookup failed for type"))
    })
}

/// A request's recorded frames beyond this are not worth keeping (nor their buffer).
const MAX_RECORDED: usize = 8 << 10;

/// Whether a Bind `frame` means the same to a statement planned afresh: at most one result
/// format (a format per column was written for the old row shape; the server would reject
/// it), and parameters in text unless the statement's Parse gave every type (`typed`: a fresh
/// plan may infer other types for parameters the client left unspecified, and binary values
/// would be read as those).
fn rebindable(frame: &[u8], typed: bool) -> bool {
    if frame[0] != frontend::BIND {
        return true;
    }
    frame.len() <= MAX_RECORDED
        && wire::bind_formats(&frame[wire::FRAME_HEADER_LEN..])
            .is_ok_and(|(text_params, results)| (text_params || typed) && results <= 1)
}

/// Whether a Describe `frame` describes the recorded request's statement, or the portal of its
/// Bind (named by the recorded frames' first Bind).
fn describes(frame: &[u8], r: &Retry, named: Option<Bound>) -> bool {
    let body = &frame[wire::FRAME_HEADER_LEN..];
    match body.first().copied() {
        Some(frontend::KIND_STATEMENT) => named.is_some_and(|b| Some(b.id) == r.stmt),
        Some(frontend::KIND_PORTAL) if r.bound => {
            let portal = &body[1..];
            wire::Frames::new(&r.frames, usize::MAX)
                .filter_map(Result::ok)
                .find(|(_, f)| f.tag == frontend::BIND)
                .is_some_and(|(at, f)| {
                    let bind = f.body(&r.frames[at..]);
                    bind.iter()
                        .position(|&b| b == 0)
                        .is_some_and(|end| portal.strip_suffix(b"\0") == Some(&bind[..end]))
                })
        }
        _ => false,
    }
}

/// What may be in flight ahead of a request that can be retried: sluice's own messages, and
/// the answer to a Parse sluice gave itself (it stays true however the request goes).
fn hidden(e: &Expect) -> bool {
    matches!(
        e,
        Expect::Internal(_)
            | Expect::Parse { visible: false, .. }
            | Expect::Close { visible: false, .. }
            | Expect::Synthetic(Reply::ParseComplete, _)
    )
}

impl Pipeline {
    /// The statement with this id that the session maps a name to.
    fn mapped(&self, id: u64) -> Option<Arc<Statement>> {
        self.statements.values().find(|s| s.id == id).cloned()
    }

    fn retry_state(&self) -> State {
        self.retry.as_deref().map_or(State::Off, |r| r.state)
    }

    /// The ReadyForQuery due next ends a request whose error was swallowed: it is not the
    /// client's answer (and not a response time).
    pub(super) fn retry_swallowed(&self) -> bool {
        self.retry_state() == State::Failed
    }

    pub(super) fn retry_off(&mut self) {
        if let Some(r) = self.retry.as_deref_mut() {
            r.state = State::Off;
            r.stmt = None;
        }
    }

    /// A client message arrived while a recorded request is still unanswered: that request can
    /// no longer be sent again behind the client's back. One whose error was swallowed gets it
    /// now, ahead of anything this message brings (its ReadyForQuery is still due, so nothing
    /// else can be ahead of it). Called first for every client message.
    #[inline]
    pub(super) fn client_goes_on(&mut self, cout: &mut BytesMut) {
        match self.retry_state() {
            State::Recorded => self.retry_off(),
            State::Failed => {
                if let Some(r) = self.retry.as_deref() {
                    cout.extend_from_slice(&r.error);
                }
                self.retry_off();
            }
            _ => {}
        }
    }

    /// Follows a client message for the request that may be retried. `named`: the statement a
    /// Bind or Describe-statement names, and whether this connection had it prepared already
    /// (a statement prepared in this very request cannot be stale).
    pub(super) fn record(&mut self, frame: &[u8], named: Option<Bound>) {
        let tag = frame[0];
        match self.retry_state() {
            State::Off => {
                let Some(b) = named.filter(|b| b.here) else {
                    return;
                };
                if self.status != status::IDLE
                    || self.segment == Segment::Executed
                    || !self.expect.iter().all(hidden)
                    || !rebindable(frame, b.typed)
                {
                    return;
                }
                let r = self.retry.get_or_insert_with(Box::default);
                r.state = State::Recording;
                r.typed = b.typed;
                r.stmt = Some(b.id);
                r.describes = tag == frontend::DESCRIBE;
                r.bound = tag == frontend::BIND;
                r.frames.clear();
                r.frames.extend_from_slice(frame);
            }
            State::Recording => {
                let Some(r) = self.retry.as_deref_mut() else {
                    return;
                };
                if r.frames.len() + frame.len() > MAX_RECORDED {
                    self.retry_off();
                    return;
                }
                match tag {
                    frontend::BIND if !r.bound && rebindable(frame, r.typed) => {
                        r.bound = true;
                        r.frames.extend_from_slice(frame);
                    }
                    // Only a description of what the request runs, before it runs: the
                    // statement itself, or the portal its Bind made.
                    frontend::DESCRIBE if describes(frame, r, named) => {
                        r.describes = true;
                        r.frames.extend_from_slice(frame);
                    }
                    frontend::EXECUTE | frontend::FLUSH if r.describes && r.bound => {
                        r.frames.extend_from_slice(frame)
                    }
                    frontend::SYNC if r.describes => {
                        r.frames.extend_from_slice(frame);
                        r.state = State::Recorded;
                    }
                    _ => self.retry_off(),
                }
            }
            State::Recorded | State::Failed | State::Done => {}
        }
    }

    /// An ErrorResponse `frame` arrived: retires a statement the server calls stale, and says
    /// whether the error is swallowed for a retry.
    pub(super) fn on_error(&mut self, frame: &[u8], registry: &StatementRegistry) -> Verdict {
        let id = match self.expect.front() {
            Some(Expect::Bind(Some(id)) | Expect::Describe(Some(id))) => Some(*id),
            _ => None,
        };
        let stale = id.is_some() && stale_plan(&frame[wire::FRAME_HEADER_LEN..]);
        let stmt = id.filter(|_| stale).and_then(|id| self.mapped(id));
        let Some(stmt) = stmt else {
            self.forwarded();
            return Verdict::Forward;
        };
        tracing::info!(
            session = self.session_id,
            statement = stmt.id,
            "the server called a shared statement stale: retired"
        );
        registry.retire_stale(&stmt, frame);
        let ours = self.retry.as_deref_mut().filter(|r| {
            let unsynced = r.state == State::Recording && r.describes;
            (r.state == State::Recorded || unsynced) && r.stmt == Some(stmt.id)
        });
        let Some(r) = ours else {
            self.forwarded();
            return Verdict::Forward;
        };
        if r.state == State::Recording {
            return Verdict::ResendNow;
        }
        r.state = State::Failed;
        r.error.clear();
        r.error.extend_from_slice(frame);
        Verdict::Swallow
    }

    /// Something of the current request reached the client: it can no longer be retried.
    pub(super) fn forwarded(&mut self) {
        if matches!(self.retry_state(), State::Recording | State::Recorded) {
            self.retry_off();
        }
    }

    /// At a ReadyForQuery: returns false when it ends a request that is now sent again.
    pub(super) fn on_ready(
        &mut self,
        server: &mut ServerStatements,
        registry: &StatementRegistry,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> bool {
        if self.retry_state() != State::Failed {
            self.retry_off();
            return true;
        }
        self.resend(server, registry, prefix, sout, cout);
        false
    }

    /// Sends the recorded request again, its statement replaced by a fresh one for this session.
    pub(super) fn resend(
        &mut self,
        server: &mut ServerStatements,
        registry: &StatementRegistry,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) {
        let Some(r) = self.retry.as_deref_mut() else {
            return;
        };
        r.state = State::Done;
        let frames = std::mem::take(&mut r.frames);
        if let Some(stale) = r.stmt.take().and_then(|id| self.mapped(id)) {
            // The session's name now stands for a new statement, prepared afresh; the stale one
            // stays as it is for the sessions that still hold it, whose server answers for it.
            let fresh = registry.intern(&stale.parse_rest, stale.settings);
            for stmt in self.statements.values_mut() {
                if stmt.id == stale.id {
                    *stmt = fresh.clone();
                }
            }
        }
        for item in wire::Frames::new(&frames, usize::MAX) {
            let Ok((at, f)) = item else { break };
            let frame = &frames[at..at + f.len];
            // Bind, Describe, Execute, Flush and Sync change no mapping: sending them again
            // does what the first time meant to.
            let _ = self.client_message(frame, server, registry, prefix, sout, cout);
        }
        if let Some(r) = self.retry.as_deref_mut() {
            r.frames = frames;
        }
    }
}
