//! What sluice does with each command: answered locally (PING, QUIT, STMT_CLOSE, an idle
//! STMT_RESET or RESET_CONNECTION), remapped (the COM_STMT_* family), intercepted (KILL) or
//! forwarded, and what the reply changes for the session afterwards.

use std::sync::Arc;

use bytes::Buf;
use tokio::net::TcpStream;

use super::{End, Prepared, Session, statements, sync};
use crate::mysql::errors;
use crate::mysql::kill::KillLookup;
use crate::mysql::pinning::{self, Effects, Kill};
use crate::mysql::server::ServerConn;
use crate::mysql::wire::{self, Reply, ReplyKind, command, status};
use crate::session::PinReason;

/// Server-side statements kept per connection before they are all closed.
const MAX_STATEMENTS_PER_CONN: usize = 256;
const LAST_PREPARED: u32 = u32::MAX;

impl Session {
    /// Handles the command packet at `cin[..len]` (plus any continuation packets).
    pub(super) async fn command(&mut self, client: &mut TcpStream, len: usize) -> Result<(), End> {
        let packet = self.cin.split_to(len);
        let payload = &packet[wire::HEADER_LEN..];
        let held = std::mem::take(&mut self.hold);
        let result = match payload[0] {
            command::QUIT => return Err(End::ClientGone),
            command::PING => {
                self.ok();
                Ok(())
            }
            command::STMT_CLOSE => {
                if let Some(id) = statement_id(payload) {
                    self.statements.remove(&id);
                }
                self.hold = held;
                return Ok(());
            }
            command::QUERY => self.query(client, &packet).await,
            command::STMT_PREPARE => self.prepare(client, &packet).await,
            command::STMT_EXECUTE | command::STMT_SEND_LONG_DATA | command::STMT_FETCH | command::STMT_RESET => {
                self.statement_command(client, &packet, held).await
            }
            command::RESET_CONNECTION => Box::pin(self.reset_connection()).await,
            command::INIT_DB
            | command::FIELD_LIST
            | command::STATISTICS
            | command::SET_OPTION
            | 0x07 /* REFRESH */
            | 0x0d /* DEBUG */ => self.simple(client, &packet).await,
            command::PROCESS_KILL => {
                self.error(errors::NOT_SUPPORTED, "sluice: use KILL QUERY <id> to stop a statement");
                Ok(())
            }
            command::CHANGE_USER => Box::pin(self.change_user(client, payload)).await,
            other => {
                self.error(errors::UNKNOWN_COMMAND, &format!("Unknown command {other:#04x}"));
                Ok(())
            }
        };
        result?;
        self.flush(client).await?;
        self.maybe_release();
        Ok(())
    }

    /// Borrows (and syncs) a connection for a command; a refused replay becomes the command's ERR.
    async fn lease_for_command(&mut self) -> Result<bool, End> {
        match self.ensure_lease().await {
            Ok(()) => Ok(true),
            Err((code, message)) => {
                self.error(code, &message);
                Ok(false)
            }
        }
    }

    /// Reads the continuation packets of a command whose first packet was full-size.
    async fn continuation(
        &mut self,
        client: &mut TcpStream,
        mut last: wire::Packet,
        into: &mut Vec<u8>,
    ) -> Result<(), End> {
        use tokio::io::AsyncReadExt;
        while last.continues() {
            loop {
                if let Some(p) = wire::next_packet(&self.cin)
                    && self.cin.len() >= p.len
                {
                    into.extend_from_slice(&self.cin[..p.len]);
                    self.cin.advance(p.len);
                    last = p;
                    break;
                }
                self.cin.reserve(64 << 10);
                match client.read_buf(&mut self.cin).await {
                    Ok(0) | Err(_) => return Err(End::ClientGone),
                    Ok(_) => {}
                }
            }
        }
        Ok(())
    }

    async fn query(&mut self, client: &mut TcpStream, packet: &[u8]) -> Result<(), End> {
        let sql = &packet[wire::HEADER_LEN + 1..];
        let fx = pinning::effects(sql);
        if let Some(kill) = fx.kill {
            return Box::pin(self.kill_query(kill)).await;
        }
        if !self.lease_for_command().await? {
            return Ok(());
        }
        if let Some(reason) = fx.pin {
            self.pin(reason);
        }
        if fx.last_insert_id
            && let Err((code, message)) = Box::pin(self.sync_last_insert_id()).await
        {
            self.error(code, &message);
            return Ok(());
        }
        // The packet goes as it came, without a copy, unless it continues in more packets.
        let first = wire::next_packet(packet).filter(|p| p.continues());
        let mut bytes = std::mem::take(&mut self.scratch);
        let command = match first {
            Some(p) => {
                bytes.extend_from_slice(packet);
                self.continuation(client, p, &mut bytes).await?;
                &bytes[..]
            }
            None => packet,
        };
        let reply = self.forward(client, command, ReplyKind::Query, None).await;
        bytes.clear();
        self.scratch = bytes;
        if let Some(reply) = reply? {
            self.after(reply, &fx).await;
        }
        Ok(())
    }

    /// Commands with a simple reply that may change the schema (COM_INIT_DB) or the protocol
    /// (COM_SET_OPTION toggles multi-statements: pinned).
    async fn simple(&mut self, client: &mut TcpStream, packet: &[u8]) -> Result<(), End> {
        let cmd = packet[wire::HEADER_LEN];
        if !self.lease_for_command().await? {
            return Ok(());
        }
        if cmd == command::SET_OPTION {
            self.pin(PinReason::SetParameter);
        }
        let kind = if cmd == command::FIELD_LIST {
            ReplyKind::FieldList
        } else {
            ReplyKind::Single
        };
        let Some(reply) = self.forward(client, packet, kind, None).await? else {
            return Ok(());
        };
        let fx = Effects {
            read_back: cmd == command::INIT_DB,
            ..Effects::default()
        };
        self.after(reply, &fx).await;
        Ok(())
    }

    /// What a finished reply changes: status, LAST_INSERT_ID(), holds, read-back, pin changes.
    async fn after(&mut self, reply: Reply, fx: &Effects<'_>) {
        let failed = reply.error.is_some();
        match reply.end {
            Some(end) => {
                self.status = end.status;
                if end.last_insert_id != 0 {
                    self.last_insert_id = end.last_insert_id;
                    if let Some(conn) = self.lease.as_mut() {
                        conn.state.last_insert_id = end.last_insert_id;
                    }
                }
                // SHOW WARNINGS must reach the connection that produced them.
                self.hold |= end.warnings > 0;
            }
            None if failed => Box::pin(self.status_after_error()).await,
            None => {}
        }
        self.hold |= fx.hold;
        if fx.read_back
            && let Err(e) = Box::pin(self.read_back()).await
        {
            tracing::warn!(session = self.id, error = %e, "tracked state read-back failed");
            self.pin(PinReason::SetParameter);
        }
        if !failed && let Some(pins) = self.pins.as_mut() {
            pins.apply(&fx.changes);
            if pins.is_empty() {
                tracing::debug!(session = self.id, "session unpinned");
                self.pins = None;
            }
        }
    }

    /// An ERR carries no status: ask the server (COM_PING) when a transaction may be open.
    async fn status_after_error(&mut self) {
        let unsure = self.status & status::IN_TRANS != 0 || self.status & status::AUTOCOMMIT == 0;
        if !unsure {
            return;
        }
        let addr = self.pool.login.addr.clone();
        if let Some(conn) = self.lease.as_mut() {
            match conn.command(&addr, command::PING, &[]).await {
                Ok(ok) => self.status = ok.status,
                Err(_) => self.lease = None,
            }
        }
    }

    pub(super) fn pin(&mut self, reason: PinReason) {
        let pins = self.pins.get_or_insert_with(Default::default);
        if pins.add(reason) {
            tracing::info!(session = self.id, reason = %reason, "session pinned");
        }
    }

    async fn kill_query(&mut self, kill: Kill) -> Result<(), End> {
        let id = match kill {
            Kill::Query(id) => id,
            Kill::Connection(_) | Kill::Unsupported => {
                self.error(
                    errors::NOT_SUPPORTED,
                    "sluice: only KILL QUERY <connection id> is supported",
                );
                return Ok(());
            }
        };
        let user = &self.pool.login.user;
        match self.kill.lookup(id, user) {
            KillLookup::Unknown => {
                self.error(errors::NO_SUCH_THREAD, &format!("Unknown thread id: {id}"))
            }
            KillLookup::Idle => self.ok(),
            KillLookup::Running(addr, thread) => {
                if *addr != *self.pool.login.addr || !self.lease_for_command().await? {
                    self.error(errors::NO_SUCH_THREAD, &format!("Unknown thread id: {id}"));
                    return Ok(());
                }
                let addr = self.pool.login.addr.clone();
                let Some(conn) = self.lease.as_mut() else {
                    return Ok(());
                };
                match conn.query(&addr, &format!("KILL QUERY {thread}")).await {
                    Ok(_) => self.ok(),
                    Err(e) => self.error(errors::UNKNOWN, &format!("sluice: {e}")),
                }
            }
        }
        Ok(())
    }

    async fn prepare(&mut self, client: &mut TcpStream, packet: &[u8]) -> Result<(), End> {
        if !self.lease_for_command().await? {
            return Ok(());
        }
        let sql: Arc<[u8]> = packet[wire::HEADER_LEN + 1..].into();
        let id = self.next_statement;
        let Some(reply) = self
            .forward(client, packet, ReplyKind::Prepare, Some(id))
            .await?
        else {
            return Ok(());
        };
        if let Some(ok) = reply.prepared {
            self.next_statement = self.next_statement.wrapping_add(1).max(1);
            self.last_prepared = id;
            self.statements.insert(
                id,
                Prepared {
                    sql: sql.clone(),
                    params: ok.params,
                    types: None,
                },
            );
            if let Some(conn) = self.lease.as_mut() {
                remember(conn, sql, ok.statement_id);
            }
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE, SEND_LONG_DATA, FETCH and RESET: the client's id becomes the server id
    /// of the same text on this connection (prepared here first if need be).
    async fn statement_command(
        &mut self,
        client: &mut TcpStream,
        packet: &[u8],
        held: bool,
    ) -> Result<(), End> {
        let payload = &packet[wire::HEADER_LEN..];
        let cmd = payload[0];
        let mut id = statement_id(payload).unwrap_or(0);
        if id == LAST_PREPARED {
            id = self.last_prepared;
        }
        let Some(stmt) = self.statements.get(&id) else {
            self.error(
                errors::UNKNOWN_STMT,
                &format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute"),
            );
            return Ok(());
        };
        let sql = stmt.sql.clone();
        if cmd == command::STMT_RESET && !held && self.lease.is_none() {
            // Nothing of this statement lives on any connection for this session: nothing to reset.
            self.ok();
            return Ok(());
        }
        if !self.lease_for_command().await? {
            return Ok(());
        }
        let addr = self.pool.login.addr.clone();
        let Some(conn) = self.lease.as_mut() else {
            return Ok(());
        };
        let server_id = match conn.state.statements.get(&sql) {
            Some(&sid) => sid,
            None => match Box::pin(conn.prepare(&addr, &sql)).await {
                Ok(ok) => {
                    remember(conn, sql.clone(), ok.statement_id);
                    ok.statement_id
                }
                Err(e) => {
                    let (code, message) = match e {
                        crate::pool::ConnectError::Refused { code, message, .. } => {
                            ((code.parse().unwrap_or(1105), "HY000"), message)
                        }
                        e => (errors::LOST_CONNECTION, format!("sluice: {e}")),
                    };
                    self.error(code, &message);
                    return Ok(());
                }
            },
        };
        let mut bytes = std::mem::take(&mut self.scratch);
        let result = self
            .statement_packet(client, packet, id, server_id, &mut bytes)
            .await;
        bytes.clear();
        self.scratch = bytes;
        result
    }

    /// Sends the rewritten statement command in `bytes` and relays its reply, if it has one.
    async fn statement_packet(
        &mut self,
        client: &mut TcpStream,
        packet: &[u8],
        id: u32,
        server_id: u32,
        bytes: &mut Vec<u8>,
    ) -> Result<(), End> {
        let payload = &packet[wire::HEADER_LEN..];
        let cmd = payload[0];
        if cmd == command::STMT_EXECUTE {
            if payload.get(5).is_some_and(|&flags| flags & 0x07 != 0) {
                self.pin(PinReason::ServerCursor);
            }
            if let Some(stmt) = self.statements.get_mut(&id) {
                statements::execute_packet(stmt, payload, server_id, bytes);
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
            let Some(conn) = self.lease.as_mut() else {
                return Ok(());
            };
            if conn.write_command(bytes).await.is_err() {
                self.lease = None;
            }
            self.hold = true;
            return Ok(());
        }
        let kind = match cmd {
            command::STMT_EXECUTE => ReplyKind::Query,
            command::STMT_FETCH => ReplyKind::Fetch,
            _ => ReplyKind::Single,
        };
        if let Some(reply) = self.forward(client, bytes, kind, None).await? {
            self.after(reply, &Effects::default()).await;
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION: the session starts over (schema kept, as MySQL does); a server
    /// connection it holds is reset too.
    async fn reset_connection(&mut self) -> Result<(), End> {
        if let Some(mut lease) = self.lease.take() {
            self.kill.target.set(None);
            let ok = sync::reset_server(&self.pool, &mut lease).await.is_ok();
            let reusable = ok && !lease.expired();
            lease.release(reusable);
        }
        self.start_over();
        self.ok();
        Ok(())
    }
}

/// The statement id of a COM_STMT_* payload.
fn statement_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Records a server statement for `sql` on `conn`, closing one it replaces; past the cap, all
/// others go. The closes (which have no reply) go out ahead of the connection's next command.
fn remember(conn: &mut ServerConn, sql: Arc<[u8]>, server_id: u32) {
    if let Some(old) = conn.state.statements.insert(sql.clone(), server_id)
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
        conn.state.statements.insert(sql, server_id);
    }
}
