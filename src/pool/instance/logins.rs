//! When a pool logs in to its server: one login at a time while logins are quick, more beside
//! a slow one, a borrower whose login runs kept in the queue for a released connection, and a
//! refused login answering the waiters of an empty pool.

use std::collections::VecDeque;

use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use super::{Grant, Instance, State, Waiter, used};
use crate::errors::ConnectError;
use crate::pool::PooledConnection;

/// Logins one pool runs at once while they are quick; borrowers beyond them wait for the first
/// connection ready. On a cold pool under 1,000 clients (`benches/load/cold.sh`, medians of 7),
/// nine logins at once made the first burst's slowest transaction 24.4 ms, this rule 6.1 ms
/// (PgBouncer, one at a time too: 7.9 ms): PostgreSQL starts backends faster one by one.
pub(in crate::pool) const LOGINS_AT_ONCE: usize = 1;

/// Every this long a login runs, it lets one more start beside it: a login this slow waits on a
/// far or slow server rather than a busy one, so in-flight logins double every 10 ms until the
/// waiters or the cap are met. With 50 ms logins, 32 one-second queries on a cold pool ended
/// 1.13 s after they began (all logins at once: 1.09; one more per 10 ms: 1.39; PgBouncer's one
/// at a time: 2.33), while quick local logins still run one at a time.
pub(in crate::pool) const SLOW_LOGIN: Duration = Duration::from_millis(10);

impl<C: PooledConnection> Instance<C> {
    /// A place in the queue for a borrower whose own login runs: it takes whichever comes
    /// first. `front`: it was the queue's head when it was granted its slot.
    pub(in crate::pool) fn enqueue(
        &self,
        index: usize,
        since: Instant,
        front: bool,
    ) -> oneshot::Receiver<Grant<C>> {
        let (waiter, rx) = Waiter::new(since, None, true);
        let mut st = self.lock();
        let waiters = &mut st.pools[index].waiters;
        if front {
            waiters.push_front(waiter);
        } else {
            waiters.push_back(waiter);
        }
        rx
    }

    /// Drops closed places at either end of the queue: a borrower served by its own login
    /// leaves one there (at the front or the back), and it should not count as waiting.
    pub(in crate::pool) fn forget_closed(&self, index: usize) {
        let mut st = self.lock();
        let waiters = &mut st.pools[index].waiters;
        while waiters.back().is_some_and(|w| w.tx.is_closed()) {
            waiters.pop_back();
        }
        while waiters.front().is_some_and(|w| w.tx.is_closed()) {
            waiters.pop_front();
        }
    }

    /// A login failed: counted once, however many sessions hear of it.
    pub(in crate::pool) fn count_failed_login(&self) {
        self.failed_logins.inc();
    }

    /// Gives back a slot whose login failed or was never started.
    pub(in crate::pool) fn discard_slot(&self, index: usize) {
        discard_slot(&mut self.lock(), index);
    }

    /// Gives back the slot of a login the server refused. If the pool holds no connection but
    /// logins, its waiters have none to wait for and each login of theirs would be refused
    /// alike: they hear the server's verdict now, as PgBouncer answers its waiting clients,
    /// rather than each from a login of its own, one after another. Waiters whose own login
    /// runs hear from it.
    pub(in crate::pool) fn login_refused(&self, index: usize, e: &ConnectError) {
        let mut st = self.lock();
        let pool = &mut st.pools[index];
        if pool.open == pool.connecting {
            let (own, others): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut pool.waiters)
                .into_iter()
                .partition(|w| w.own_login);
            pool.waiters = own;
            for w in others {
                // A waiter gone meanwhile (timed out, client closed) needs no answer.
                let _ = w.tx.send(Grant::Refused(e.clone()));
            }
        }
        discard_slot(&mut st, index);
    }

    /// A login succeeded (its connection is lent or pooled already): another may start.
    pub(in crate::pool) fn login_done(&self, index: usize) {
        let mut st = self.lock();
        st.pools[index].connecting -= 1;
        while used(&st) < st.max && grant_slot(&mut st) {}
    }

    /// A login has run for another [`SLOW_LOGIN`]: the server is far or slow rather than busy
    /// with logins, so the pool's longest waiter, if any, starts another beside it.
    pub(in crate::pool) fn login_slow(&self, index: usize) {
        let mut st = self.lock();
        if used(&st) < st.max {
            grant_slot_in(&mut st, index);
        }
    }
}

fn discard_slot<C>(st: &mut State<C>, index: usize) {
    st.pools[index].open -= 1;
    st.open -= 1;
    st.pools[index].connecting -= 1;
    // Not above a cap lowered meanwhile (a fleet share shrinks every round).
    while used(st) < st.max && grant_slot(st) {}
}

pub(super) fn reserve_slot<C>(st: &mut State<C>, index: usize) {
    st.open += 1;
    st.pools[index].open += 1;
    st.pools[index].connecting += 1;
}

/// Reserves a slot for the longest-waiting live waiter of any pool with fewer than
/// [`LOGINS_AT_ONCE`] logins running; false if none.
pub(super) fn grant_slot<C>(st: &mut State<C>) -> bool {
    loop {
        let Some(index) = st
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| p.connecting < LOGINS_AT_ONCE)
            .filter_map(|(i, p)| {
                p.waiters
                    .iter()
                    .find(|w| !w.own_login)
                    .map(|w| (i, w.since))
            })
            .min_by_key(|(_, since)| *since)
            .map(|(i, _)| i)
        else {
            return false;
        };
        if grant_slot_in(st, index) {
            return true;
        }
    }
}

/// Reserves a slot for pool `index`'s longest-waiting live waiter without a login of its own;
/// false if none. Closed places met on the way are dropped.
fn grant_slot_in<C>(st: &mut State<C>, index: usize) -> bool {
    let mut i = 0;
    while let Some(w) = st.pools[index].waiters.get(i) {
        if w.own_login {
            i += 1;
            continue;
        }
        if let Some(w) = st.pools[index].waiters.remove(i)
            && w.tx.send(Grant::Slot).is_ok()
        {
            reserve_slot(st, index);
            return true;
        }
    }
    false
}
