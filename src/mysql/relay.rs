//! One MySQL client session: waits idle without a server connection, borrows one for each
//! command (keeping it through a transaction, a pin or a one-statement hold), replays the
//! session's schema and tracked variables on it, forwards the command and streams the reply back
//! until the reply's last packet, then gives the connection back.
//!
//! MySQL is strictly request/response, so unlike the Postgres relay this one is sequential:
//! one command, one reply. Rows stream through in chunks; only status packets are parsed.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::session::keys::KeyMap;
use crate::tls::{Socket, consume};
use bytes::BytesMut;
use std::pin::Pin;
use tokio::io::AsyncReadExt;

use tokio::time::{Duration, Instant, Sleep};

use super::endpoint::MyEndpoint;
use super::errors::{self, Code};
use super::kill::KillHandle;
use super::pools::MyPool;
use super::server::ServerConn;
use super::state::Vars;
use super::wire::{self, Reply, ReplyKind};
use crate::pool::Lease;
use crate::routing::Want;
use crate::session::memo::Memos;
use crate::session::spare;

mod change_user;
mod commands;
mod dormant;
mod idle;
mod infile;
mod pins;
#[cfg(any(test, fuzzing))]
pub(crate) mod rig;
mod route;
mod statements;
mod sync;
#[cfg(test)]
mod tests;

pub use dormant::Dormant;
pub(super) use pins::Hold;
pub use pins::Pins;

/// Largest command packet read whole; a bigger one continues in further packets, forwarded raw.
const MAX_COMMAND: usize = wire::MAX_PAYLOAD + wire::HEADER_LEN;
/// Reply bytes gathered before a write to the client.
const FLUSH_AT: usize = 64 << 10;
const READ_CHUNK: usize = 16 << 10;
/// How long a soft hold keeps a connection for a client that sends nothing.
const SOFT_HOLD: Duration = Duration::from_millis(500);
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// How a command ended the session, if it did.
#[derive(Debug)]
pub enum End {
    ClientGone,
    /// sluice is draining and the session was between transactions: closed without a word, as
    /// a MySQL server closes idle connections when it shuts down.
    Drained,
    /// Sent to the client as an ERR packet, then the connection is closed.
    Fatal(Code, String),
    /// Idle over plain TCP with no server connection: the session waits in the lot.
    Park,
}

/// How a session's run ended.
#[derive(Debug)]
pub enum Outcome {
    Closed {
        tls: bool,
    },
    /// Idle long enough over plain TCP to wait without a task: the caller hands its client to
    /// the lot.
    Park,
}

use route::LastWrite;
use statements::Prepared;

#[derive(Debug)]
pub struct Session {
    id: u32,
    ep: Arc<MyEndpoint>,
    peer: SocketAddr,
    /// The instance the session used last, and its pool there.
    member: usize,
    /// What the current (or next) transaction needs: the endpoint's role, or on split
    /// endpoints the writer or a reader, decided by the command that starts it.
    want: Want,
    last_write: LastWrite,
    /// The reader that has applied `last_write`, once one was seen to.
    replayed_on: Option<usize>,
    pool: Arc<MyPool>,
    kill: KillHandle,
    schema: Option<Box<str>>,
    /// Tracked variables; `None` while they are the pool's baseline.
    vars: Option<Vars>,
    pins: Option<Box<Pins>>,
    statements: KeyMap<u32, Prepared>,
    next_statement: u32,
    last_prepared: u32,
    last_insert_id: u64,
    /// Server status after the last reply: IN_TRANS, AUTOCOMMIT.
    status: u16,
    /// Keep the connection for the next command.
    hold: Hold,
    /// COM_STMT_SEND_LONG_DATA for this statement failed; its execute must fail too.
    long_data_lost: Option<u32>,
    /// The client changed an option a connection reset keeps (COM_SET_OPTION): the connection
    /// may not go back to a pool.
    set_option: bool,
    /// The server ended the connection the session held while the session waited for its next
    /// command: the connection is gone (its slot free for other sessions), and the next command
    /// hears what that cost (`check_held`). Never set in a parked session.
    lost_held: bool,
    cin: BytesMut,
    out: Vec<u8>,
    /// A rewritten command on its way to the server (reused).
    scratch: Vec<u8>,
    lease: Option<Lease<ServerConn>>,
    /// The current command's last clock read: at its start, after a slow borrow and at the end
    /// of its reply. Latencies, the pool's idle stamp and the next idle wait use it instead of
    /// reading the clock again (seven reads per point select were 5 % of its instructions).
    /// The next idle wait takes it, so it is `None` between commands.
    clock: Option<Instant>,
    /// When the idle wait that parked the session began: its idle timeout counts from there.
    idle_since: Option<Instant>,
    /// When the current idle wait parks the session, if it may.
    park_at: Option<Instant>,
    /// The wait between a session's commands: kept from one wait to the next and re-armed only
    /// when it fires, as the Postgres relay's (a timer armed per command showed in profiles);
    /// parking drops it.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The session's slot in the drain's wake-up list, taken at its first wait; parking drops
    /// it.
    drain_watch: Option<crate::session::drain::Watch>,
    /// The last COM_QUERY texts that do nothing to session state, with the backslash mode each
    /// was scanned in: one alike but for its numbers needs no scan. Parking drops them.
    plain_query: Memos<bool>,
}

impl Session {
    pub(super) fn new(
        id: u32,
        ep: Arc<MyEndpoint>,
        peer: SocketAddr,
        (member, pool): (usize, Arc<MyPool>),
        kill: KillHandle,
        schema: Option<Box<str>>,
        leftover: BytesMut,
    ) -> Self {
        Self {
            id,
            ep,
            peer,
            member,
            want: Want::Writer, // set by each command that borrows
            last_write: LastWrite::None,
            replayed_on: None,
            pool,
            kill,
            schema,
            vars: None,
            pins: None,
            statements: KeyMap::default(),
            next_statement: 1,
            last_prepared: 0,
            last_insert_id: 0,
            status: wire::status::AUTOCOMMIT,
            hold: Hold::None,
            long_data_lost: None,
            set_option: false,
            lost_held: false,
            cin: leftover,
            out: Vec::new(),
            scratch: Vec::new(),
            lease: None,
            clock: None,
            idle_since: None,
            park_at: None,
            idle_timer: None,
            drain_watch: None,
            plain_query: Memos::default(),
        }
    }

    /// Serves the session until it ends or, idle over plain TCP, parks.
    /// The caller keeps the client socket (borrowed here, 8 bytes of the task rather than the
    /// socket twice), so it can park it.
    pub async fn run(&mut self, client: &mut Socket) -> Outcome {
        let end = loop {
            match self.next_command(client).await {
                Ok(Some(len)) => {
                    if let Err(end) = self.command(client, len).await {
                        break end;
                    }
                }
                Ok(None) => break End::ClientGone,
                Err(end) => break end,
            }
        };
        // Only a plain client parks (`next_command`); anything else closes.
        if matches!(end, End::Park) && matches!(client, Socket::Plain(_)) {
            return Outcome::Park;
        }
        if let Some(lease) = self.lease.take() {
            Box::pin(self.clean_up(lease)).await;
        }
        if let End::Fatal(code, message) = end {
            tracing::info!(session = self.id, code = code.0, %message, "session ended by sluice");
            self.out.clear();
            wire::write_err(&mut self.out, 1, code.0, code.1, &message);
            let _ = client.write_all(&self.out).await;
        }
        tracing::debug!(session = self.id, "session closed");
        self.give_back();
        Outcome::Closed {
            tls: client.is_tls(),
        }
    }

    pub fn endpoint(&self) -> &Arc<MyEndpoint> {
        &self.ep
    }

    /// Writes what is queued for the client.
    async fn flush(&mut self, client: &mut Socket) -> Result<(), End> {
        if !self.out.is_empty() {
            client
                .write_all(&self.out)
                .await
                .map_err(|_| End::ClientGone)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Queues an ERR reply to the current command.
    fn error(&mut self, code: Code, message: &str) {
        wire::write_err(&mut self.out, 1, code.0, code.1, message);
    }

    /// Queues an OK reply to the current command, with the session's status.
    fn ok(&mut self) {
        let ok = wire::OkPacket {
            status: self.status,
            ..wire::OkPacket::default()
        };
        wire::write_ok(&mut self.out, 1, &ok);
    }

    /// Sends `command` (whole packets) to the server and streams the reply to the client. A
    /// server that fails before any of the reply was forwarded costs the client one ERR, not its
    /// connection. `prepared_as`: the client's id for a COM_STMT_PREPARE reply.
    async fn forward(
        &mut self,
        client: &mut Socket,
        command: &[u8],
        kind: ReplyKind,
        prepared_as: Option<u32>,
    ) -> Result<Option<Reply>, End> {
        let Some(lease) = self.lease.as_mut() else {
            return Err(End::Fatal(errors::UNKNOWN, "no server connection".into()));
        };
        let conn: &mut ServerConn = lease;
        let mut reply = Reply::new(kind, conn.deprecate_eof());
        reply.starts_after(wire::last_seq(command));
        let mut forwarded = false;
        // Grown from nothing after a shrink, it was reallocated several times per reply.
        spare::ensure_vec(&mut self.out);
        let sent = self.clock.unwrap_or_else(Instant::now);
        let lost = if conn.write_command(command).await.is_err() {
            true
        } else {
            let mut streaming = 0usize;
            let mut first = true;
            loop {
                match drain(
                    &mut conn.buf,
                    &mut self.out,
                    &mut reply,
                    &mut streaming,
                    &mut first,
                    prepared_as,
                ) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(session = self.id, error = %e, "malformed reply from the server");
                        break true;
                    }
                }
                let complete = reply.done() && streaming == 0;
                // The server's request for a local file goes out at once: nothing follows it
                // until the client has sent the file.
                let file = reply.wants_file();
                if file && conn.caps & wire::caps::LOCAL_FILES == 0 {
                    // No server asks a connection opened without CLIENT_LOCAL_FILES for a file:
                    // this one is not speaking MySQL, and its request must not reach a client.
                    tracing::warn!(
                        session = self.id,
                        "the server asked for a local file it was not offered"
                    );
                    self.out.clear();
                    break true;
                }
                if complete || file || self.out.len() >= FLUSH_AT {
                    forwarded |= !self.out.is_empty();
                    if client.write_all(&self.out).await.is_err() {
                        self.out.clear();
                        // The rest of the reply is still on its way: the connection cannot be
                        // reused.
                        self.drop_lease();
                        return Err(End::ClientGone);
                    }
                    self.out.clear();
                }
                if complete {
                    let done = Instant::now();
                    self.clock = Some(done);
                    let m = &self.ep.engine.cluster.metrics;
                    m.database_response_latency.observe(done - sent);
                    break false;
                }
                if file {
                    // Only a connection opened for clients that announced CLIENT_LOCAL_FILES is
                    // asked for a file (the capability is part of the pool's key).
                    match Box::pin(infile::upload(client, conn, &mut self.cin)).await {
                        Ok(()) => reply.file_sent(),
                        Err(infile::Gone::Client) => {
                            // Mid-file: the server waits for the rest and can serve no one.
                            self.drop_lease();
                            return Err(End::ClientGone);
                        }
                        Err(infile::Gone::Server) => break true,
                    }
                    continue;
                }
                conn.buf.reserve(READ_CHUNK);
                match conn.stream.read_buf(&mut conn.buf).await {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                }
            }
        };
        if !lost {
            return Ok(Some(reply));
        }
        self.drop_lease();
        // A pinned session's state went with the connection: it cannot go on as if it had not.
        if forwarded || !self.out.is_empty() || self.pins.is_some() {
            return Err(End::Fatal(
                errors::CONNECTION_KILLED,
                "sluice: the server connection was lost during the query; the session's state went with it".into(),
            ));
        }
        let (code, message) = route::cut_error(self.status, command, kind);
        tracing::warn!(
            session = self.id,
            code = code.0,
            "server connection lost before its reply"
        );
        self.status &= !wire::status::IN_TRANS;
        self.hold = Hold::None;
        self.error(code, message);
        self.flush(client).await?;
        Ok(None)
    }

    /// Forgets what the session set up (COM_RESET_CONNECTION, COM_CHANGE_USER); the schema stays.
    fn start_over(&mut self) {
        if let Some(mut pins) = self.pins.take() {
            pins.clear();
        }
        self.vars = None;
        self.statements.clear();
        self.last_insert_id = 0;
        self.hold = Hold::None;
        self.lost_held = false;
        self.long_data_lost = None;
        self.status = wire::status::AUTOCOMMIT;
    }

    /// Whether backslashes escape in this session's string literals (sql_mode may say no).
    fn backslash_escapes(&self) -> bool {
        let Some(baseline) = self.pool.baseline.get() else {
            return true;
        };
        let vars = super::state::effective(&self.vars, baseline);
        let mode = vars.get(super::state::SQL_MODE).and_then(|v| v.as_deref());
        !mode.is_some_and(|m| m.contains("NO_BACKSLASH_ESCAPES"))
    }

    /// Between transactions, holding nothing the next command needs: where a drain may end the
    /// session (session state such as temporary tables goes, as with a server shutdown).
    fn at_boundary(&self) -> bool {
        self.status & wire::status::IN_TRANS == 0 && self.hold != Hold::Hard
    }

    /// Whether the session must keep its connection for the next command.
    fn must_keep(&self) -> bool {
        self.status & wire::status::IN_TRANS != 0 || self.pins.is_some() || self.hold != Hold::None
    }

    /// Gives the connection back unless the session must keep it.
    fn maybe_release(&mut self) {
        if self.must_keep() {
            return;
        }
        if let Some(lease) = self.lease.take() {
            self.kill.target.set(None);
            let reusable = lease.buf.is_empty();
            lease.release_at(reusable, self.clock.unwrap_or_else(Instant::now));
        }
    }

    /// The client left holding a connection: reset it if it carries session state, else return it.
    async fn clean_up(&mut self, mut lease: Lease<ServerConn>) {
        self.kill.target.set(None);
        if !lease.buf.is_empty() {
            return; // mid-reply: dropping closes it, and the server rolls back
        }
        let dirty = self.must_keep();
        let mut clean = true;
        if dirty {
            clean = tokio::time::timeout(RESET_TIMEOUT, sync::reset_server(&self.pool, &mut lease))
                .await
                .is_ok_and(|r| r.is_ok());
        }
        let reusable = clean && !self.set_option;
        lease.release(reusable);
    }

    /// Closes the held connection (its state or reply is unknown).
    fn drop_lease(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.kill.target.set(None);
            lease.release(false);
        }
    }
}

/// Moves the complete (or streamable) reply packets in `buf` to `out`, feeding `reply`.
fn drain(
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    reply: &mut Reply,
    streaming: &mut usize,
    first: &mut bool,
    prepared_as: Option<u32>,
) -> Result<(), wire::WireError> {
    loop {
        if *streaming > 0 {
            let n = (*streaming).min(buf.len());
            if n == 0 {
                return Ok(());
            }
            out.extend_from_slice(&buf[..n]);
            consume(buf, n);
            *streaming -= n;
            continue;
        }
        if reply.done() || reply.wants_file() {
            return Ok(());
        }
        let rows = reply.whole_rows(buf);
        if rows > 0 {
            *first = false;
            out.extend_from_slice(&buf[..rows]);
            consume(buf, rows);
            continue;
        }
        let Some(p) = wire::next_packet(buf) else {
            return Ok(());
        };
        let plen = p.payload_len();
        if buf.len() < wire::HEADER_LEN + plen.min(1) {
            return Ok(());
        }
        let head = if plen > 0 { buf[wire::HEADER_LEN] } else { 0 };
        if reply.needs_whole(head, plen) {
            if buf.len() < p.len {
                return Ok(());
            }
            reply.check_seq(p.seq)?;
            reply.on_packet(&buf[wire::HEADER_LEN..p.len], plen)?;
            let at = out.len();
            out.extend_from_slice(&buf[..p.len]);
            if std::mem::take(first)
                && let (Some(id), Some(_)) = (prepared_as, reply.prepared)
            {
                out[at + 5..at + 9].copy_from_slice(&id.to_le_bytes());
            }
            consume(buf, p.len);
        } else {
            *first = false;
            reply.check_seq(p.seq)?;
            reply.on_packet(&buf[wire::HEADER_LEN..wire::HEADER_LEN + plen.min(1)], plen)?;
            let n = p.len.min(buf.len());
            out.extend_from_slice(&buf[..n]);
            consume(buf, n);
            *streaming = p.len - n;
        }
    }
}
