//! The wait for a client's next command: buffers given back at once without a server
//! connection, soft holds given up, the idle timeout, parking, and the drain's wake-up.

use tokio::io::AsyncReadExt;
use tokio::time::{Duration, Instant};

use super::{End, Hold, MAX_COMMAND, READ_CHUNK, SOFT_HOLD, Session};
use crate::mysql::server::ServerConn;
use crate::mysql::{errors, wire};
use crate::pool::Lease;
use crate::session::spare;
use crate::tls::Socket;

/// A configured timeout beyond what the clock can add means "never".
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How long a session idles holding a server connection before its wait watches that connection
/// too: between the statements of a busy transaction the watch costs nothing. Watched from the
/// first moment, its readiness registration was 3 % more instructions per `oltp_read_only`
/// transaction (`benches/load/instructions.sh`, 119,034 / 118,899 against 115,599 / 115,427).
const WATCH_HELD_AFTER: Duration = Duration::from_secs(1);

/// Readiness of the held server connection, which is silent between commands.
async fn spoke(lease: Option<&mut Lease<ServerConn>>) {
    if let Some(lease) = lease {
        // An error is readiness too: `held_spoke` finds the connection unusable.
        let _ = lease.stream.readable().await;
    }
}

impl Session {
    /// Waits for the client's next command packet; `Ok(None)` when the client left.
    pub(super) async fn next_command(&mut self, client: &mut Socket) -> Result<Option<usize>, End> {
        // A resumed session's idle time counts from before it parked; its next park from now,
        // since its socket's readiness reaches the runtime only after a first wait. While the
        // client keeps up, "now" is the last command's own last clock read: no read of its own.
        let resumed = self.idle_since.take();
        let mut now = self.clock.take().unwrap_or_else(Instant::now);
        let started = resumed.unwrap_or(now);
        // In the session, not a local: every local across an await grows every session's task.
        self.park_at = self
            .ep
            .idle_client_park_after
            .filter(|_| self.ep.engine.cluster.parking.is_some())
            .filter(|_| matches!(client, Socket::Plain(_)))
            .and_then(|after| now.checked_add(after));
        let mut fresh = true;
        loop {
            if let Some(p) = wire::next_packet(&self.cin) {
                if p.seq != 0 {
                    return Err(End::Fatal(
                        errors::OUT_OF_ORDER,
                        "Got packets out of order".into(),
                    ));
                }
                if p.payload_len() == 0 {
                    return Err(End::Fatal(errors::HANDSHAKE, "empty command packet".into()));
                }
                if self.cin.len() >= p.len {
                    return Ok(Some(p.len));
                }
            }
            if !fresh {
                now = Instant::now();
            }
            fresh = false;
            let idle = now.saturating_duration_since(started);
            let idle_timeout = self.ep.idle_client_timeout;
            if idle >= idle_timeout {
                return Err(End::Fatal(
                    errors::IDLE_TIMEOUT,
                    "The client was disconnected by sluice because of inactivity (idle_client_timeout)".into(),
                ));
            }
            if self.hold == Hold::Soft && self.lease.is_some() && idle >= SOFT_HOLD {
                self.hold = Hold::None;
                self.maybe_release();
            }
            // Holding no server connection and nothing of a command here: the buffers go to the
            // worker's spare list now and the next command takes them back. Kept for a second
            // instead, each slow client's command paid a timer wake-up to give them back.
            if self.lease.is_none() && self.cin.is_empty() && self.out.is_empty() {
                self.give_back();
            }
            let mut wait = idle_timeout - idle;
            let watch_held = self.lease.is_some() && idle >= WATCH_HELD_AFTER;
            if self.lease.is_some() && !watch_held {
                wait = wait.min(WATCH_HELD_AFTER - idle);
            }
            if self.hold == Hold::Soft && self.lease.is_some() {
                wait = wait.min(SOFT_HOLD.saturating_sub(idle));
            }
            if let Some(at) = self.park_at.filter(|_| self.holds_nothing()) {
                wait = wait.min(at.saturating_duration_since(now));
            }
            let due = now.checked_add(wait).unwrap_or_else(|| now + NEVER);
            if !self.cin.is_empty() {
                // Part of a command is here: read the rest under the same limits.
                self.cin.reserve(
                    READ_CHUNK
                        .min(MAX_COMMAND - self.cin.len().min(MAX_COMMAND))
                        .max(64),
                );
                match tokio::time::timeout_at(due, client.read_buf(&mut self.cin)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                    Ok(Ok(_)) | Err(_) => continue,
                }
            }
            if self.ep.engine.cluster.drain.is_cancelled() && self.at_boundary() {
                return Err(End::Drained);
            }
            // Nothing pending: wait for bytes before growing the buffer, or an idle client would
            // hold a fresh read buffer for as long as it sleeps. The session's one timer, armed
            // no later than `due`: one armed by an earlier command that fires early is re-armed
            // then, so a client that keeps up costs no timer work per command (a reset was ~500
            // instructions). Parking drops it.
            let drain = self.at_boundary();
            let timer = self
                .idle_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            // (Elapsed: it fired for a limit the loop's top has dealt with since.)
            if timer.deadline() > due || timer.is_elapsed() {
                timer.as_mut().reset(due);
            }
            let watch = self
                .drain_watch
                .get_or_insert_with(|| self.ep.engine.cluster.drain.watch());
            tokio::select! {
                biased;
                r = client.readable() => {
                    if r.is_err() {
                        return Ok(None);
                    }
                }
                () = timer.as_mut() => {
                    now = Instant::now();
                    fresh = true;
                    if now < due {
                        timer.as_mut().reset(due);
                        continue;
                    }
                    if self.park_at.is_some_and(|at| now >= at) && self.holds_nothing() {
                        self.idle_since = Some(started);
                        return Err(End::Park);
                    }
                    continue;
                }
                () = watch.drained(), if drain => continue,
                () = spoke(self.lease.as_mut()), if watch_held => {
                    self.held_spoke();
                    continue;
                }
            }
            let chunk = spare::read_room(&mut self.cin, READ_CHUNK);
            match client.read_some(&mut self.cin, chunk) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// Neither a server connection nor the news of one lost: the session may park.
    fn holds_nothing(&self) -> bool {
        self.lease.is_none() && !self.lost_held
    }

    /// The held connection became readable between commands, the client idle for a second or
    /// more. A server that ends a connection (an idle-in-transaction timeout, a kill) speaks or
    /// closes: the connection goes now, so its pool slot serves other sessions, as PgBouncer's
    /// does; before, it stayed lent until the idle client's next command, and other clients
    /// waited for the borrow timeout
    /// (`held::mariadb_ending_an_idle_transaction_frees_its_pool_slot`).
    fn held_spoke(&mut self) {
        // Else the readiness was left from the last reply, or spurious: still silent and open.
        if self.drop_held_if_spoke() {
            self.lost_held = true;
        }
    }

    /// Gives the session's buffers to the worker's spare list: between commands without a server
    /// connection, and when it closes (the next session, or the next login of a connection
    /// storm, takes them).
    pub(super) fn give_back(&mut self) {
        spare::give(std::mem::take(&mut self.cin));
        spare::give_vec(std::mem::take(&mut self.out));
        spare::give_vec(std::mem::take(&mut self.scratch));
    }
}
