//! One client session: waits idle without a server connection, borrows one when the client
//! speaks, relays full-duplex until the server is idle again, and gives it back.
//!
//! Bytes are forwarded in batches; only message headers and the few messages the pipeline
//! needs are looked at. Large DataRow and CopyData messages stream through without being
//! buffered whole, and an idle session drops its buffers.

use std::pin::Pin;
use std::sync::Arc;

use crate::tls::Socket;
use bytes::BytesMut;
use tokio::io::Interest;
use tokio::time::{Duration, Instant, Sleep};

use super::cancel::CancelHandle;
use super::cluster::PgCluster;
use super::errors::{self, fatal};
use super::pipeline::Pipeline;
use super::pools::PgPool;
use super::server::ServerConn;
use super::settings::Settings;
use super::wire::{self, status};
use crate::errors::BorrowError;
use crate::pool::Lease;
use crate::routing::Want;
use crate::session::spare;
pub use dormant::Dormant;
pub use idle::{IdleLimits, Outcome};

/// A message that must be inspected is buffered whole up to this size.
const MAX_BUFFERED_MESSAGE: usize = 64 << 20;
/// Stop reading one side while this much waits to be written to the other.
const HIGH_WATER: usize = 256 << 10;
/// A partial DataRow/CopyData at least this large is forwarded before it is complete.
const STREAM_CHUNK: usize = 64 << 10;
const READ_CHUNK: usize = 16 << 10;
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// What a session closed by a drain is told (57P01, as Postgres says at shutdown).
const DRAINED: &str =
    "terminating connection due to administrator command (sluice is shutting down)";
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);
/// How long a session's last words (a FATAL error) may take to write.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// How an active phase ended.
#[derive(Debug)]
enum Active {
    Released,
    ClientGone,
    ServerGone,
    Fatal(&'static str, String),
}

/// Where a session is in its life after login; named after PgBouncer's client socket states
/// (`CL_ACTIVE`, `CL_WAITING`), which its admin console shows and operators know.
///
/// ```text
///            request                borrowed               released at a boundary
///   Idle ──────────────▶ Borrowing ─────────▶ Active ─────────────────────────────▶ Idle
///    ▲  ▲                    │ no connection     │ server lost mid-request
///    │  └── Sync ── SkipToSync ◀─────────────────┤ (the client got its error)
///    └─ next request errs ── Cut ◀───────────────┘ server lost inside a transaction
/// ```
/// One byte: it replaces two flags of every session task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No server connection; waiting for the client (PgBouncer: an unlinked `CL_ACTIVE`).
    Idle,
    /// Waiting for a server connection for the request at the front (`CL_WAITING`).
    Borrowing,
    /// Holding a server connection and relaying both ways (`CL_ACTIVE` linked to `SV_ACTIVE`).
    Active,
    /// A failed request's messages are dropped up to its Sync, as Postgres does after an error.
    SkipToSync,
    /// The server was lost while the client sat in a transaction: its next request gets the
    /// error (`rolled_back`: the transaction surely rolled back).
    Cut { rolled_back: bool },
}

/// Where a session's transactions go: its target group, the instance it used last, and what
/// its endpoint needs.
#[derive(Debug)]
pub struct Route {
    pub cluster: Arc<PgCluster>,
    /// Split endpoints: the writer's WAL position after the session's last transaction there
    /// (0: none yet); a reader serves the session only once it has replayed this far.
    pub last_write: u64,
    pub member: u16,
    /// Split endpoints: how long a read-only transaction waits for a caught-up reader (ms).
    pub ryw_ms: u32,
    pub want: Want,
}

#[derive(Debug)]
pub struct Session {
    id: u64,
    route: Route,
    /// The pool of `route.member` for the session's (database, user).
    pg: Arc<PgPool>,
    cancel: CancelHandle,
    /// Parameters from the startup packet: what DISCARD ALL returns the session to.
    startup: Settings,
    /// Parameters the session has now (startup ones plus tracked changes).
    settings: Settings,
    pipeline: Pipeline,
    cin: BytesMut,
    cout: BytesMut,
    sout: BytesMut,
    idle: IdleLimits,
    /// Bytes of a client message still to stream to the server.
    client_streaming: usize,
    /// Bytes of a server message still to stream to the client.
    server_streaming: usize,
    /// The idle wait's timer, kept between waits of a busy session and re-armed only when it
    /// fires: arming a timer for every transaction showed up in profiles.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The session's slot in the drain's wake-up list, taken at its first idle wait; parking
    /// drops it.
    drain_watch: Option<crate::session::drain::Watch>,
    /// When the idle wait that parked the session began: its idle timeout counts from there
    /// when it resumes.
    idle_since: Option<Instant>,
    /// The clock read at the transaction's last ReadyForQuery: it stamps the connection's idle
    /// time in the pool and starts the next idle wait, which read the clock themselves before.
    /// The wait takes it, so it is `None` between transactions.
    clock: Option<Instant>,
    phase: Phase,
    /// The client sent COMMIT (or the like) in this transaction: if the server is lost now,
    /// the outcome is unknown.
    commit_in_flight: bool,
    /// The server sent a FATAL error: the connection is as good as gone.
    server_fatal: bool,
    /// The server has accepted the session's parameters once. Until then a replay of them is
    /// answered before the client's messages go out: refused (an invalid startup parameter),
    /// the session ends as Postgres ends it at startup, and nothing of the client's has run.
    settings_known: bool,
    /// Subscriptions (LISTEN) and the inbox of their notifications; such a session never parks.
    listening: Option<Box<Listening>>,
}

impl Session {
    pub(super) fn new(
        id: u64,
        route: Route,
        pg: Arc<PgPool>,
        cancel: CancelHandle,
        startup: Settings,
        leftover: BytesMut,
        idle: IdleLimits,
    ) -> Self {
        Self {
            id,
            route,
            pg,
            cancel,
            settings: startup.clone(),
            startup,
            pipeline: Pipeline::new(id),
            // The login's buffer stays only if the client already sent more.
            cin: if leftover.is_empty() {
                BytesMut::new()
            } else {
                leftover
            },
            cout: BytesMut::new(),
            sout: BytesMut::new(),
            idle,
            client_streaming: 0,
            server_streaming: 0,
            idle_timer: None,
            drain_watch: None,
            idle_since: None,
            clock: None,
            phase: Phase::Idle,
            commit_in_flight: false,
            server_fatal: false,
            settings_known: false,
            listening: None,
        }
    }

    /// The client's messages wait for the answer to the session's first parameter replay.
    fn holding(&self) -> bool {
        !self.settings_known && self.pipeline.internal()
    }

    /// Serves the session until it ends or, idle over plain TCP, parks.
    /// The caller keeps the client socket, so it can park it (as the MySQL relay's `run`).
    pub async fn run(&mut self, client: &mut Socket) -> Outcome {
        let end = match self.serve(client).await {
            // Only a plain client parks (`wait_idle`); anything else closes.
            Stop::Park if matches!(client, Socket::Plain(_)) => return Outcome::Park,
            Stop::Park => None,
            Stop::End(end) => end,
        };
        if let Some((code, message)) = end {
            tracing::info!(session = self.id, code, %message, "session ended by sluice");
            fatal(&mut self.cout, code, &message);
            // Bounded: a client that stopped reading (a listener behind on its notifications)
            // must not hold the session open.
            let _ = tokio::time::timeout(FINAL_WRITE, client.write_all(&self.cout)).await;
        }
        tracing::debug!(session = self.id, "session closed");
        self.give_back();
        Outcome::Closed {
            tls: client.is_tls(),
        }
    }

    /// Serves transactions until the client leaves (with a FATAL error to send, if any) or the
    /// session parks.
    async fn serve(&mut self, client: &mut Socket) -> Stop {
        loop {
            if self.listening.is_some() {
                if let Err(end) = self.write_listening(client).await {
                    return Stop::End(end);
                }
            } else if client.write_all(&self.cout).await.is_err() {
                return Stop::End(None);
            }
            self.cout.clear();
            match self.wait_idle(client).await {
                Idle::Message => {}
                Idle::Notified => {
                    if let Err(end) = self.deliver() {
                        return Stop::End(Some(end));
                    }
                    continue;
                }
                Idle::Gone => return Stop::End(None),
                Idle::TimedOut => {
                    return Stop::End(Some((
                        errors::IDLE_SESSION_TIMEOUT,
                        "terminating connection due to idle client timeout".into(),
                    )));
                }
                Idle::Drained => {
                    return Stop::End(Some((errors::ADMIN_SHUTDOWN, DRAINED.into())));
                }
                Idle::Park => return Stop::Park,
            }
            if self.answered_without_server() {
                continue;
            }
            let want = self.transaction_want();
            self.phase = Phase::Borrowing;
            let mut lease = match self.borrow(want, client).await {
                Some(Ok(lease)) => lease,
                Some(Err(e)) => {
                    self.phase = Phase::Idle;
                    let (code, message) = errors::borrow_failure(&e);
                    if matches!(e, BorrowError::Cancelled) {
                        tracing::info!(
                            session = self.id,
                            "request cancelled while it waited for a server connection"
                        );
                    } else {
                        tracing::warn!(session = self.id, pool = %self.pg.pool.name(), error = %e, "borrow failed");
                    }
                    self.fail_request(code, &message);
                    continue;
                }
                None => {
                    tracing::debug!(
                        session = self.id,
                        "client hung up while its request waited for a server connection"
                    );
                    return Stop::End(None);
                }
            };
            self.commit_in_flight = false;
            self.phase = Phase::Active;
            // Spare buffers for a session back from a shrink: grown message by message from
            // nothing, they were reallocated several times in its transaction.
            spare::ensure_all([&mut self.cout, &mut self.sout]);
            self.on_borrow(&mut lease);
            let outcome = self.active(client, &mut lease).await;
            self.phase = Phase::Idle;
            self.cancel.target.set(None);
            match outcome {
                Active::Released => {
                    let mut fit = true;
                    if self.route.want == Want::Split && want == Want::Writer {
                        fit = Box::pin(self.note_write(&mut lease)).await;
                    }
                    self.cancel.target.state.set(false, false);
                    let retire = self.pipeline.take_retire();
                    let reusable = fit && lease.buf.is_empty() && !retire;
                    lease.release_at(reusable, self.clock.unwrap_or_else(Instant::now));
                }
                Active::ClientGone => {
                    // Boxed for the same reason as the login: rare, and large inline.
                    Box::pin(self.clean_up(lease)).await;
                    return Stop::End(None);
                }
                Active::ServerGone => {
                    drop(lease);
                    if let Some(end) = self.server_gone() {
                        return Stop::End(Some(end));
                    }
                }
                Active::Fatal(code, message) => {
                    drop(lease);
                    return Stop::End(Some((code, message)));
                }
            }
        }
    }

    async fn active(&mut self, client: &mut Socket, lease: &mut Lease<ServerConn>) -> Active {
        loop {
            if let Err(end) = self.pump_client(lease) {
                return end;
            }
            self.pump_server(lease);
            if self.pipeline.listen_due() {
                // Boxed: rare, and its timeout inline would grow every session's task.
                Box::pin(self.apply_listen()).await;
            }
            if self.server_fatal {
                self.server_fatal = false;
                return Active::ServerGone;
            }
            if let Some(error) = self.pipeline.take_internal_error() {
                // The session's parameters cannot be had on this connection (at first use: the
                // client's startup parameters, refused as Postgres would at startup).
                lease.settings.clear();
                return Active::Fatal(
                    errors::PROTOCOL_VIOLATION,
                    format!("invalid session parameter: {error}"),
                );
            }
            self.settings_known |= !self.pipeline.internal();
            if let Some(discard) = self.pipeline.take_discard() {
                self.on_discard(lease, discard);
            }
            if client.try_flush(&mut self.cout).is_err() {
                return Active::ClientGone;
            }
            if lease.stream.try_flush(&mut self.sout).is_err() {
                return Active::ServerGone;
            }
            if self.pipeline.quiet()
                && self.pipeline.status() == status::IDLE
                && self.sout.is_empty()
                && self.client_streaming == 0
                && self.server_streaming == 0
            {
                if let Err((code, message)) = self.deliver() {
                    return Active::Fatal(code, message);
                }
                if self.pipeline.after_transaction_due() && self.after_transaction(lease) {
                    continue;
                }
                if self.pipeline.releasable() {
                    return Active::Released;
                }
                if self.route.cluster.drain.is_cancelled() && self.cin.is_empty() {
                    // Pinned, its request answered while sluice drains: the boundary. (A pinned
                    // session already idle here is not woken: a drain branch in this select
                    // would cost every session task 64 bytes; shutdown_timeout ends it.)
                    return Active::Fatal(errors::ADMIN_SHUTDOWN, DRAINED.into());
                }
            }
            // A pump that stopped at the high-water mark left work that no socket event will
            // announce (the bytes are already read): go round again now that output drained.
            if (self.sout.len() < HIGH_WATER
                && !self.holding()
                && pending_input(&self.cin, self.client_streaming))
                || (self.cout.len() < HIGH_WATER
                    && pending_input(&lease.buf, self.server_streaming))
            {
                continue;
            }
            // One readiness future per socket (read and/or write interest), not one per
            // direction: the select's state is part of every session task's allocation.
            let read_client = self.sout.len() < HIGH_WATER;
            let read_server = self.cout.len() < HIGH_WATER;
            let client_wants = interest(
                read_client,
                !self.cout.is_empty() || client.pending_output(),
            );
            let server_wants = interest(
                read_server,
                !self.sout.is_empty() || lease.stream.pending_output(),
            );
            // The server first, in a fixed order: while a session holds a connection the answer
            // is what it waits for, so a ready server needs no look at the client (and no
            // random pick of which to poll first). The client is not starved: its output is
            // flushed at every turn of the loop, its buffered input pumped there too, and a
            // server that outruns the client fills `cout` to the high-water mark, which turns
            // the server's branch off; only reading more client input waits for a quiet server.
            let (from_client, ready) = tokio::select! {
                biased;
                r = lease.stream.ready(server_wants.unwrap_or(Interest::READABLE)), if server_wants.is_some() => (false, r),
                r = client.ready(client_wants.unwrap_or(Interest::READABLE)), if client_wants.is_some() => (true, r),
                // Notifications wait for the transaction's end (the loop's top delivers them),
                // but a session that falls too far behind is closed now.
                () = listening::arrived(self.listening.as_deref()) => {
                    if self.fell_behind() && let Err((code, message)) = self.deliver() {
                        return Active::Fatal(code, message);
                    }
                    continue;
                }
            };
            let gone = if from_client {
                Active::ClientGone
            } else {
                Active::ServerGone
            };
            let Ok(ready) = ready else { return gone };
            let wants_read = if from_client {
                read_client
            } else {
                read_server
            };
            if !(ready.is_readable() || ready.is_read_closed()) || !wants_read {
                continue; // writable: the loop's top flushes
            }
            let (stream, buf) = if from_client {
                (&mut *client, &mut self.cin)
            } else {
                let conn: &mut ServerConn = lease;
                (&mut conn.stream, &mut conn.buf)
            };
            let chunk = spare::read_room(buf, READ_CHUNK);
            match stream.read_some(buf, chunk) {
                Ok(0) => return gone,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return gone,
                _ => {}
            }
        }
    }
}

/// Whether `buf` holds something a pump can process now: streamed bytes or a whole message.
fn pending_input(buf: &[u8], streaming: usize) -> bool {
    if streaming > 0 {
        return !buf.is_empty();
    }
    matches!(wire::next_frame(buf, usize::MAX), Ok(Some(_)) | Err(_))
}

fn interest(read: bool, write: bool) -> Option<Interest> {
    match (read, write) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

mod clean_up;
mod dormant;
mod idle;
mod listening;
mod pumps;
#[cfg(any(test, fuzzing))]
pub(crate) mod rig;
mod route;
mod state;
#[cfg(test)]
mod tests;

use idle::{Idle, Stop};
use listening::Listening;
#[cfg(any(test, fuzzing))]
pub(crate) use route::transaction_access;
