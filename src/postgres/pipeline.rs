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

use super::pinning::{Deallocate, deallocate, discard_all, pin_reason};
use super::statements::{ServerStatements, Statement, StatementRegistry, server_name};
use super::wire::{self, Reader, WireError, status};
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
    Bind,
    Describe,
    Execute,
    /// `evicted`: the statement sluice closed to make room, prepared again if the server
    /// skipped this Close after an error.
    Close {
        visible: bool,
        evicted: Option<u64>,
    },
    /// Sync, simple Query or FunctionCall: answered with ReadyForQuery.
    Ready,
    /// A response sluice produces itself, in its place in the stream; for a ParseComplete, the
    /// client's statement name to forget if an earlier error means the Parse never happened.
    Synthetic(u8, Option<Box<[u8]>>),
    /// sluice's own simple query (parameter replay): everything up to its ReadyForQuery is swallowed.
    Internal,
}

/// Statement names no client can hold a mapping for: binding them fails as Postgres would.
const MISSING_UNNAMED: &[u8] = b"_sluice_unnamed_statement_of_another_session";
/// Every server-side name sluice makes starts so; a client naming one it does not hold a
/// mapping for is never let through to touch another session's statement.
const SERVER_NAME_PREFIX: &[u8] = b"_sluice_";

/// The name to send for a statement name the session has no mapping for.
fn unmapped(name: &[u8]) -> &[u8] {
    if name.starts_with(SERVER_NAME_PREFIX) {
        MISSING_UNNAMED
    } else {
        name
    }
}

#[derive(Debug)]
pub struct Pipeline {
    session_id: u64,
    expect: VecDeque<Expect>,
    statements: HashMap<Box<[u8]>, Arc<Statement>>,
    /// Client sent extended-protocol messages not yet followed by Sync.
    unsynced: bool,
    /// Transaction status of the last ReadyForQuery.
    pub status: u8,
    pub pinned: Option<PinReason>,
    internal_error: Option<String>,
    /// A DISCARD ALL went to the server: the connection lost the session's parameters too.
    reset_sent: bool,
}

impl Pipeline {
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            expect: VecDeque::new(),
            statements: HashMap::new(),
            unsynced: false,
            status: status::IDLE,
            pinned: None,
            internal_error: None,
            reset_sent: false,
        }
    }

    /// The server connection may go back to the pool: nothing in flight, idle, not pinned.
    pub fn releasable(&self) -> bool {
        self.expect.is_empty()
            && !self.unsynced
            && self.status == status::IDLE
            && self.pinned.is_none()
    }

    /// Nothing is in flight (a pinned or in-transaction session may still hold the connection).
    pub fn quiet(&self) -> bool {
        self.expect.is_empty() && !self.unsynced
    }

    /// Queues sluice's own simple query ahead of the client's messages.
    pub fn internal_query(&mut self, sql: &str, sout: &mut BytesMut) {
        wire::query(sout, sql);
        self.expect.push_back(Expect::Internal);
    }

    fn push(&mut self, e: Expect, cout: &mut BytesMut) {
        match e {
            // Nothing ahead of it: answer at once.
            Expect::Synthetic(tag, _) if self.expect.is_empty() => synth(tag, self.status, cout),
            e => self.expect.push_back(e),
        }
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
        match tag {
            b'Q' => {
                let sql = Reader::new(body, "Query").cstr()?;
                if discard_all(sql) && self.status == status::IDLE {
                    // Unpinned, nothing of the session lives on the server but remapped
                    // statements: forgetting them is the whole effect. Pinned, the server must
                    // drop the session's objects, and sluice's statements go with them.
                    self.statements.clear();
                    if self.pinned.is_none() {
                        self.push(Expect::Synthetic(b'X', None), cout);
                    } else {
                        server.clear();
                        self.reset_sent = true;
                        sout.extend_from_slice(frame);
                        self.push(Expect::Ready, cout);
                    }
                    return Ok(None);
                }
                match deallocate(sql) {
                    // Remapped statements are freed by forgetting them; the server keeps its
                    // copy for other sessions, so sluice answers in the server's place.
                    Some(Deallocate::All) if self.pinned.is_none() => {
                        self.statements.clear();
                        self.push(Expect::Synthetic(b'A', None), cout);
                    }
                    Some(Deallocate::Name(name)) if self.statements.remove(&name[..]).is_some() => {
                        self.push(Expect::Synthetic(b'D', None), cout);
                    }
                    Some(Deallocate::Name(name)) if name.starts_with(SERVER_NAME_PREFIX) => {
                        let sql = format!(
                            "DEALLOCATE \"{}\"",
                            String::from_utf8_lossy(MISSING_UNNAMED)
                        );
                        wire::query(sout, &sql);
                        self.push(Expect::Ready, cout);
                    }
                    other => {
                        if other == Some(Deallocate::All) {
                            // Pinned: the server frees SQL-level statements and ours with them.
                            self.statements.clear();
                            server.clear();
                        }
                        pin = pin_reason(sql);
                        sout.extend_from_slice(frame);
                        self.push(Expect::Ready, cout);
                    }
                }
            }
            b'F' => {
                sout.extend_from_slice(frame);
                self.push(Expect::Ready, cout);
            }
            b'S' => {
                sout.extend_from_slice(frame);
                self.unsynced = false;
                self.push(Expect::Ready, cout);
            }
            b'P' => {
                self.unsynced = true;
                let mut r = Reader::new(body, "Parse");
                let name = r.cstr()?;
                let rest = r.rest();
                let query = Reader::new(rest, "Parse").cstr()?;
                if name.is_empty() {
                    pin = pin_reason(query);
                    server.unnamed_owner = self.session_id;
                    sout.extend_from_slice(frame);
                    self.push(
                        Expect::Parse {
                            visible: true,
                            stmt: None,
                            client_name: None,
                        },
                        cout,
                    );
                } else if let Some(existing) = self.statements.get(name).cloned() {
                    // Redefining a live name: make the server raise 42P05 as it would have.
                    self.ensure_prepared(&existing, server, prefix, sout, cout);
                    wire::parse_renamed(sout, &existing.server_name, rest);
                    self.push(
                        Expect::Parse {
                            visible: true,
                            stmt: None,
                            client_name: None,
                        },
                        cout,
                    );
                } else {
                    pin = pin_reason(query);
                    let stmt = registry.intern(rest);
                    self.statements.insert(name.into(), stmt.clone());
                    if server.touch(stmt.id) {
                        self.push(Expect::Synthetic(b'1', Some(name.into())), cout);
                    } else {
                        self.prepare(&stmt, server, prefix, sout, cout, Some(name.into()));
                    }
                }
            }
            b'B' => {
                self.unsynced = true;
                let mut r = Reader::new(body, "Bind");
                let portal = r.cstr()?;
                let name = r.cstr()?;
                let head = &body[..portal.len() + 1];
                self.forward_named(tag, head, name, r.rest(), frame, server, prefix, sout, cout);
                self.push(Expect::Bind, cout);
            }
            b'D' => {
                self.unsynced = true;
                let mut r = Reader::new(body, "Describe");
                let kind = r.u8()?;
                let name = r.cstr()?;
                if kind == b'S' {
                    self.forward_named(tag, b"S", name, &[], frame, server, prefix, sout, cout);
                } else {
                    sout.extend_from_slice(frame);
                }
                self.push(Expect::Describe, cout);
            }
            b'C' => {
                self.unsynced = true;
                let mut r = Reader::new(body, "Close");
                let kind = r.u8()?;
                let name = r.cstr()?;
                if kind == b'S' && self.statements.remove(name).is_some() {
                    // The server keeps the statement for other sessions; the client sees it closed.
                    self.push(Expect::Synthetic(b'3', None), cout);
                } else if kind == b'S' {
                    wire::renamed(sout, tag, b"S", unmapped(name), &[]);
                    self.push(
                        Expect::Close {
                            visible: true,
                            evicted: None,
                        },
                        cout,
                    );
                } else {
                    sout.extend_from_slice(frame);
                    self.push(
                        Expect::Close {
                            visible: true,
                            evicted: None,
                        },
                        cout,
                    );
                }
            }
            b'E' => {
                self.unsynced = true;
                sout.extend_from_slice(frame);
                self.push(Expect::Execute, cout);
            }
            b'H' => sout.extend_from_slice(frame),
            _ => sout.extend_from_slice(frame),
        }
        if pin == Some(PinReason::SessionReset) {
            // DISCARD/DEALLOCATE in a form sluice does not answer itself: the server drops
            // sluice's statements and the session's parameters with the client's.
            server.clear();
            self.reset_sent = true;
        }
        if let Some(reason) = pin
            && self.pinned.is_none()
        {
            self.pinned = Some(reason);
            return Ok(Some(reason));
        }
        Ok(None)
    }

    /// Bind or Describe of a statement: renamed to its server name (prepared first if this
    /// connection lacks it), or forwarded untouched when the session has no such mapping.
    #[allow(clippy::too_many_arguments)]
    fn forward_named(
        &mut self,
        tag: u8,
        head: &[u8],
        name: &[u8],
        rest: &[u8],
        frame: &[u8],
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) {
        if name.is_empty() {
            if server.unnamed_owner == self.session_id {
                sout.extend_from_slice(frame);
            } else {
                // The unnamed statement here is another session's (or none): never bind it.
                wire::renamed(sout, tag, head, MISSING_UNNAMED, rest);
            }
        } else if let Some(stmt) = self.statements.get(name).cloned() {
            self.ensure_prepared(&stmt, server, prefix, sout, cout);
            wire::renamed(sout, tag, head, &stmt.server_name, rest);
        } else if name.starts_with(SERVER_NAME_PREFIX) {
            wire::renamed(sout, tag, head, unmapped(name), rest);
        } else {
            sout.extend_from_slice(frame);
        }
    }

    fn ensure_prepared(
        &mut self,
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) {
        if !server.touch(stmt.id) {
            self.prepare(stmt, server, prefix, sout, cout, None);
        }
    }

    /// Sends a Parse under the server name; visible to the client only if the client asked.
    fn prepare(
        &mut self,
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
        client_name: Option<Box<[u8]>>,
    ) {
        if let Some(old) = server.insert(stmt.id) {
            wire::close_statement(sout, &server_name(prefix, old));
            self.push(
                Expect::Close {
                    visible: false,
                    evicted: Some(old),
                },
                cout,
            );
        }
        wire::parse_renamed(sout, &stmt.server_name, &stmt.parse_rest);
        let visible = client_name.is_some();
        self.push(
            Expect::Parse {
                visible,
                stmt: Some(stmt.clone()),
                client_name,
            },
            cout,
        );
    }

    /// True once after a DISCARD ALL went to the server (the relay replays parameters).
    pub fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset_sent)
    }

    /// sluice's own query is the oldest thing in flight.
    pub fn internal(&self) -> bool {
        matches!(self.expect.front(), Some(Expect::Internal))
    }

    /// Takes the error of sluice's own query, once its ReadyForQuery has come.
    pub fn take_internal_error(&mut self) -> Option<String> {
        if matches!(self.expect.front(), Some(Expect::Internal)) {
            return None;
        }
        self.internal_error.take()
    }

    /// Statements the session has prepared (protocol level).
    pub fn statements_len(&self) -> usize {
        self.statements.len()
    }
}

mod local;
mod responses;

use responses::synth;

#[cfg(test)]
mod tests;
