//! The server side of the pipeline: matching each response to the request it answers,
//! swallowing the answers to sluice's own messages, undoing what an error made the server skip,
//! and writing the responses sluice gives in the server's place.

use bytes::BytesMut;

use super::{Expect, Pipeline};
use crate::postgres::statements::ServerStatements;
use crate::postgres::wire::{self, status};

impl Pipeline {
    /// Handles one complete server message, appending it to `cout` unless it answers sluice's
    /// own message, followed by any synthetic responses now due; returns whether it was forwarded.
    pub fn server_message(
        &mut self,
        frame: &[u8],
        server: &mut ServerStatements,
        cout: &mut BytesMut,
    ) -> bool {
        let tag = frame[0];
        tracing::trace!(session = self.session_id, tag = %(tag as char), head = ?self.expect.front(), "server message");
        if matches!(self.expect.front(), Some(Expect::Internal)) {
            match tag {
                b'Z' => {
                    self.expect.pop_front();
                }
                b'E' => {
                    let body = &frame[wire::FRAME_HEADER_LEN..];
                    let fields = wire::parse_error_fields(body).unwrap_or_default();
                    self.internal_error = Some(format!("{} ({})", fields.message, fields.code));
                }
                _ => {}
            }
            self.emit_synthetic(cout);
            return false;
        }
        let forward = match tag {
            b'Z' => {
                while let Some(e) = self.expect.pop_front() {
                    match e {
                        Expect::Ready => break,
                        // Skipped by the server after an error.
                        other => self.undo(other, server),
                    }
                }
                self.status = frame
                    .get(wire::FRAME_HEADER_LEN)
                    .copied()
                    .unwrap_or(status::IDLE);
                true
            }
            b'E' => {
                self.fail_until_sync(server);
                true
            }
            b'1' => match self.expect.pop_front() {
                Some(Expect::Parse { visible, stmt, .. }) => {
                    if let Some(stmt) = stmt {
                        stmt.confirm();
                    }
                    visible
                }
                other => self.unexpected(other),
            },
            b'2' => self.pop_if(|e| matches!(e, Expect::Bind)),
            b'T' | b'n' => self.pop_if(|e| matches!(e, Expect::Describe)),
            b'C' | b'I' | b's' => self.pop_if(|e| matches!(e, Expect::Execute)),
            b'3' => match self.expect.pop_front() {
                Some(Expect::Close { visible, .. }) => visible,
                other => self.unexpected(other),
            },
            _ => true,
        };
        if forward {
            cout.extend_from_slice(frame);
        }
        self.emit_synthetic(cout);
        forward
    }

    fn pop_if(&mut self, head: impl Fn(&Expect) -> bool) -> bool {
        if self.expect.front().is_some_and(head) {
            self.expect.pop_front();
        }
        true
    }

    fn unexpected(&mut self, popped: Option<Expect>) -> bool {
        tracing::warn!(?popped, "server response out of order");
        if let Some(e) = popped {
            self.expect.push_front(e);
        }
        true
    }

    /// An error ends the current message and the server skips the rest up to Sync.
    fn fail_until_sync(&mut self, server: &mut ServerStatements) {
        if matches!(self.expect.front(), Some(Expect::Ready) | None) {
            return; // inside a simple query: its ReadyForQuery still comes
        }
        while let Some(e) = self.expect.front() {
            if matches!(e, Expect::Ready | Expect::Internal) {
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
            Expect::Synthetic(b'1', Some(name)) => {
                self.statements.remove(&name);
            }
            Expect::Close {
                evicted: Some(id), ..
            } => server.restore(id),
            _ => {}
        }
    }

    fn emit_synthetic(&mut self, cout: &mut BytesMut) {
        while let Some(Expect::Synthetic(tag, _)) = self.expect.front() {
            synth(*tag, self.status, cout);
            self.expect.pop_front();
        }
    }
}

/// Writes a response sluice gives in the server's place; `status` is the transaction status
/// as of this point in the stream.
pub(super) fn synth(tag: u8, status: u8, cout: &mut BytesMut) {
    match tag {
        b'1' => wire::parse_complete(cout),
        b'3' => wire::close_complete(cout),
        b'D' | b'A' | b'X' => {
            let tag: &[u8] = match tag {
                b'A' => b"DEALLOCATE ALL",
                b'X' => b"DISCARD ALL",
                _ => b"DEALLOCATE",
            };
            wire::command_complete(cout, tag);
            wire::ready_for_query(cout, status);
        }
        _ => {}
    }
}
