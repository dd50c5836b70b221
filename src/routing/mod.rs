//! Which instance a transaction goes to: the topology snapshot the probes publish, the writer
//! for `read_write` endpoints, the least-busy healthy reader for `read_only` ones.
//!
//! Routing reads the snapshot without a lock (an `ArcSwap` load); a borrow that finds no
//! usable instance waits for the next snapshot instead of failing, up to its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::errors::BorrowError;
use crate::pool::{Lease, Pool, PoolSettings, PooledConnection};
pub use crate::topology::{MemberView, Topology};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// A target group as sessions see it: the engine's pools on each instance (`P`) and the router
/// that says which instance a transaction goes to.
#[derive(Debug)]
pub struct Cluster<P> {
    pub router: Arc<Router>,
    /// By instance, in the order of the target group's `instances`.
    pub members: Box<[Arc<P>]>,
    pub settings: PoolSettings,
    /// Cancelled when sluice drains (SIGTERM, after the grace): sessions between transactions
    /// end at the boundary. Process-wide; every cluster holds a clone.
    pub drain: crate::session::drain::Drain,
    /// The group's request-side series.
    pub metrics: Arc<crate::metrics::GroupMetrics>,
    /// Pins and unpins by reason: process-wide, every cluster holds a clone.
    pub pin_counts: Arc<crate::session::PinCounts>,
    /// Where idle plain-TCP sessions wait without a task; `None` (tests, fuzzing): they wait
    /// in their task.
    pub parking: Option<crate::session::park::Parking>,
}

impl<P> Cluster<P> {
    /// The instance for `want`, waiting for one up to the borrow timeout.
    pub async fn route(&self, want: Want) -> Result<usize, BorrowError> {
        let started = Instant::now();
        self.router
            .route(want, started + self.settings.borrow_timeout)
            .await
            .ok_or(BorrowError::NoInstance {
                role: want.role(),
                waited: started.elapsed(),
            })
    }

    /// An idle connection of `pool` if it has one: the steady state, with no future and no
    /// clock read of its own (`now` is the caller's; it counts as a borrow that did not wait).
    pub fn take_idle<C: PooledConnection>(&self, pool: &Pool<C>, now: Instant) -> Option<Lease<C>> {
        let lease = pool.try_borrow_idle(now)?;
        self.metrics.connection_requests.inc();
        self.metrics.borrow_latency.observe(Duration::ZERO);
        Some(lease)
    }

    /// One borrow from `pool`, on instance `member`, for a session routing its transaction.
    /// `Ok(None)`: route again, because the instance was drained while the borrow waited, or
    /// could not be reached (its probe is asked to run now) and `deadline`, set at the first
    /// such failure, has not passed.
    pub async fn borrow_on<C: PooledConnection>(
        &self,
        pool: &Pool<C>,
        member: usize,
        deadline: &mut Option<Instant>,
    ) -> Result<Option<Lease<C>>, BorrowError> {
        let result = match self.take_idle(pool, Instant::now()) {
            Some(lease) => Ok(lease),
            None => {
                self.metrics.connection_requests.inc();
                let asked = Instant::now();
                let result = pool.borrow().await;
                if result.is_ok() {
                    self.metrics.borrow_latency.observe(asked.elapsed());
                }
                result
            }
        };
        match result {
            Ok(lease) => Ok(Some(lease)),
            Err(BorrowError::Closed { .. }) => Ok(None),
            Err(BorrowError::Connect(e)) if e.retry() == crate::errors::Retry::Elsewhere => {
                let timeout = self.settings.borrow_timeout;
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                if Instant::now() >= deadline {
                    return Err(BorrowError::Connect(e));
                }
                tracing::info!(pool = %pool.name(), error = %e, "instance unreachable; routing again");
                self.router.after_unreachable(member, deadline).await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// What a transaction needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Writer,
    /// A healthy reader within the lag limit; the writer too when `fallback` is set.
    Reader {
        fallback: bool,
    },
    /// A `read_write_split` endpoint: the session decides per transaction; routed alone, the
    /// writer.
    Split,
}

impl Want {
    /// How errors name what a borrow waited for.
    pub fn role(self) -> &'static str {
        match self {
            Self::Writer | Self::Split => "writer",
            Self::Reader { .. } => "reader",
        }
    }
}

/// The routing state of one target group, shared by its endpoints and its probes.
#[derive(Debug)]
pub struct Router {
    topology: ArcSwap<Topology>,
    changed: Notify,
    /// Borrowed connections per instance (kept by the pools).
    outstanding: Box<[Arc<AtomicUsize>]>,
    max_lag: Duration,
    /// Rotates the start of the reader scan, so equally idle readers share the work.
    turn: AtomicUsize,
    /// Wakes an instance's probe early: a borrow could not connect to it.
    nudges: Box<[Notify]>,
}

impl Router {
    pub fn new(outstanding: Box<[Arc<AtomicUsize>]>, max_lag: Duration) -> Self {
        Self {
            topology: ArcSwap::from_pointee(Topology::default()),
            changed: Notify::new(),
            nudges: outstanding.iter().map(|_| Notify::new()).collect(),
            outstanding,
            max_lag,
            turn: AtomicUsize::new(0),
        }
    }

    /// A router whose single instance is the writer from the start, for unit tests that need an
    /// endpoint without probes.
    #[cfg(any(test, fuzzing))]
    pub fn fixed_writer(outstanding: Arc<AtomicUsize>) -> Self {
        let r = Self::new(Box::new([outstanding]), Duration::MAX);
        r.publish(Topology {
            epoch: 1,
            writer: Some(0),
            failovers: 0,
            members: Box::new([MemberView {
                healthy: true,
                writable: true,
                lag: Some(Duration::ZERO),
                position: None,
            }]),
        });
        r
    }

    pub fn publish(&self, topology: Topology) {
        self.topology.store(Arc::new(topology));
        self.changed.notify_waiters();
    }

    pub fn snapshot(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// The instance for `want` now, if any.
    pub fn pick(&self, want: Want) -> Option<usize> {
        self.pick_in(&self.topology.load(), want)
    }

    fn pick_in(&self, t: &Topology, want: Want) -> Option<usize> {
        match want {
            Want::Writer | Want::Split => t.writer,
            Want::Reader { fallback } => {
                self.reader(t, None)
                    .or(if fallback { t.writer } else { None })
            }
        }
    }

    /// A usable reader with the fewest outstanding borrows that has replayed up to `at_least`.
    pub fn reader(&self, t: &Topology, at_least: Option<u64>) -> Option<usize> {
        let n = t.members.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let m = &t.members[i];
            let usable = m.healthy
                && !m.writable
                && t.writer != Some(i)
                && m.lag.is_none_or(|l| l <= self.max_lag)
                && at_least.is_none_or(|p| m.position.is_some_and(|have| have >= p));
            if !usable {
                continue;
            }
            let load = self.outstanding[i].load(Ordering::Relaxed);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The instance for `want`, waiting for one up to `deadline`.
    pub async fn route(&self, want: Want, deadline: Instant) -> Option<usize> {
        self.until(deadline, |t| self.pick_in(t, want)).await
    }

    /// After a borrow could not reach instance `i`: probe it now and wait for the verdict (or
    /// any other news) before routing again.
    pub async fn after_unreachable(&self, i: usize, deadline: Instant) {
        let epoch = self.topology.load().epoch;
        if let Some(n) = self.nudges.get(i) {
            n.notify_one();
        }
        let soon = Instant::now() + Duration::from_millis(250);
        self.until(deadline.min(soon), |t| (t.epoch > epoch).then_some(i))
            .await;
    }

    /// Resolves when instance `i`'s probe was asked to run early.
    pub async fn nudged(&self, i: usize) {
        match self.nudges.get(i) {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }

    /// A reader that has replayed up to `position`, waiting up to `deadline` for one.
    pub async fn caught_up_reader(&self, position: u64, deadline: Instant) -> Option<usize> {
        self.until(deadline, |t| self.reader(t, Some(position)))
            .await
    }

    /// The first answer `found` gives on the current snapshot or the ones published after it,
    /// up to `deadline`.
    async fn until(
        &self,
        deadline: Instant,
        found: impl Fn(&Topology) -> Option<usize>,
    ) -> Option<usize> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a snapshot published in between is not missed.
            changed.as_mut().enable();
            if let Some(i) = found(&self.topology.load()) {
                return Some(i);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
