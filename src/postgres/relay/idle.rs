//! The idle wait of a session: no server connection held, the client's next message awaited,
//! buffers given back at once, parking after a while, the idle timeout and the drain's wake-up.

use tokio::time::{Duration, Instant};

use super::listening::arrived;
use super::{MAX_BUFFERED_MESSAGE, NEVER, READ_CHUNK, STREAM_CHUNK, Session};
use crate::postgres::wire;
use crate::session::spare;
use crate::tls::Socket;

/// How long a session may sit idle: until it is closed, and until it parks (`None`: never).
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    pub timeout: Duration,
    pub park_after: Option<Duration>,
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

/// Why `serve` stopped: the session ended (with a FATAL error to send, if any), or parks.
pub(super) enum Stop {
    End(Option<(&'static str, String)>),
    Park,
}

/// How an idle wait ended.
pub(super) enum Idle {
    /// A whole message (or a streamable part) is buffered.
    Message,
    /// The client left or sent Terminate.
    Gone,
    /// Notifications arrived for the listening session.
    Notified,
    TimedOut,
    /// sluice is draining and the client had nothing pending.
    Drained,
    /// Idle long enough over plain TCP: the session waits in the lot, without its task.
    Park,
}

impl Session {
    /// Waits for the client's next message without a server connection.
    pub(super) async fn wait_idle(&mut self, client: &mut Socket) -> Idle {
        let started = self.clock.take().unwrap_or_else(Instant::now);
        // A resumed session's idle time counts from before it parked; its next park from now,
        // since its socket's readiness reaches the runtime only after the first poll. Right
        // after a transaction, "now" is its last ReadyForQuery's clock read.
        let since = self.idle_since.take().unwrap_or(started);
        // Notifications that came while the last flush or transaction took the wake-up.
        if self.inbox_waiting() {
            self.idle_since = Some(since);
            return Idle::Notified;
        }
        loop {
            // Borrow only for a whole message: a client that sends a header and stalls must not
            // hold a server connection (large CopyData streams; oversized ones fail at once).
            if self.cin.len() >= wire::FRAME_HEADER_LEN {
                let declared = wire::declared_len(&self.cin);
                let whole = self.cin.len() >= declared;
                let streams =
                    self.cin[0] == wire::frontend::COPY_DATA && self.cin.len() >= STREAM_CHUNK;
                if whole || streams || declared > MAX_BUFFERED_MESSAGE {
                    return if self.cin[0] == wire::frontend::TERMINATE {
                        Idle::Gone
                    } else {
                        Idle::Message
                    };
                }
            }
            if self.route.cluster.drain.is_cancelled() && self.cin.is_empty() {
                return Idle::Drained;
            }
            // Nothing owed to the client and no server held: the buffers go to the worker's
            // spare list now and the next message takes them back (a few pointer moves). Kept
            // for a second instead, each slow client's transaction paid a timer wake-up to
            // give them back, and ~600 buffers were out at 1,000 clients at 200 tps, far past
            // the spare list (callgrind: 13,841 instructions per such transaction).
            self.shrink();
            // A configured timeout beyond what the clock can add means "never".
            let timeout_at = since
                .checked_add(self.idle.timeout)
                .unwrap_or_else(|| since + NEVER);
            // Only a session waiting between messages parks or drains; part of a message is
            // read on under the idle timeout alone.
            let between = self.cin.is_empty();
            // Long idle: a plain client idle past `park_after` parks.
            let park_after = self
                .idle
                .park_after
                .filter(|_| between)
                .filter(|_| self.route.cluster.parking.is_some())
                .filter(|_| matches!(client, Socket::Plain(_)))
                .filter(|_| self.listening.is_none());
            let wake_at = match park_after {
                Some(after) => started
                    .checked_add(after)
                    .map_or(timeout_at, |at| timeout_at.min(at)),
                None => timeout_at,
            };
            // The session's one timer, armed no later than this wait's end: one armed by an
            // earlier wait that fires early is moved on then, so a client that keeps up costs no
            // timer work per message (a reset was ~500 instructions). Parking drops it.
            let timer = self
                .idle_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
            if timer.deadline() > wake_at {
                timer.as_mut().reset(wake_at);
            }
            let drain = self
                .drain_watch
                .get_or_insert_with(|| self.route.cluster.drain.watch());
            tokio::select! {
                biased;
                r = client.readable() => {
                    if r.is_err() {
                        return Idle::Gone;
                    }
                }
                () = timer.as_mut() => {
                    if Instant::now() < wake_at {
                        timer.as_mut().reset(wake_at);
                        continue;
                    }
                    if wake_at >= timeout_at {
                        return Idle::TimedOut;
                    }
                    self.idle_since = Some(since);
                    return Idle::Park;
                }
                () = drain.drained(), if between => continue,
                () = arrived(self.listening.as_deref()) => return Idle::Notified,
            }
            // The transaction's buffers with the read's: one visit to the spare list (part of a
            // message kept `cin`; the borrow takes the others then).
            if self.cin.capacity() == 0 {
                spare::ensure_all([&mut self.cin, &mut self.cout, &mut self.sout]);
            }
            let chunk = spare::read_room(&mut self.cin, READ_CHUNK);
            match client.read_some(&mut self.cin, chunk) {
                Ok(0) => return Idle::Gone,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Idle::Gone,
            }
        }
    }

    /// A session between messages holds no buffers (a part of a message stays in `cin`): what
    /// makes thousands of idle clients cheap.
    fn shrink(&mut self) {
        if self.cin.is_empty() {
            spare::give_all([&mut self.cin, &mut self.cout, &mut self.sout]);
        } else {
            spare::give_all([&mut self.cout, &mut self.sout]);
        }
    }

    /// A closing session's buffers go to the next session: in a connection storm each login
    /// took them from the allocator and each close gave them back, a tenth of a connection's
    /// instructions (callgrind, `pgbench -C`).
    pub(super) fn give_back(&mut self) {
        spare::give_all([&mut self.cin, &mut self.cout, &mut self.sout]);
    }
}
