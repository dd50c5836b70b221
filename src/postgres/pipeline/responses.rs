//! The server side of the pipeline: matching each response to the request it answers,
//! swallowing the answers to sluice's own messages, undoing what an error made the server skip,
//! and writing the responses sluice gives in the server's place.

use bytes::BytesMut;

use super::retry::Verdict;
use super::{Discard, Expect, Pipeline, Purpose, Reply};
use crate::postgres::statements::{ServerStatements, StatementRegistry};
use crate::postgres::wire::{self, backend, status};

impl Pipeline {
    /// Handles one complete server message, appending it to `cout` unless it answers sluice's
    /// own message, followed by any synthetic responses now due; returns whether it was forwarded.
    /// Writes to `sout` only to send a request again whose statement the server called stale.
    pub fn server_message(
        &mut self,
        frame: &[u8],
        server: &mut ServerStatements,
        registry: &StatementRegistry,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> bool {
        let tag = frame[0];
        tracing::trace!(session = self.session_id, tag = %(tag as char), head = ?self.expect.front(), "server message");
        if let Some(Expect::Internal(purpose)) = self.expect.front() {
            let purpose = *purpose;
            self.internal_message(purpose, tag, &frame[wire::FRAME_HEADER_LEN..]);
            self.emit_synthetic(cout);
            return false;
        }
        let forward = match tag {
            backend::READY_FOR_QUERY if matches!(self.expect.front(), Some(Expect::Resync)) => {
                self.expect.pop_front();
                false
            }
            backend::READY_FOR_QUERY => {
                while let Some(e) = self.expect.pop_front() {
                    match e {
                        Expect::Ready(_) => break,
                        Expect::AtReady(ops) => self.unlistened(ops),
                        // Skipped by the server after an error.
                        other => self.undo(other, server),
                    }
                }
                self.status = frame
                    .get(wire::FRAME_HEADER_LEN)
                    .copied()
                    .unwrap_or(status::IDLE);
                self.listen_ready(self.status == status::IDLE);
                if self.ddl_open && self.status == status::IDLE {
                    // Committed (or rolled back) now: what others planned meanwhile is retired.
                    self.ddl_open = false;
                    registry.schema().changed();
                }
                self.on_ready(server, registry, prefix, sout, cout)
            }
            backend::ERROR_RESPONSE => {
                if let Some(Expect::Doomed(stmt)) = self.expect.front()
                    && let Some(error) = stmt.stale_error()
                {
                    cout.extend_from_slice(error);
                    self.listen_failed();
                    self.forwarded();
                    self.fail_until_sync(server);
                    self.emit_synthetic(cout);
                    return true;
                }
                let verdict = self.on_error(frame, registry);
                if verdict == Verdict::Forward {
                    // (A swallowed error's request runs again and has its own outcome.)
                    self.listen_failed();
                }
                self.fail_until_sync(server);
                if verdict == Verdict::ResendNow {
                    // Mid-pipeline, no Sync yet (psycopg's pipeline mode flushes and waits): end
                    // the server's skip with a Sync of sluice's own and send the request again
                    // behind it, ahead of whatever the client sends next.
                    wire::sync(sout);
                    self.expect.push_back(Expect::Resync);
                    self.resend(server, registry, prefix, sout, cout);
                }
                verdict == Verdict::Forward
            }
            backend::PARSE_COMPLETE => match self.expect.pop_front() {
                Some(Expect::Parse { visible, stmt, .. }) => {
                    if let Some(stmt) = stmt {
                        stmt.confirm();
                    }
                    visible
                }
                other => self.unexpected(other),
            },
            backend::BIND_COMPLETE => self.pop_if(|e| matches!(e, Expect::Bind(_))),
            backend::ROW_DESCRIPTION | backend::NO_DATA => {
                self.pop_if(|e| matches!(e, Expect::Describe(_)))
            }
            backend::COMMAND_COMPLETE => {
                let mut listed = false;
                if let Some(Expect::Statement(_)) = self.expect.front()
                    && let Some(Expect::Statement(op)) = self.expect.pop_front()
                {
                    listed = true;
                    if self.statement_completed(*op) {
                        // The server ran the no-op UNLISTEN sent in its place.
                        self.pop_if(|e| matches!(e, Expect::Execute));
                        self.forwarded();
                        wire::command_complete(cout, b"LISTEN");
                        self.emit_synthetic(cout);
                        return true;
                    }
                }
                let body = &frame[wire::FRAME_HEADER_LEN..];
                self.command_complete(body, listed, server, registry);
                self.pop_if(|e| matches!(e, Expect::Execute))
            }
            backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED => {
                self.pop_if(|e| matches!(e, Expect::Execute))
            }
            backend::CLOSE_COMPLETE => match self.expect.pop_front() {
                Some(Expect::Close { visible, .. }) => visible,
                other => self.unexpected(other),
            },
            _ => true,
        };
        if forward {
            if tag != backend::READY_FOR_QUERY && tag != backend::ERROR_RESPONSE {
                self.forwarded();
            }
            cout.extend_from_slice(frame);
        }
        self.emit_synthetic(cout);
        forward
    }

    /// The length of the run of whole DataRow messages that starts `buf`, at most `limit`
    /// bytes, taken as forwarded at once: a row answers no request of its own and changes nothing
    /// `server_message` keeps, unless it answers sluice's own query. Fed one by one, each row
    /// paid the whole dispatch and a copy of its own.
    pub fn data_rows(&mut self, buf: &[u8], limit: usize) -> usize {
        if self.internal() {
            return 0;
        }
        let mut at = 0;
        while let Some(&[backend::DATA_ROW, a, b, c, d]) = buf.get(at..at + wire::FRAME_HEADER_LEN)
        {
            let declared = u32::from_be_bytes([a, b, c, d]) as usize;
            let end = at + 1 + declared;
            if declared < 4 || end > buf.len() || end > limit {
                break;
            }
            at = end;
        }
        if at > 0 {
            self.forwarded();
        }
        at
    }

    /// The answer to sluice's own query: kept where its purpose needs it, never forwarded.
    fn internal_message(&mut self, purpose: Purpose, tag: u8, body: &[u8]) {
        match tag {
            backend::READY_FOR_QUERY => {
                self.expect.pop_front();
            }
            backend::DATA_ROW => {
                let Ok(cols) = wire::parse_data_row(body) else {
                    return;
                };
                let text = |i: usize| {
                    cols.get(i)
                        .copied()
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                match purpose {
                    Purpose::ReadBack => {
                        if let Some(name) = text(0) {
                            self.tracked().read_back.push((name, text(1)));
                        }
                    }
                    Purpose::PinCheck => self.pins.check = Some(text(0).as_deref() == Some("0")),
                    Purpose::Replay => {}
                }
            }
            backend::ERROR_RESPONSE => {
                let fields = wire::parse_error_fields(body).unwrap_or_default();
                let error = format!("{} ({})", fields.message, fields.code);
                match purpose {
                    Purpose::Replay => self.internal_error = Some(error.into()),
                    Purpose::ReadBack => {
                        tracing::warn!(session = self.session_id, %error, "reading session parameters back failed");
                        self.tracked().read_back_failed = true;
                    }
                    Purpose::PinCheck => {
                        tracing::warn!(session = self.session_id, %error, "pin check failed");
                        self.pins.check = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// Statements whose effect on sluice's bookkeeping shows only in their outcome.
    fn command_complete(
        &mut self,
        body: &[u8],
        listed: bool,
        server: &mut ServerStatements,
        registry: &StatementRegistry,
    ) {
        let tag = body.strip_suffix(b"\0").unwrap_or(body);
        if changes_schema(tag) {
            // Any shared statement may now plan differently than a fresh one would.
            registry.schema().changed();
            // The status of this point is not known before the ReadyForQuery (a BEGIN may be in
            // the same Query): the epoch moves again there if it is not in a transaction.
            self.ddl_open = true;
            return;
        }
        match tag {
            b"DISCARD ALL" => {
                self.forget_statements();
                self.listen_discarded();
                server.clear();
                self.discarded = Some(Discard::Server);
            }
            b"DEALLOCATE ALL" => {
                self.forget_statements();
                server.clear();
            }
            // A client's DEALLOCATE of a name sluice does not map may have freed one of
            // sluice's statements: this connection's bookkeeping can no longer be trusted.
            b"DEALLOCATE" => self.pins.retire = true,
            // A ROLLBACK TO savepoint that sluice tracked (`listed`) already took effect.
            b"COMMIT" | b"ROLLBACK" | b"PREPARE TRANSACTION" if !listed => {
                self.transaction_tag(tag);
            }
            _ => {}
        }
    }

    fn pop_if(&mut self, head: impl Fn(&Expect) -> bool) -> bool {
        if self.expect.front().is_some_and(head) {
            self.expect.pop_front();
        }
        true
    }

    /// Not forwarded: the relay ends this server connection and the client gets the
    /// lost-server error, never a reply that lines up with the wrong request.
    fn unexpected(&mut self, popped: Option<Expect>) -> bool {
        tracing::warn!(?popped, "server response out of order");
        if let Some(e) = popped {
            self.expect.push_front(e);
        }
        self.out_of_order = true;
        false
    }

    /// An error ends the current message and the server skips the rest up to Sync.
    fn fail_until_sync(&mut self, server: &mut ServerStatements) {
        if matches!(self.expect.front(), Some(Expect::Ready(_)) | None) {
            return; // inside a simple query: its ReadyForQuery still comes
        }
        while let Some(e) = self.expect.front() {
            if matches!(e, Expect::Ready(_) | Expect::Internal(_) | Expect::Resync) {
                break;
            }
            if let Some(e) = self.expect.pop_front() {
                self.undo(e, server);
            }
        }
    }

    /// Forgets what a message that never took effect would have created.
    fn undo(&mut self, e: Expect, server: &mut ServerStatements) {
        match e {
            Expect::Parse {
                stmt: Some(stmt),
                client_name,
                ..
            } => {
                server.remove(stmt.id);
                if let Some(name) = client_name {
                    self.statements.remove(&name);
                }
            }
            Expect::Synthetic(Reply::ParseComplete, Some(name)) => {
                self.statements.remove(&name);
            }
            Expect::Close {
                evicted: Some(id), ..
            } => server.restore(id),
            _ => {}
        }
    }

    fn emit_synthetic(&mut self, cout: &mut BytesMut) {
        while let Some(Expect::Synthetic(reply, _)) = self.expect.front() {
            synth(*reply, self.status, cout);
            self.expect.pop_front();
        }
    }
}

/// The CommandComplete tag of DDL, which may change the result type of a prepared statement
/// or drop a type one names. Checked for every command: the first byte rules out the DML tags
/// but DELETE and INSERT, and those fail the word comparison at once.
fn changes_schema(tag: &[u8]) -> bool {
    let word = |w: &[u8]| tag.len() > w.len() && tag.starts_with(w) && tag[w.len()] == b' ';
    match tag.first() {
        Some(b'C') => word(b"CREATE") || tag == b"COMMENT",
        Some(b'A') => word(b"ALTER"),
        Some(b'D') => word(b"DROP"),
        Some(b'G') => tag == b"GRANT",
        Some(b'R') => tag == b"REVOKE",
        Some(b'I') => tag == b"IMPORT FOREIGN SCHEMA",
        Some(b'S') => tag == b"SECURITY LABEL",
        _ => false,
    }
}

/// Writes a response sluice gives in the server's place; `status` is the transaction status
/// as of this point in the stream.
pub(super) fn synth(reply: Reply, status: u8, cout: &mut BytesMut) {
    let tag: &[u8] = match reply {
        Reply::ParseComplete => return wire::parse_complete(cout),
        Reply::CloseComplete => return wire::close_complete(cout),
        Reply::Deallocated => b"DEALLOCATE",
        Reply::DeallocatedAll => b"DEALLOCATE ALL",
        Reply::DiscardedAll => b"DISCARD ALL",
    };
    wire::command_complete(cout, tag);
    wire::ready_for_query(cout, status);
}
