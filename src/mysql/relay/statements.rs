//! Binary-protocol statements: the client's ids for them, prepared again on whichever server
//! connection runs them (in the schema they were prepared in), COM_STMT_EXECUTE rewritten with
//! the server's id and the parameter types, and their text scanned for pins like a COM_QUERY.

use std::sync::Arc;

use crate::tls::Socket;

use super::commands::statement_id;
use super::{End, Session};
use crate::mysql::errors;
use crate::mysql::pinning::{self, Effects};
use crate::mysql::server::ServerConn;
use crate::mysql::state::StatementKey;
use crate::mysql::wire::{self, PacketWriter, ReplyKind, command};
use crate::session::{PinReason, spare};

/// Server-side statements kept per connection before they are all closed.
const MAX_STATEMENTS_PER_CONN: usize = 256;
/// Statements one session may hold (the server's own default `max_prepared_stmt_count`).
const MAX_STATEMENTS_PER_SESSION: usize = 16_382;
/// MariaDB's "the statement prepared last" in COM_STMT_EXECUTE right after a prepare.
const LAST_PREPARED: u32 = u32::MAX;

impl Session {
    pub(super) async fn prepare(&mut self, client: &mut Socket, packet: &[u8]) -> Result<(), End> {
        // A failed prepare must not leave "the last prepared" pointing at an older statement.
        self.last_prepared = 0;
        if self.statements.len() >= MAX_STATEMENTS_PER_SESSION {
            self.error(
                (1461, "42000"),
                "Can't create more than max_prepared_stmt_count statements",
            );
            return Ok(());
        }
        if !self.lease_for_command(client).await? {
            return Ok(());
        }
        let sql = &packet[wire::HEADER_LEN + 1..];
        let id = self.next_statement;
        let Some(reply) = self
            .forward(client, packet, ReplyKind::Prepare, Some(id))
            .await?
        else {
            return Ok(());
        };
        let Some(ok) = reply.prepared else {
            return Ok(());
        };
        self.next_statement = self.next_statement.wrapping_add(1).max(1);
        self.last_prepared = id;
        let key = Arc::new(StatementKey::new(self.schema.clone(), sql.into()));
        let stateful = pinning::effects_in(sql, self.backslash_escapes()) != Effects::default();
        self.statements.insert(
            id,
            Prepared {
                key: key.clone(),
                params: ok.params,
                stateful,
                types: None,
            },
        );
        if let Some(conn) = self.lease.as_mut() {
            remember(conn, key, ok.statement_id);
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE, SEND_LONG_DATA, FETCH and RESET: the client's id becomes the server id
    /// of the same statement on this connection (prepared here first if need be). Nothing may
    /// answer SEND_LONG_DATA: its failures surface at the execute, as the server's would.
    pub(super) async fn statement_command(
        &mut self,
        client: &mut Socket,
        packet: &[u8],
    ) -> Result<(), End> {
        let payload = &packet[wire::HEADER_LEN..];
        let cmd = payload[0];
        let long_data = cmd == command::STMT_SEND_LONG_DATA;
        let mut id = statement_id(payload).unwrap_or(0);
        if id == LAST_PREPARED {
            id = self.last_prepared;
        }
        let Some(stmt) = self.statements.get(&id) else {
            if !long_data {
                let message = format!("Unknown prepared statement handler ({id}) given to sluice");
                self.error(errors::UNKNOWN_STMT, &message);
            }
            return Ok(());
        };
        let (key, stateful) = (stmt.key.clone(), stmt.stateful);
        if cmd != command::STMT_EXECUTE
            && cmd != command::STMT_SEND_LONG_DATA
            && self.long_data_lost == Some(id)
        {
            self.long_data_lost = None;
        }
        if cmd == command::STMT_RESET && self.lease.is_none() {
            // Nothing of this statement lives on any connection for this session.
            self.ok();
            return Ok(());
        }
        if cmd == command::STMT_EXECUTE && self.long_data_lost.take() == Some(id) {
            self.error(
                errors::UNKNOWN,
                "sluice: the long data sent for this statement was lost",
            );
            return Ok(());
        }
        let leased = if long_data {
            // No reply to send: a held connection that broke loses the data, said at EXECUTE.
            self.check_held()?.is_none() && self.ensure_lease(client).await?.is_ok()
        } else {
            self.lease_for_command(client).await?
        };
        if !leased {
            if long_data {
                self.long_data_lost = Some(id);
            }
            return Ok(());
        }
        // Known on this connection (the steady state), the id is there at once: the boxed
        // prepare's future was allocated for every execute.
        let server_id = if let Some(sid) = self.statement_here(&key) {
            sid
        } else {
            match Box::pin(self.server_statement(&key)).await {
                Ok(sid) => sid,
                Err(refused) => return self.statement_refused(id, long_data, refused),
            }
        };
        let fx = if stateful && cmd == command::STMT_EXECUTE {
            pinning::effects_in(&key.sql, self.backslash_escapes())
        } else {
            Effects::default()
        };
        if !self.before_statement(&fx).await {
            return Ok(());
        }
        // Every execute is rewritten (the server's statement id): a spare buffer after a shrink.
        spare::ensure_vec(&mut self.scratch);
        let mut bytes = std::mem::take(&mut self.scratch);
        let result = self
            .statement_packet(client, packet, id, server_id, &mut bytes, &fx)
            .await;
        bytes.clear();
        self.scratch = bytes;
        result
    }

    /// The server's id for `key` on the held connection, if it was prepared there.
    fn statement_here(&self, key: &StatementKey) -> Option<u32> {
        self.lease.as_ref()?.state.statements.get(key).copied()
    }

    /// Statement `id` could not be prepared on the held connection: the command's error (none
    /// for SEND_LONG_DATA, whose execute fails instead).
    fn statement_refused(
        &mut self,
        id: u32,
        long_data: bool,
        (mut code, mut message): super::sync::Refused,
    ) -> Result<(), End> {
        if self.lease.is_none() {
            // The connection broke under sluice's own command and was closed: the session's pins
            // and transaction went with it, as when a server is lost.
            if self.pins.is_some() {
                return Err(End::Fatal(
                    errors::CONNECTION_KILLED,
                    "sluice: the server connection broke; the session's state went with it".into(),
                ));
            }
            if self.status & wire::status::IN_TRANS != 0 {
                self.status &= !wire::status::IN_TRANS;
                self.hold = super::Hold::None;
                code = errors::CUT_ROLLED_BACK;
                message = "sluice: the server connection broke: the transaction was rolled back \
                           and can be retried"
                    .into();
            }
        }
        if long_data {
            self.long_data_lost = Some(id);
        } else {
            self.error(code, &message);
        }
        Ok(())
    }

    /// The server's id for `key` on the held connection, preparing it there (in the schema it
    /// was first prepared in): for a statement `statement_here` did not find.
    async fn server_statement(
        &mut self,
        key: &Arc<StatementKey>,
    ) -> Result<u32, super::sync::Refused> {
        let addr = self.pool.addr.clone();
        let session_schema = self.schema.clone();
        let Some(conn) = self.lease.as_mut() else {
            return Err((errors::UNKNOWN, "sluice: no server connection".into()));
        };
        let switch = key.schema.is_some() && key.schema != conn.state.schema;
        let mut prepared = Ok(None);
        if let (true, Some(db)) = (switch, &key.schema) {
            prepared = conn.use_schema(&addr, db).await.map(|()| None);
        }
        if prepared.is_ok() {
            prepared = conn.prepare(&addr, &key.sql).await.map(Some);
        }
        if let (true, Some(db), false) = (switch, &session_schema, broken(&prepared))
            && let Err(e) = conn.use_schema(&addr, db).await
        {
            prepared = Err(e);
        }
        if broken(&prepared) {
            // A reply out of protocol (or none) to sluice's own command: what the server sends
            // next cannot be matched to a request, so the connection must never serve anyone
            // again. Found by the mysql_relay fuzz target: pooled, it gave the next session
            // the rest of this one's replies.
            self.drop_lease();
        }
        let ok = match prepared {
            Ok(Some(ok)) => ok,
            Ok(None) => return Err((errors::UNKNOWN, "sluice: no statement prepared".into())),
            Err(e) => return Err(errors::refusal(&e)),
        };
        let Some(conn) = self.lease.as_mut() else {
            return Err((errors::UNKNOWN, "sluice: no server connection".into()));
        };
        remember(conn, Arc::clone(key), ok.statement_id);
        Ok(ok.statement_id)
    }

    /// Sends the rewritten statement command in `bytes` and relays its reply, if it has one.
    async fn statement_packet(
        &mut self,
        client: &mut Socket,
        packet: &[u8],
        id: u32,
        server_id: u32,
        bytes: &mut Vec<u8>,
        fx: &Effects<'_>,
    ) -> Result<(), End> {
        let payload = &packet[wire::HEADER_LEN..];
        let cmd = payload[0];
        if cmd == command::STMT_EXECUTE {
            let fits = self
                .statements
                .get_mut(&id)
                .is_some_and(|stmt| execute_packet(stmt, payload, server_id, bytes));
            if !fits {
                let p = wire::next_packet(packet);
                let mut discard = Vec::new();
                if let Some(p) = p {
                    self.continuation(client, p, &mut discard).await?;
                }
                self.error(
                    errors::PACKET_TOO_LARGE,
                    "sluice: an execute of 16 MiB or more must send its parameter types",
                );
                return Ok(());
            }
        } else {
            bytes.extend_from_slice(packet);
            bytes[wire::HEADER_LEN + 1..wire::HEADER_LEN + 5]
                .copy_from_slice(&server_id.to_le_bytes());
        }
        if let Some(p) = wire::next_packet(packet) {
            self.continuation(client, p, bytes).await?;
        }
        if cmd == command::STMT_SEND_LONG_DATA {
            // No reply; the data waits in the server statement for the execute that uses it.
            let written = match self.lease.as_mut() {
                Some(conn) => conn.write_command(bytes).await.is_ok(),
                None => false,
            };
            if written {
                self.hold = super::Hold::Hard;
            } else {
                self.drop_lease();
                self.long_data_lost = Some(id);
            }
            return Ok(());
        }
        let kind = match cmd {
            command::STMT_EXECUTE => ReplyKind::Query,
            command::STMT_FETCH => ReplyKind::Fetch,
            _ => ReplyKind::Single,
        };
        if let Some(reply) = self.forward(client, bytes, kind, None).await? {
            if cmd == command::STMT_EXECUTE || (cmd == command::STMT_RESET && reply.error.is_none())
            {
                // An execute closes the statement's previous cursor; a reset closes it too.
                if let Some(pins) = self.pins.as_mut() {
                    pins.close_cursor(id);
                }
            }
            let cursor = reply
                .end
                .is_some_and(|e| e.status & wire::status::CURSOR_EXISTS != 0);
            if cmd == command::STMT_EXECUTE && cursor {
                self.pin(PinReason::PreparedCursor);
                if let Some(pins) = self.pins.as_mut() {
                    pins.open_cursor(id);
                }
            }
            self.after(reply, fx).await;
        }
        Ok(())
    }

    /// COM_STMT_CLOSE, answered by no one: the session forgets the statement, and a cursor it
    /// left open is closed on the server (with the server statement, which has no reply either)
    /// so the connection can go back.
    pub(super) fn close_statement(&mut self, id: u32) {
        let Some(stmt) = self.statements.remove(&id) else {
            return;
        };
        if self.long_data_lost == Some(id) {
            self.long_data_lost = None;
        }
        let had_cursor = self.pins.as_mut().is_some_and(|p| p.close_cursor(id));
        if !had_cursor {
            return;
        }
        if let Some(conn) = self.lease.as_mut()
            && let Some(server_id) = conn.state.statements.remove(&stmt.key)
        {
            ServerConn::close_statement(&mut conn.pending, server_id);
        }
        if self.pins.as_ref().is_some_and(|p| p.is_empty()) {
            tracing::debug!(session = self.id, "session unpinned");
            self.pins = None;
        }
        self.maybe_release();
    }
}

/// Records a server statement on `conn`, closing one it replaces; past the cap, all others go.
/// The closes (which have no reply) go out ahead of the connection's next command.
fn remember(conn: &mut ServerConn, key: Arc<StatementKey>, server_id: u32) {
    if let Some(old) = conn.state.statements.insert(key.clone(), server_id)
        && old != server_id
    {
        ServerConn::close_statement(&mut conn.pending, old);
    }
    if conn.state.statements.len() > MAX_STATEMENTS_PER_CONN {
        for (_, id) in conn.state.statements.drain() {
            if id != server_id {
                ServerConn::close_statement(&mut conn.pending, id);
            }
        }
        conn.state.statements.insert(key, server_id);
    }
}

/// A protocol-level statement as its client prepared it.
#[derive(Debug)]
pub(in crate::mysql) struct Prepared {
    pub key: Arc<StatementKey>,
    pub params: u16,
    /// Its text pins or changes tracked state (`SET time_zone = ?`, `SELECT GET_LOCK(?, 1)`):
    /// scanned again at every execute.
    pub stateful: bool,
    /// Parameter types of the last execute that sent them (COM_STMT_EXECUTE may omit them once
    /// sent, but the server connection that saw them may not be the one that runs it now).
    pub types: Option<Box<[u8]>>,
}

/// Appends COM_STMT_EXECUTE (`payload` from the client) with the server's statement id and the
/// parameter types always included. `false` when it cannot be done within one packet: the
/// client left the types out of an execute of 16 MiB or more (sluice would have to re-split it).
pub(super) fn execute_packet(
    stmt: &mut Prepared,
    payload: &[u8],
    server_id: u32,
    out: &mut Vec<u8>,
) -> bool {
    let params = usize::from(stmt.params);
    // command, id, flags, iteration count, then the NULL bitmap and the new-params flag.
    let flag_at = 10 + params.div_ceil(8);
    let bound = params == 0 || payload.get(flag_at) != Some(&0);
    if bound {
        if params > 0
            && let Some(types) = payload.get(flag_at + 1..flag_at + 1 + 2 * params)
            && stmt.types.as_deref() != Some(types)
        {
            stmt.types = Some(types.into());
        }
        // Only the id changes: the header (even a full-size one that continues) stays valid.
        let start = out.len();
        let len = payload.len().min(wire::MAX_PAYLOAD);
        out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        out.push(0);
        out.extend_from_slice(payload);
        out[start + wire::HEADER_LEN + 1..start + wire::HEADER_LEN + 5]
            .copy_from_slice(&server_id.to_le_bytes());
        return true;
    }
    let Some(types) = &stmt.types else {
        // Never sent: the server will say so, as it would directly.
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(0);
        out.extend_from_slice(payload);
        let at = out.len() - payload.len();
        out[at + 1..at + 5].copy_from_slice(&server_id.to_le_bytes());
        return payload.len() < wire::MAX_PAYLOAD;
    };
    if payload.len() + types.len() >= wire::MAX_PAYLOAD {
        return false;
    }
    let w = PacketWriter::begin(out, 0);
    out.push(command::STMT_EXECUTE);
    out.extend_from_slice(&server_id.to_le_bytes());
    out.extend_from_slice(&payload[5..flag_at]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[flag_at + 1..]);
    w.finish(out);
    true
}

/// Whether sluice's own command left the connection out of step with its replies: anything but
/// success or the server's own ERR (which ends a reply cleanly).
fn broken<T>(result: &Result<T, crate::errors::ConnectError>) -> bool {
    matches!(result, Err(e) if !matches!(e, crate::errors::ConnectError::Refused { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(sql: &[u8], params: u16) -> Prepared {
        Prepared {
            key: Arc::new(StatementKey::new(None, sql.into())),
            params,
            stateful: false,
            types: None,
        }
    }

    fn execute(id: u32, bound: bool, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![command::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // NULL bitmap of two parameters
        p.push(u8::from(bound));
        if bound {
            p.extend_from_slice(types);
        }
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn types_sent_once_go_with_every_execute() {
        let mut stmt = prepared(b"SELECT ?, ?", 2);
        let types = [3, 0, 253, 0];
        let values = b"\x01\x00\x00\x00\x02hi";
        let mut out = Vec::new();
        assert!(execute_packet(
            &mut stmt,
            &execute(7, true, &types, values),
            41,
            &mut out
        ));
        assert_eq!(&out[4..], &execute(41, true, &types, values)[..]);
        assert_eq!(stmt.types.as_deref(), Some(&types[..]));

        // The client leaves the types out now; the server connection may never have seen them.
        out.clear();
        assert!(execute_packet(
            &mut stmt,
            &execute(7, false, &[], values),
            99,
            &mut out
        ));
        let p = wire::next_packet(&out).map(|p| p.len);
        assert_eq!(p, Some(out.len()), "the header counts the inserted types");
        assert_eq!(&out[4..], &execute(99, true, &types, values)[..]);
    }

    #[test]
    fn an_execute_that_would_outgrow_its_packet_is_refused() {
        let mut stmt = prepared(b"INSERT INTO t VALUES (?, ?)", 2);
        stmt.types = Some(vec![3, 0, 253, 0].into());
        let big = vec![b'x'; wire::MAX_PAYLOAD - 14];
        let payload = execute(7, false, &[], &big);
        let mut out = Vec::new();
        assert!(!execute_packet(&mut stmt, &payload, 1, &mut out));
        let small = execute(7, false, &[], b"\x01\x00\x00\x00\x00");
        out.clear();
        assert!(execute_packet(&mut stmt, &small, 1, &mut out));
    }

    #[test]
    fn statements_without_parameters_only_change_the_id() {
        let mut stmt = prepared(b"SELECT 1", 0);
        let payload = [command::STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        let mut out = Vec::new();
        assert!(execute_packet(&mut stmt, &payload, 3, &mut out));
        assert_eq!(
            &out[4..],
            &[command::STMT_EXECUTE, 3, 0, 0, 0, 0, 1, 0, 0, 0]
        );
    }
}
