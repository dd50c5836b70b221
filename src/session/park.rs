//! Parked sessions: plain-TCP clients idle long enough to give up their task wait here, their
//! sockets watched by one thread's epoll, until they speak, leave, reach their idle timeout or
//! sluice drains; then their session's task is spawned again where it stopped.
//!
//! Why a thread of its own rather than tasks: an idle session in a task costs the task's
//! allocation (the relay's largest await state) plus tokio's registration of its socket, a
//! `ScheduledIo` aligned to 128 bytes. Parked, it costs its boxed state and one slot here; the
//! socket leaves tokio's epoll for this one. PgBouncer keeps an idle client in a few hundred
//! bytes; this is how sluice does the same with a task per busy session.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// A parked session's state: brings the session back in a task of its own.
pub trait Resume: Send + 'static {
    /// Called on the lot's thread, inside the runtime's context: spawns the session's task,
    /// which keeps `token` so a drain waits for it.
    fn resume(self: Box<Self>, client: TcpStream, token: TaskTrackerToken);
}

/// What the lot needs of an engine's session (its state boxed with what it keeps to its end).
pub trait Parkable: Send + Sized + 'static {
    /// Runs the session again on its client, from its idle wait, until it ends or parks.
    fn live(self: Box<Self>, client: tokio::net::TcpStream) -> impl Future<Output = ()> + Send;
    /// Counts the session closed: it could neither park nor resume.
    fn closed(&self);
    /// When its idle timeout falls due.
    fn idle_deadline(&self) -> Option<Instant>;
}

impl<S: Parkable> Resume for S {
    fn resume(self: Box<Self>, client: TcpStream, token: TaskTrackerToken) {
        tokio::spawn(async move {
            let _token = token;
            match tokio::net::TcpStream::from_std(client) {
                Ok(tcp) => self.live(tcp).await,
                Err(e) => {
                    tracing::warn!(error = %e, "a parked session could not resume; closed");
                    self.closed();
                }
            }
        });
    }
}

/// Parks `session`, whose run stopped idle on `client`; without a lot (or if its socket
/// cannot leave the runtime) the session ends.
pub fn park<S: Parkable>(
    parking: Option<&Parking>,
    session: Box<S>,
    client: tokio::net::TcpStream,
) {
    let Some(parking) = parking else {
        return session.closed();
    };
    let deadline = session.idle_deadline();
    match client.into_std() {
        // Refused only while the app is being dropped: the session ends with it.
        Ok(client) => drop(parking.park(client, session, deadline)),
        Err(e) => {
            tracing::warn!(error = %e, "an idle session could not leave the runtime; closed");
            session.closed();
        }
    }
}

const WAKER: Token = Token(usize::MAX);

struct Parked {
    client: TcpStream,
    session: Box<dyn Resume>,
    /// The session's idle timeout; `None`: it has none.
    deadline: Option<Instant>,
    token: TaskTrackerToken,
}

struct Shared {
    waker: Waker,
    incoming: Mutex<Vec<Parked>>,
    tracker: TaskTracker,
    /// Every parked session goes back to its task, and new ones at once: sessions end at
    /// their boundary, which for a parked one is now.
    drained: AtomicBool,
    stopped: AtomicBool,
    /// How many sessions are parked now (the metric).
    parked: AtomicUsize,
}

/// What sessions park through; cheap to clone.
#[derive(Clone)]
pub struct Parking(Arc<Shared>);

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parking")
    }
}

/// The lot's owner: dropping it stops the thread, which closes what is still parked.
#[derive(Debug)]
pub struct Lot {
    parking: Parking,
}

impl Lot {
    /// Starts the lot's thread. Must run inside a tokio runtime: resumed sessions are spawned
    /// on it and tracked by `tracker`.
    pub fn start(tracker: TaskTracker) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            waker,
            incoming: Mutex::new(Vec::new()),
            tracker,
            drained: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Handle::current();
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("sluice-park".into())
            .spawn(move || {
                let _context = runtime.enter();
                Watch::new(poll, thread).run();
            })?;
        Ok(Self {
            parking: Parking(shared),
        })
    }

    pub fn parking(&self) -> Parking {
        self.parking.clone()
    }
}

impl Drop for Lot {
    fn drop(&mut self) {
        self.parking.0.stopped.store(true, Ordering::Release);
        let _ = self.parking.0.waker.wake();
    }
}

impl Parking {
    /// Parks `session`, whose client is `client` (taken out of tokio already). `Err` gives both
    /// back when the lot no longer runs.
    #[allow(clippy::type_complexity)]
    pub fn park(
        &self,
        client: TcpStream,
        session: Box<dyn Resume>,
        deadline: Option<Instant>,
    ) -> Result<(), (TcpStream, Box<dyn Resume>)> {
        if self.0.stopped.load(Ordering::Acquire) {
            return Err((client, session));
        }
        let parked = Parked {
            client,
            session,
            deadline,
            token: self.0.tracker.token(),
        };
        self.0
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(parked);
        let _ = self.0.waker.wake();
        Ok(())
    }

    /// Sessions parked now.
    pub fn parked(&self) -> usize {
        self.0.parked.load(Ordering::Relaxed)
    }

    /// Sends every parked session back to its task, now and from now on.
    pub fn drain(&self) {
        self.0.drained.store(true, Ordering::Release);
        let _ = self.0.waker.wake();
    }
}

/// The thread's side: the parked sessions by slot, and their deadlines in time order.
struct Watch {
    poll: Poll,
    shared: Arc<Shared>,
    slots: Vec<Option<Parked>>,
    free: Vec<usize>,
    live: usize,
    /// (deadline, slot); an entry whose slot has moved on is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Watch {
    fn new(poll: Poll, shared: Arc<Shared>) -> Self {
        Self {
            poll,
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            deadlines: BinaryHeap::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.deadlines.peek().map(|Reverse((at, _))| {
                // Rounded up, so a session woken for its deadline finds it passed.
                at.saturating_duration_since(Instant::now()) + Duration::from_millis(1)
            });
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "parked sessions: epoll failed; resuming them all");
                self.shared.stopped.store(true, Ordering::Release);
                self.take_incoming(true);
                self.resume_all();
                return;
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return;
            }
            for event in &events {
                if event.token() != WAKER {
                    self.resume(event.token().0);
                }
            }
            let drained = self.shared.drained.load(Ordering::Acquire);
            self.take_incoming(drained);
            if drained {
                self.resume_all();
            }
            self.expire();
            self.shared.parked.store(self.live, Ordering::Relaxed);
        }
    }

    fn take_incoming(&mut self, resume_now: bool) {
        let incoming = std::mem::take(
            &mut *self
                .shared
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for parked in incoming {
            if resume_now {
                parked.session.resume(parked.client, parked.token);
                continue;
            }
            let slot = self.free.pop().unwrap_or(self.slots.len());
            let fd = parked.client.as_raw_fd();
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
                .is_err()
            {
                if slot < self.slots.len() {
                    self.free.push(slot);
                }
                parked.session.resume(parked.client, parked.token);
                continue;
            }
            if let Some(at) = parked.deadline {
                self.deadlines.push(Reverse((at, slot)));
            }
            if slot == self.slots.len() {
                self.slots.push(Some(parked));
            } else {
                self.slots[slot] = Some(parked);
            }
            self.live += 1;
        }
    }

    fn resume(&mut self, slot: usize) {
        let Some(parked) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let fd = parked.client.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        self.free.push(slot);
        self.live -= 1;
        parked.session.resume(parked.client, parked.token);
    }

    fn resume_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.resume(slot);
        }
        self.deadlines.clear();
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, slot))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let due = self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.deadline == Some(at));
            if due {
                self.resume(slot);
            }
        }
        // Sessions that woke before their deadline leave entries behind: sweep them out
        // before they outnumber the parked ones.
        if self.deadlines.len() > 2 * self.live + 64 {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((at, slot))| {
                slots
                    .get(*slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|p| p.deadline == Some(*at))
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use tokio::sync::mpsc;

    use super::*;

    /// Reports its name when resumed, with whether its client has bytes waiting.
    struct Probe(
        &'static str,
        mpsc::UnboundedSender<(&'static str, TcpStream)>,
    );

    impl Resume for Probe {
        fn resume(self: Box<Self>, client: TcpStream, token: TaskTrackerToken) {
            drop(token);
            let _ = self.1.send((self.0, client));
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<(&'static str, TcpStream)>) -> &'static str {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a parked session was resumed")
            .unwrap()
            .0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sessions_resume_on_bytes_hang_up_deadline_and_drain_only() {
        let tracker = TaskTracker::new();
        let lot = Lot::start(tracker.clone()).unwrap();
        let parking = lot.parking();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut peers = Vec::new();
        for (name, deadline) in [
            ("speaks", None),
            ("hangs up", None),
            (
                "times out",
                Some(Instant::now() + Duration::from_millis(300)),
            ),
            ("sleeps", Some(Instant::now() + Duration::from_secs(3600))),
            ("drained", None),
        ] {
            let (ours, theirs) = pair();
            peers.push(theirs);
            let parked = parking.park(ours, Box::new(Probe(name, tx.clone())), deadline);
            assert!(parked.is_ok());
        }
        assert_eq!(tracker.len(), 5, "a parked session counts as a live task");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(parking.parked(), 5);
        assert!(rx.try_recv().is_err(), "nobody woke without a reason");

        peers[0].write_all(b"Q").unwrap();
        assert_eq!(next(&mut rx).await, "speaks");
        peers[1].shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(next(&mut rx).await, "hangs up");
        assert_eq!(next(&mut rx).await, "times out");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "the others stay parked");

        parking.drain();
        let mut rest = [next(&mut rx).await, next(&mut rx).await];
        rest.sort_unstable();
        assert_eq!(rest, ["drained", "sleeps"]);
        // After a drain, a session that parks goes straight back.
        let (ours, _theirs) = pair();
        assert!(
            parking
                .park(ours, Box::new(Probe("late", tx)), None)
                .is_ok()
        );
        assert_eq!(next(&mut rx).await, "late");
        assert_eq!(tracker.len(), 0);

        drop(lot);
        let (ours, _theirs) = pair();
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(
            parking
                .park(ours, Box::new(Probe("stopped", tx)), None)
                .is_err()
        );
    }

    #[test]
    fn stale_deadlines_are_swept_out() {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), WAKER).unwrap();
        let shared = Arc::new(Shared {
            waker,
            incoming: Mutex::new(Vec::new()),
            tracker: TaskTracker::new(),
            drained: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
        });
        let mut watch = Watch::new(poll, shared);
        let far = Instant::now() + Duration::from_secs(3600);
        for i in 0..1000u64 {
            watch
                .deadlines
                .push(Reverse((far + Duration::from_millis(i), 0)));
        }
        watch.expire();
        assert!(watch.deadlines.is_empty(), "{}", watch.deadlines.len());
    }
}
