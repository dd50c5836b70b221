//! The drain's signal: a flag every session reads without a lock, and one waker slot per
//! session waiting for its client, so that the drain reaches idle sessions at once while a wait
//! costs no registration.
//!
//! Why not a `CancellationToken` alone: waiting on one registers in its waiter list and leaves it
//! again, two locks and a waker clone per wait, and checking it takes a lock too. A session
//! waits for its client once per message, so that was ~250 instructions of every transaction
//! (callgrind, `pgbench -S`). A session's [`Watch`] joins the list once and afterwards only
//! updates its waker, a compare-and-swap.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use slab::Slab;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Started when sluice drains (SIGTERM, after the grace): sessions between transactions end at
/// the boundary. Process-wide and cheap to clone; every cluster holds one.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    draining: AtomicBool,
    /// For waits that happen once (the lot's, the app's), where a waiter list costs nothing.
    token: CancellationToken,
    watchers: Mutex<Slab<Arc<AtomicWaker>>>,
}

impl Inner {
    fn watchers(&self) -> MutexGuard<'_, Slab<Arc<AtomicWaker>>> {
        // Only wakers live here: a panic elsewhere while it was held leaves nothing half done.
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drain {
    /// Starts the drain and wakes every watching session.
    pub fn cancel(&self) {
        // Stored before the wake-ups: a session woken, or registering after them, sees it.
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.token.cancel();
        for (_, waker) in self.inner.watchers().iter() {
            waker.wake();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the drain starts: for a wait that happens once.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.token.cancelled()
    }

    /// A session's own slot, for the waits it repeats (one per message).
    pub fn watch(&self) -> Watch {
        let waker = Arc::new(AtomicWaker::new());
        let key = self.inner.watchers().insert(waker.clone());
        Watch {
            inner: self.inner.clone(),
            key,
            waker,
        }
    }
}

/// One session's slot in the drain's list; it leaves the list when dropped.
#[derive(Debug)]
pub struct Watch {
    inner: Arc<Inner>,
    key: usize,
    waker: Arc<AtomicWaker>,
}

impl Watch {
    /// Resolves once the drain starts.
    pub fn drained(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            // Registered before the flag is read: a drain that starts in between wakes it.
            self.waker.register(cx.waker());
            if self.inner.draining.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner.watchers().try_remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_watch_is_woken_when_the_drain_starts_and_a_late_one_is_ready_at_once() {
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let drain = Drain::default();
        let watch = drain.watch();
        let mut drained = std::pin::pin!(watch.drained());
        assert!(drained.as_mut().poll(&mut cx).is_pending());
        assert!(!drain.is_cancelled());
        drain.clone().cancel();
        assert!(woken.0.load(Ordering::SeqCst));
        assert!(drained.as_mut().poll(&mut cx).is_ready());
        assert!(drain.is_cancelled());
        let late = drain.watch();
        assert!(std::pin::pin!(late.drained()).poll(&mut cx).is_ready());
        assert!(std::pin::pin!(drain.cancelled()).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_dropped_watch_leaves_the_list() {
        let drain = Drain::default();
        let watches: Vec<_> = (0..3).map(|_| drain.watch()).collect();
        assert_eq!(drain.inner.watchers().len(), 3);
        drop(watches);
        assert_eq!(drain.inner.watchers().len(), 0);
    }
}
