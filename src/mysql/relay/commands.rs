//! What sluice does with each command: answered locally (PING, QUIT, STMT_CLOSE, an idle
//! STMT_RESET or RESET_CONNECTION), remapped (the COM_STMT_* family), intercepted (KILL) or
//! forwarded, and what the reply changes for the session afterwards.

use crate::tls::{Socket, consume};

use super::{End, Hold, Session, sync};
use crate::mysql::errors::{self, Code};
use crate::mysql::kill::KillLookup;
use crate::mysql::pinning::{self, Effects, Kill};
use crate::mysql::server::ServerConn;
use crate::mysql::wire::{self, Reply, ReplyKind, command, status};
use crate::pool::PooledConnection;
use crate::routing::Want;
use crate::session::PinReason;

/// A command of several packets is read whole up to this size (the server's own
/// `max_allowed_packet` is 16 MiB by default and 1 GiB at most).
const MAX_COMMAND_BYTES: usize = 64 << 20;
const KILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Session {
    /// Handles the command packet at `cin[..len]` (plus any continuation packets).
    pub(super) async fn command(&mut self, client: &mut Socket, len: usize) -> Result<(), End> {
        let received = tokio::time::Instant::now();
        self.clock = Some(received);
        let packet = self.cin.split_to(len);
        let payload = &packet[wire::HEADER_LEN..];
        let counted = matches!(payload[0], command::QUERY | command::STMT_EXECUTE);
        if counted {
            self.ep.engine.cluster.metrics.query_requests.inc();
        }
        if self.lease.is_none() {
            self.want = self.transaction_want(payload);
        }
        let result = match payload[0] {
            command::QUIT => return Err(End::ClientGone),
            // Answered here: a hold stays for the command that needs it.
            command::PING => {
                self.ok();
                Ok(())
            }
            command::STMT_CLOSE => {
                if let Some(id) = statement_id(payload) {
                    self.close_statement(id);
                }
                return Ok(());
            }
            command::QUERY => self.query(client, &packet).await,
            command::STMT_PREPARE => self.prepare(client, &packet).await,
            command::STMT_EXECUTE | command::STMT_SEND_LONG_DATA | command::STMT_FETCH | command::STMT_RESET => {
                self.statement_command(client, &packet).await
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
        if counted {
            let m = &self.ep.engine.cluster.metrics;
            let done = self.clock.unwrap_or_else(tokio::time::Instant::now);
            m.query_response_latency.observe(done - received);
        }
        if self.want == Want::Writer
            && self.ep.want == Want::Split
            && self.lease.is_some()
            && !self.must_keep()
        {
            Box::pin(self.note_write()).await;
        }
        self.maybe_release();
        let in_transaction = self.status & crate::mysql::wire::status::IN_TRANS != 0;
        self.kill
            .target
            .state
            .set(in_transaction, self.pins.is_some());
        Ok(())
    }

    /// Borrows (and syncs) a connection for a command; a refused replay becomes the command's ERR.
    pub(super) async fn lease_for_command(&mut self, client: &mut Socket) -> Result<bool, End> {
        if let Some((code, message)) = self.check_held()? {
            self.error(code, message);
            return Ok(false);
        }
        match self.ensure_lease(client).await? {
            Ok(()) => {
                // This command is the one a hold kept the connection for.
                self.hold = Hold::None;
                Ok(true)
            }
            Err((code, message)) => {
                self.error(code, &message);
                Ok(false)
            }
        }
    }

    /// A connection the session held between commands (a transaction, a pin, a hold for SHOW
    /// WARNINGS) must have stayed silent: bytes the server sent unasked would be read as the
    /// next command's reply, and the real one would reach whoever borrows the connection next.
    /// A pool checks this at every borrow; a held connection is checked here. One that spoke or
    /// closed goes, and what the session kept on it decides what the client hears: nothing (a
    /// new connection serves the command), its transaction rolled back, or, with session state
    /// gone, the end of the session. Returns the command's error, if any.
    pub(super) fn check_held(&mut self) -> Result<Option<(Code, &'static str)>, End> {
        // Lost while the session waited (`held_spoke`), or found so now.
        if !std::mem::take(&mut self.lost_held) && !self.drop_held_if_spoke() {
            return Ok(None);
        }
        if self.pins.is_some() || self.hold == Hold::Hard {
            return Err(End::Fatal(
                errors::CONNECTION_KILLED,
                "sluice: the server connection was lost; the session's state went with it".into(),
            ));
        }
        self.hold = Hold::None;
        if self.status & status::IN_TRANS != 0 {
            self.status &= !status::IN_TRANS;
            return Ok(Some((
                errors::CUT_ROLLED_BACK,
                "sluice: the server connection was lost between statements: the transaction was rolled back and can be retried",
            )));
        }
        Ok(None)
    }

    /// Closes the held connection if the server spoke unasked or closed it; whether it did.
    pub(super) fn drop_held_if_spoke(&mut self) -> bool {
        if self.lease.as_mut().is_none_or(|lease| lease.is_usable()) {
            return false;
        }
        tracing::warn!(
            session = self.id,
            "the server spoke unasked or closed while its connection was held between commands"
        );
        self.drop_lease();
        true
    }

    /// Reads the continuation packets of a command whose first packet was full-size, up to
    /// `MAX_COMMAND_BYTES` in all.
    pub(super) async fn continuation(
        &mut self,
        client: &mut Socket,
        mut last: wire::Packet,
        into: &mut Vec<u8>,
    ) -> Result<(), End> {
        use tokio::io::AsyncReadExt;
        while last.continues() {
            loop {
                if into.len() >= MAX_COMMAND_BYTES {
                    return Err(End::Fatal(
                        errors::PACKET_TOO_LARGE,
                        "Got a packet bigger than 'max_allowed_packet' bytes".into(),
                    ));
                }
                if let Some(p) = wire::next_packet(&self.cin)
                    && self.cin.len() >= p.len
                {
                    into.extend_from_slice(&self.cin[..p.len]);
                    consume(&mut self.cin, p.len);
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

    /// A COM_QUERY's effects; a text like one of the last plain ones but for its numbers has
    /// none (the scan was a fifth of a text-protocol statement's instructions: callgrind,
    /// sysbench `oltp_point_select --db-ps-mode=disable`).
    fn query_effects<'a>(&mut self, sql: &'a [u8]) -> Effects<'a> {
        let escapes = self.backslash_escapes();
        if self.plain_query.recall(sql, |&e| e == escapes).is_some() {
            return Effects::default();
        }
        let fx = pinning::effects_in(sql, escapes);
        if fx == Effects::default() {
            self.plain_query.keep(sql, escapes, false);
        }
        fx
    }

    async fn query(&mut self, client: &mut Socket, packet: &[u8]) -> Result<(), End> {
        let sql = &packet[wire::HEADER_LEN + 1..];
        let fx = self.query_effects(sql);
        if let Some(kill) = fx.kill {
            return Box::pin(self.kill_query(kill)).await;
        }
        if !self.lease_for_command(client).await? {
            return Ok(());
        }
        if !self.before_statement(&fx).await {
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
    async fn simple(&mut self, client: &mut Socket, packet: &[u8]) -> Result<(), End> {
        let cmd = packet[wire::HEADER_LEN];
        if !self.lease_for_command(client).await? {
            return Ok(());
        }
        if cmd == command::SET_OPTION {
            // A reset keeps the option, so the connection never goes back to its pool.
            self.pin(PinReason::SetParameter);
            self.set_option = true;
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

    /// What a statement's text asks for before it runs: its pins, and the session's
    /// LAST_INSERT_ID() on the connection if it reads it. False when that failed (the ERR is
    /// queued).
    pub(super) async fn before_statement(&mut self, fx: &Effects<'_>) -> bool {
        for reason in fx.pins() {
            self.pin(reason);
        }
        if fx.last_insert_id
            && let Err((code, message)) = Box::pin(self.sync_last_insert_id()).await
        {
            self.error(code, &message);
            return false;
        }
        true
    }

    /// What a finished reply changes: status, LAST_INSERT_ID(), holds, read-back, pin changes.
    pub(super) async fn after(&mut self, reply: Reply, fx: &Effects<'_>) {
        let failed = reply.error.is_some();
        if let Some(end) = reply.end {
            self.status = end.status;
            if end.last_insert_id != 0 {
                self.last_insert_id = end.last_insert_id;
                if let Some(conn) = self.lease.as_mut() {
                    conn.state.last_insert_id = end.last_insert_id;
                }
            }
            // SHOW WARNINGS must reach the connection that produced them.
            if end.warnings > 0 && !failed {
                self.hold = self.hold.max(Hold::Soft);
            }
        }
        if failed {
            // An ERR carries no status, and an earlier result of the same reply may have
            // opened a transaction (`SELECT 1; INSERT ... duplicate` under autocommit=0).
            Box::pin(self.status_after_error(reply.end.is_some())).await;
        }
        if fx.hold {
            self.hold = Hold::Hard;
        } else if fx.soft_hold {
            self.hold = self.hold.max(Hold::Soft);
        }
        if fx.read_back
            && let Err(e) = Box::pin(self.read_back()).await
        {
            tracing::warn!(session = self.id, error = %e, "tracked state read-back failed");
            self.pin(PinReason::SetParameter);
        }
        if let Some(pins) = self.pins.as_mut() {
            // What a statement created counts even if a later statement of the same query
            // failed; what it dropped counts only if everything succeeded.
            pins.apply(&fx.changes, !failed);
            if pins.is_empty() {
                tracing::debug!(session = self.id, "session unpinned");
                self.pins = None;
            }
        }
    }

    /// An ERR carries no status: ask the server (COM_PING) when a transaction may be open.
    async fn status_after_error(&mut self, partly_ran: bool) {
        let unsure = partly_ran
            || self.status & status::IN_TRANS != 0
            || self.status & status::AUTOCOMMIT == 0;
        if !unsure {
            return;
        }
        let addr = self.pool.addr.clone();
        if let Some(conn) = self.lease.as_mut() {
            match conn.command(&addr, command::PING, &[]).await {
                Ok(ok) => self.status = ok.status,
                Err(_) => self.drop_lease(),
            }
        }
    }

    pub(super) fn pin(&mut self, reason: PinReason) {
        let counts = &self.ep.engine.cluster.pin_counts;
        let pins = self
            .pins
            .get_or_insert_with(|| Box::new(super::Pins::new(counts.clone())));
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
        match crate::mysql::kill::lookup(&self.ep.engine.kill, id, user) {
            KillLookup::Unknown => {
                self.error(errors::NO_SUCH_THREAD, &format!("Unknown thread id: {id}"))
            }
            KillLookup::Idle => self.ok(),
            KillLookup::Running(addr, thread) => {
                if *addr != *self.pool.addr {
                    self.error(errors::NO_SUCH_THREAD, &format!("Unknown thread id: {id}"));
                    return Ok(());
                }
                // On a connection of its own, like a Postgres cancel: the pool may be exhausted
                // by the very statement being killed.
                let login = &self.pool.login;
                let killed = async {
                    let mut conn = ServerConn::connect(login).await?;
                    let result = conn
                        .query(&login.addr, &format!("KILL QUERY {thread}"))
                        .await;
                    crate::pool::PooledConnection::close(conn);
                    result
                };
                match tokio::time::timeout(KILL_TIMEOUT, killed).await {
                    Ok(Ok(_)) => self.ok(),
                    Ok(Err(e)) => self.error(errors::UNKNOWN, &format!("sluice: {e}")),
                    Err(_) => self.error(errors::UNKNOWN, "sluice: KILL QUERY timed out"),
                }
            }
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION: the session starts over (schema kept, as MySQL does); a server
    /// connection it holds is reset too.
    async fn reset_connection(&mut self) -> Result<(), End> {
        if let Some(mut lease) = self.lease.take() {
            self.kill.target.set(None);
            let ok = sync::reset_server(&self.pool, &mut lease).await.is_ok() && !self.set_option;
            lease.release(ok);
        }
        self.start_over();
        self.ok();
        Ok(())
    }
}

/// The statement id of a COM_STMT_* payload.
pub(super) fn statement_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
