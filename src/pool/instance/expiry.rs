//! The borrow timeout of queued borrowers, kept by one task per instance while any waits,
//! instead of a timer per borrow. Waiters join in FIFO order with the same timeout, so the task
//! sleeps until the earliest deadline and wakes about once per borrow timeout, however many
//! borrows queued meanwhile. Without a timer per queued borrow (its registration, polls and
//! removal), `-S` at 16 clients on a pool of 10 ran 160-240 fewer user-space instructions per
//! transaction (docs/benchmarks.md, sixteenth session of issue 20).

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Grant, Instance, State};
use crate::pool::PooledConnection;

/// What a waiter that just joined needs of the expiry task.
#[must_use]
pub(super) enum Watch {
    /// It runs and wakes no later than the new deadline.
    Running,
    /// None runs: start one, to sleep until this deadline first.
    Start(Instant),
    /// It sleeps past the new deadline (the timeout was shortened by a reload): wake it.
    Sooner,
}

/// Notes a waiter's `deadline`, with the lock held.
pub(super) fn note<C>(st: &mut State<C>, deadline: Instant) -> Watch {
    match st.expiry_at {
        None => {
            st.expiry_at = Some(deadline);
            Watch::Start(deadline)
        }
        Some(at) if deadline < at => {
            st.expiry_at = Some(deadline);
            Watch::Sooner
        }
        Some(_) => Watch::Running,
    }
}

impl<C: PooledConnection> Instance<C> {
    /// Acts on [`note`]'s answer, without the lock.
    pub(super) fn watch(&self, watch: Watch) {
        match watch {
            Watch::Running => {}
            Watch::Sooner => self.expiry_wake.notify_one(),
            Watch::Start(first) => {
                if let Some(this) = self.this.get() {
                    let wake = self.expiry_wake.clone();
                    tokio::spawn(expire_waiters(this.clone(), wake, first));
                }
            }
        }
    }
}

/// Sleeps until the `next` deadline, answers each waiter whose deadline passed with
/// [`Grant::Expired`], and sleeps again; ends when none waits (or the instance is gone). It
/// sleeps first: a task that looked at once would mostly find the queue served already and
/// end, and the next waiter would start another (a version that did timed slower than a timer
/// per borrow). Holds no `Arc` while it sleeps.
async fn expire_waiters<C: PooledConnection>(
    instance: Weak<Instance<C>>,
    wake: Arc<Notify>,
    mut next: Instant,
) {
    let mut ended = Ended(Some(instance.clone()));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = wake.notified() => {}
        }
        next = {
            let Some(instance) = instance.upgrade() else {
                return;
            };
            let mut st = instance.lock();
            let next = expire(&mut st, Instant::now());
            st.expiry_at = next;
            match next {
                Some(next) => next,
                None => {
                    // Cleared under this lock: a waiter after it starts a task of its own.
                    ended.0 = None;
                    return;
                }
            }
        };
    }
}

/// However the task ends early (dropped with its runtime, say), the next waiter starts another.
struct Ended<C: PooledConnection>(Option<Weak<Instance<C>>>);

impl<C: PooledConnection> Drop for Ended<C> {
    fn drop(&mut self) {
        if let Some(instance) = self.0.take().and_then(|i| i.upgrade()) {
            instance.lock().expiry_at = None;
        }
    }
}

/// Answers the waiters whose deadline is past `now` and drops closed places; the earliest
/// deadline still to come.
fn expire<C>(st: &mut State<C>, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    for pool in &mut st.pools {
        let mut i = 0;
        while let Some(w) = pool.waiters.get(i) {
            match w.deadline {
                _ if w.tx.is_closed() => {
                    pool.waiters.remove(i);
                }
                Some(d) if d <= now => {
                    if let Some(w) = pool.waiters.remove(i) {
                        // A borrower gone meanwhile needs no answer.
                        let _ = w.tx.send(Grant::Expired);
                    }
                }
                Some(d) => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                    i += 1;
                }
                None => i += 1,
            }
        }
    }
    next
}
