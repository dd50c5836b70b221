//! The per-instance state behind all pools of one instance: the cap, idle lists and FIFO waiters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::PooledConnection;
use crate::errors::ConnectError;

mod closing;
mod expiry;
mod fleet;
mod logins;

use closing::hold_closing;
use fleet::{Fleet, fleet_wait};
pub use fleet::{FleetSample, FleetView};
pub(super) use logins::SLOW_LOGIN;
use logins::{LOGINS_AT_ONCE, grant_slot, reserve_slot};

/// How many server connections an instance may have open across all its pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Absolute(usize),
    /// A percentage of the instance's own `max_connections`, learned from the first connection;
    /// until then one connection at a time is allowed.
    Percent(u32),
}

pub(super) struct Pooled<C> {
    /// Boxed: a connection moves between the idle list, the lease and a waiter's grant on
    /// every borrow, and a move of the box is a pointer, not a copy of the whole connection
    /// (callgrind: copies of the unboxed one were about 2 % of a transaction's instructions).
    pub(super) conn: Box<C>,
    pub(super) created: Instant,
    /// The instance's drain generation when the connection was opened; an older one is closed
    /// when it comes back.
    pub(super) generation: u64,
}

impl<C> Pooled<C> {
    pub(super) fn new(conn: C, generation: u64) -> Self {
        Self {
            conn: Box::new(conn),
            created: Instant::now(),
            generation,
        }
    }
}

pub(super) enum Grant<C> {
    Conn(Pooled<C>),
    /// A slot under the cap was reserved for the waiter; it must connect.
    Slot,
    /// The server refused the pool's login, and the pool holds no connection to wait for.
    Refused(ConnectError),
    /// The borrow timeout passed first.
    Expired,
}

pub(super) enum Take<C> {
    Idle(Pooled<C>),
    Connect,
    Wait(oneshot::Receiver<Grant<C>>),
}

struct Idle<C> {
    conn: Pooled<C>,
    since: Instant,
}

struct Waiter<C> {
    tx: oneshot::Sender<Grant<C>>,
    since: Instant,
    /// When it is told [`Grant::Expired`]; none for a borrower whose own login bounds its wait.
    deadline: Option<Instant>,
    /// A borrower whose own login runs: it takes a released connection, never a slot.
    own_login: bool,
}

impl<C> Waiter<C> {
    fn new(
        since: Instant,
        deadline: Option<Instant>,
        own_login: bool,
    ) -> (Self, oneshot::Receiver<Grant<C>>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                tx,
                since,
                deadline,
                own_login,
            },
            rx,
        )
    }
}

#[derive(Default)]
struct PoolState<C> {
    idle: VecDeque<Idle<C>>,
    waiters: VecDeque<Waiter<C>>,
    open: usize,
    /// Slots whose login runs (or is about to): part of `open`.
    connecting: usize,
}

struct State<C> {
    limit: Limit,
    max: usize,
    max_idle_percent: u32,
    /// The server's own `max_connections`, once learned (what a percent cap is of).
    server_max: Option<usize>,
    open: usize,
    generation: u64,
    pools: Vec<PoolState<C>>,
    /// This process's share of a fleet budget, when its target group has a fleet: it caps
    /// `max` below what `limit` allows.
    fleet: Option<Fleet>,
    /// Connections closed but not yet let go by the server: they still count against the
    /// cap, as the server still counts them.
    closing: usize,
    /// When the expiry task wakes next; none while no task runs.
    expiry_at: Option<Instant>,
}

/// One database instance as the pools see it.
pub struct Instance<C> {
    addr: String,
    state: Mutex<State<C>>,
    /// Leases out now: what reader balancing compares (read without the lock).
    borrowed: Arc<AtomicUsize>,
    /// The most leases out at once since a fleet member last sampled.
    borrowed_peak: AtomicUsize,
    /// The instance's own `Arc` (set when a pool is added): what a close confirmed later
    /// gives its slot to.
    this: std::sync::OnceLock<std::sync::Weak<Instance<C>>>,
    /// Server logins that failed, once each however many sessions heard of it: the target
    /// group's `sluice_database_connections_setup_failed`.
    failed_logins: Counter,
    /// Wakes the expiry task early: a waiter's deadline comes before the one it sleeps for.
    expiry_wake: Arc<tokio::sync::Notify>,
}

impl<C> std::fmt::Debug for Instance<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Counts for one instance, across its pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStats {
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
    /// With a fleet: its view and the borrows its budget made wait.
    pub fleet: Option<(FleetView, u64)>,
}

impl<C: PooledConnection> Instance<C> {
    pub fn new(addr: String, limit: Limit, max_idle_percent: u32) -> Self {
        let max = match limit {
            Limit::Absolute(n) => n.max(1),
            Limit::Percent(_) => 1,
        };
        Self {
            addr,
            state: Mutex::new(State {
                limit,
                max,
                max_idle_percent,
                server_max: None,
                open: 0,
                generation: 0,
                pools: Vec::new(),
                fleet: None,
                closing: 0,
                expiry_at: None,
            }),
            borrowed: Arc::new(AtomicUsize::new(0)),
            borrowed_peak: AtomicUsize::new(0),
            this: std::sync::OnceLock::new(),
            failed_logins: Counter::default(),
            expiry_wake: Arc::default(),
        }
    }

    /// Counts the instance's failed server logins into `counter` (its target group's).
    pub fn counting_failed_logins(mut self, counter: Counter) -> Self {
        self.failed_logins = counter;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The count of leases out, shared with routing.
    pub fn borrowed(&self) -> &Arc<AtomicUsize> {
        &self.borrowed
    }

    pub(super) fn lease_taken(&self) {
        let n = self.borrowed.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.borrowed_peak.load(Ordering::Relaxed) {
            self.borrowed_peak.fetch_max(n, Ordering::Relaxed);
        }
    }

    pub(super) fn lease_returned(&self) {
        self.borrowed.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Closes every idle connection, marks leased ones to be closed when they come back, and
    /// ends every wait (those borrowers route again): the instance went down or lost its role.
    pub fn drain(&self) -> usize {
        let mut doomed = Vec::new();
        let waiters = {
            let mut st = self.lock();
            let st = &mut *st;
            st.generation += 1;
            let mut waiters = Vec::new();
            for pool in &mut st.pools {
                pool.open -= pool.idle.len();
                doomed.extend(pool.idle.drain(..).map(|i| i.conn));
                waiters.extend(pool.waiters.drain(..));
            }
            st.open -= doomed.len();
            hold_closing(st, doomed.len());
            waiters
        };
        drop(waiters);
        let n = doomed.len();
        self.dispose(doomed);
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<C>> {
        // A panic while holding this lock leaves only counters behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add_pool(self: &Arc<Self>) -> usize {
        self.know_self();
        let mut st = self.lock();
        st.pools.push(PoolState {
            idle: VecDeque::new(),
            waiters: VecDeque::new(),
            open: 0,
            connecting: 0,
        });
        st.pools.len() - 1
    }

    /// Whether the cap still waits for the instance's `max_connections`.
    pub fn needs_server_max(&self) -> bool {
        let st = self.lock();
        matches!(st.limit, Limit::Percent(_)) && st.server_max.is_none() && st.open <= 1
    }

    /// Sets the cap from the instance's `max_connections` and grants slots to waiters.
    pub fn learn_server_max(&self, server_max: usize) {
        let mut st = self.lock();
        st.server_max = Some(server_max);
        st.max = effective_max(&st);
        while used(&st) < st.max && grant_slot(&mut st) {}
    }

    /// Applies a reloaded cap. A higher one serves waiting borrowers at once; above a lower
    /// one, idle connections close now and lent ones as they come back (`put`).
    pub fn reconfigure(&self, limit: Limit, max_idle_percent: u32) {
        let mut doomed = Vec::new();
        {
            let mut st = self.lock();
            st.limit = limit;
            st.max_idle_percent = max_idle_percent;
            resize(&mut st, &mut doomed);
        }
        self.dispose(doomed);
    }

    /// The server's `max_connections`, once a probe or a first connection learned it.
    pub fn server_max(&self) -> Option<usize> {
        self.lock().server_max
    }

    pub fn stats(&self) -> InstanceStats {
        let st = self.lock();
        InstanceStats {
            max: st.max,
            open: st.open,
            idle: st.pools.iter().map(|p| p.idle.len()).sum(),
            waiting: st.pools.iter().map(|p| p.waiters.len()).sum(),
            fleet: st.fleet.map(|f| (f.view, f.waits)),
        }
    }

    pub(super) fn take_idle(
        &self,
        index: usize,
        max_lifetime: Duration,
        now: Instant,
    ) -> Option<Pooled<C>> {
        let mut doomed = Vec::new();
        let found = {
            let mut st = self.lock();
            let st = &mut *st;
            let found = pop_live_idle(st, index, max_lifetime, now, &mut doomed);
            hold_closing(st, doomed.len());
            found
        };
        self.dispose(doomed);
        found
    }

    /// An idle connection, a slot to connect in, or a place in the queue that is told
    /// [`Grant::Expired`] at `deadline`.
    pub(super) fn take(&self, index: usize, max_lifetime: Duration, deadline: Instant) -> Take<C> {
        let mut doomed = Vec::new();
        let mut watch = expiry::Watch::Running;
        let take = {
            let mut st = self.lock();
            let st = &mut *st;
            let now = Instant::now();
            let found = pop_live_idle(st, index, max_lifetime, now, &mut doomed);
            // Expired ones still count until the server has let them go.
            hold_closing(st, doomed.len());
            if let Some(conn) = found {
                Take::Idle(conn)
            } else if used(st) < st.max && st.pools[index].connecting < LOGINS_AT_ONCE {
                reserve_slot(st, index);
                Take::Connect
            } else if used(st) < st.max {
                // Logins at their limit: wait for the first connection ready.
                let (waiter, rx) = Waiter::new(now, Some(deadline), false);
                st.pools[index].waiters.push_back(waiter);
                watch = expiry::note(st, deadline);
                Take::Wait(rx)
            } else {
                let mut by_budget = true;
                if let Some(victim) = oldest_idle_elsewhere(st, index) {
                    // Cap reached but a sibling pool idles: its connection makes room for
                    // ours, once the server has let it go (the close grants the slot).
                    if let Some(idle) = st.pools[victim].idle.pop_front() {
                        doomed.push(idle.conn);
                        st.pools[victim].open -= 1;
                        st.open -= 1;
                        hold_closing(st, 1);
                        by_budget = false;
                    }
                }
                let (waiter, rx) = Waiter::new(now, Some(deadline), false);
                st.pools[index].waiters.push_back(waiter);
                watch = expiry::note(st, deadline);
                if by_budget && st.fleet.is_some() {
                    fleet_wait(st);
                }
                Take::Wait(rx)
            }
        };
        self.watch(watch);
        self.dispose(doomed);
        take
    }

    pub(super) fn put(
        &self,
        index: usize,
        conn: Pooled<C>,
        reusable: bool,
        max_lifetime: Duration,
        now: Instant,
    ) {
        let mut doomed = None;
        // `now` (the caller's clock read) checks the lifetime and stamps the idle time.
        {
            let mut st = self.lock();
            let st = &mut *st;
            let keep = reusable
                && conn.generation == st.generation
                && now.saturating_duration_since(conn.created) < max_lifetime
                && used(st) <= st.max
                && !waited_longer_elsewhere(st, index);
            if keep {
                let mut conn = conn;
                loop {
                    let Some(w) = st.pools[index].waiters.pop_front() else {
                        st.pools[index].idle.push_back(Idle { conn, since: now });
                        break;
                    };
                    match w.tx.send(Grant::Conn(conn)) {
                        Ok(()) => break,
                        // That waiter timed out; try the next one.
                        Err(Grant::Conn(back)) => conn = back,
                        Err(_) => unreachable!("sent a connection"),
                    }
                }
            } else {
                st.pools[index].open -= 1;
                st.open -= 1;
                doomed = Some(conn);
                hold_closing(st, 1);
                while used(st) < st.max && grant_slot(st) {}
            }
        }
        if let Some(p) = doomed {
            self.dispose(vec![p]);
        }
    }

    /// Closes idle connections past their idle timeout or lifetime, and those beyond the idle cap.
    /// Beyond the idle cap a connection closes only once idle for half of `idle_timeout`:
    /// closing the surplus at every trim, as soon as a burst had passed, made the next burst
    /// open new server connections and wait for their logins (RDS Proxy likewise counts a
    /// connection as idle after five minutes without activity, half its ten-minute default).
    pub fn trim(&self, idle_timeout: Duration, max_lifetime: Duration) -> usize {
        let surplus_after = idle_timeout / 2;
        let mut doomed = Vec::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            let max_idle = (st.max * st.max_idle_percent as usize).div_ceil(100);
            let mut idle_total: usize = st.pools.iter().map(|p| p.idle.len()).sum();
            for pool in &mut st.pools {
                // Oldest idle first: the front of the deque, since reuse takes from the back.
                while let Some(front) = pool.idle.front() {
                    let idle_for = front.since.elapsed();
                    let stale = idle_for >= idle_timeout
                        || front.conn.created.elapsed() >= max_lifetime
                        || (idle_total > max_idle && idle_for >= surplus_after);
                    if !stale {
                        break;
                    }
                    if let Some(idle) = pool.idle.pop_front() {
                        doomed.push(idle.conn);
                    }
                    pool.open -= 1;
                    idle_total -= 1;
                }
            }
            st.open -= doomed.len();
            hold_closing(st, doomed.len());
            while used(st) < st.max && grant_slot(st) {}
        }
        let n = doomed.len();
        self.dispose(doomed);
        n
    }
}

/// The cap `limit` asks for: at least one connection (a percent waits for the server's
/// `max_connections` with one).
fn limit_max<C>(st: &State<C>) -> usize {
    match st.limit {
        Limit::Absolute(n) => n.max(1),
        Limit::Percent(p) => st.server_max.map_or(1, |m| (m * p as usize / 100).max(1)),
    }
}

/// The cap in force: the limit, and below it the fleet share (which may be 0).
fn effective_max<C>(st: &State<C>) -> usize {
    let limit = limit_max(st);
    st.fleet.map_or(limit, |f| limit.min(f.view.share))
}

/// Sets `max` anew; above a lower one, idle connections go to `doomed` now and lent ones close
/// as they come back (`put`); under a higher one, waiters get slots at once.
fn resize<C>(st: &mut State<C>, doomed: &mut Vec<Pooled<C>>) {
    st.max = effective_max(st);
    let before = doomed.len();
    for pool in &mut st.pools {
        while st.open + st.closing > st.max {
            let Some(idle) = pool.idle.pop_front() else {
                break;
            };
            doomed.push(idle.conn);
            pool.open -= 1;
            st.open -= 1;
        }
    }
    hold_closing(st, doomed.len() - before);
    while used(st) < st.max && grant_slot(st) {}
}

/// Connections that count against the cap: open, and closed but not yet let go.
fn used<C>(st: &State<C>) -> usize {
    st.open + st.closing
}

/// The most recently used idle connection of pool `index` still within its lifetime; expired
/// ones met on the way are moved to `doomed` (closed by the caller, outside the lock).
fn pop_live_idle<C>(
    st: &mut State<C>,
    index: usize,
    max_lifetime: Duration,
    now: Instant,
    doomed: &mut Vec<Pooled<C>>,
) -> Option<Pooled<C>> {
    while let Some(idle) = st.pools[index].idle.pop_back() {
        if now.saturating_duration_since(idle.conn.created) < max_lifetime {
            return Some(idle.conn);
        }
        st.pools[index].open -= 1;
        st.open -= 1;
        doomed.push(idle.conn);
    }
    None
}

fn oldest_idle_elsewhere<C>(st: &State<C>, index: usize) -> Option<usize> {
    st.pools
        .iter()
        .enumerate()
        .filter(|(i, p)| *i != index && !p.idle.is_empty())
        .min_by_key(|(_, p)| p.idle.front().map(|i| i.since))
        .map(|(i, _)| i)
}

/// At the cap, whether another pool's borrower has waited longer than any of this pool's: then
/// a returned connection is closed to make room for it (FIFO across the instance's pools), or a
/// busy pool would keep every slot and starve a newcomer (a user added by a reload, say).
fn waited_longer_elsewhere<C>(st: &State<C>, index: usize) -> bool {
    let own = st.pools[index]
        .waiters
        .iter()
        .find(|w| !w.tx.is_closed())
        .map(|w| w.since);
    // Elsewhere only a borrower a freed slot would serve counts: not one whose own login runs,
    // nor one of a pool at its logins-at-once limit (its logins serve it).
    st.open >= st.max
        && st.pools.iter().enumerate().any(|(i, p)| {
            i != index
                && p.connecting < LOGINS_AT_ONCE
                && p.waiters.iter().any(|w| {
                    !w.own_login && !w.tx.is_closed() && own.is_none_or(|own| w.since < own)
                })
        })
}
