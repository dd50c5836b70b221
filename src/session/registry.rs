//! Live sessions by the key clients name them with (a Postgres cancel key, a MySQL connection
//! id), each with where its work runs right now: what CancelRequest, `KILL QUERY` and
//! `/v1/sessions` read. One generic for both engines; an entry leaves when its handle drops.

use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::keys::KeyMap;
use super::{SessionInfo, SessionList, SessionRow, SessionState};

/// Where a session's work runs: the server it is on, as `/v1/sessions` shows it.
pub trait Running: Clone + Send + Sync + std::fmt::Debug + 'static {
    fn server(&self) -> String;
}

#[derive(Debug)]
pub struct Entry<T> {
    /// The session as `/v1/sessions` lists it.
    pub info: SessionInfo,
    pub state: SessionState,
    /// Who may act on the session by its key besides the session itself (MySQL: the database
    /// user; a `KILL QUERY` from another user finds nothing).
    pub owner: Box<str>,
    current: Mutex<Current<T>>,
}

/// What a session's request is doing, as a cancel finds it.
#[derive(Debug)]
enum Current<T> {
    /// No request, or none recorded: a cancel has nothing to stop.
    Idle,
    /// The request waits for a server connection (`Entry::cancelled` is polled).
    Waiting(Option<Waker>),
    /// A cancel came while it waited: the wait ends with the client's error.
    Cancelled,
    /// The request runs on this server connection: a cancel is sent there.
    Running(T),
}

impl<T: Clone> Entry<T> {
    fn lock(&self) -> MutexGuard<'_, Current<T>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, current: Option<T>) {
        *self.lock() = current.map_or(Current::Idle, Current::Running);
    }

    /// Where the session's work runs now; `None` while it holds no server connection.
    pub fn get(&self) -> Option<T> {
        match &*self.lock() {
            Current::Running(t) => Some(t.clone()),
            _ => None,
        }
    }

    /// What a cancel reaches: the server connection running the request, to be cancelled
    /// there; a request waiting for one is cancelled here (its wait ends, nothing of it ran).
    /// `None` when nothing is left to do.
    pub fn cancel(&self) -> Option<T> {
        let mut current = self.lock();
        match &mut *current {
            Current::Running(t) => Some(t.clone()),
            Current::Waiting(waker) => {
                if let Some(w) = waker.take() {
                    w.wake();
                }
                *current = Current::Cancelled;
                None
            }
            Current::Idle | Current::Cancelled => None,
        }
    }

    /// Completes if a cancel comes while the session's request waits for a server connection:
    /// from its first poll until it is dropped, the request counts as waiting. Polled only on the
    /// slow path of a borrow, after the borrow itself, so a borrow served at its first wake-up
    /// takes the lock twice (here and on drop).
    pub fn cancelled(&self) -> Cancelled<'_, T> {
        Cancelled {
            entry: self,
            polled: false,
        }
    }
}

impl<T: Clone> Entry<T> {
    /// `wait` unless a cancel for the session ends it first (`None`): see [`Entry::cancelled`].
    pub async fn unless_cancelled<F: Future>(&self, wait: F) -> Option<F::Output> {
        let mut wait = std::pin::pin!(wait);
        let mut cancelled = self.cancelled();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = wait.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            Pin::new(&mut cancelled).poll(cx).map(|()| None)
        })
        .await
    }
}

/// See [`Entry::cancelled`]. Dropped (the wait over either way), the session is idle again
/// until it records where its request runs.
#[derive(Debug)]
pub struct Cancelled<'a, T: Clone> {
    entry: &'a Entry<T>,
    polled: bool,
}

impl<T: Clone> Future for Cancelled<'_, T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polled = true;
        let mut current = self.entry.lock();
        match &mut *current {
            Current::Cancelled => Poll::Ready(()),
            Current::Waiting(Some(waker)) if waker.will_wake(cx.waker()) => Poll::Pending,
            Current::Idle | Current::Waiting(_) => {
                *current = Current::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            // Set by the session itself, which no longer waits.
            Current::Running(_) => Poll::Pending,
        }
    }
}

impl<T: Clone> Drop for Cancelled<'_, T> {
    fn drop(&mut self) {
        if !self.polled {
            return;
        }
        let mut current = self.entry.lock();
        if matches!(*current, Current::Waiting(_) | Current::Cancelled) {
            *current = Current::Idle;
        }
    }
}

/// Sessions by key. The keys are sluice's own choice (random cancel keys, counted MySQL
/// connection ids), never a client's; SipHash's four hashes per connection (register, drop)
/// were 1 % of a connection storm's instructions. Clients only look keys up.
type Sessions<K, T> = KeyMap<K, Arc<Entry<T>>>;

#[derive(Debug)]
pub struct Registry<K, T> {
    sessions: Mutex<Sessions<K, T>>,
}

impl<K, T> Default for Registry<K, T> {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(KeyMap::default()),
        }
    }
}

/// A session's registration; unregisters on drop.
#[derive(Debug)]
pub struct Handle<K: Hash + Eq, T> {
    registry: Arc<Registry<K, T>>,
    pub key: K,
    pub target: Arc<Entry<T>>,
}

impl<K: Hash + Eq, T> Drop for Handle<K, T> {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        // A session that re-registered under its key (COM_CHANGE_USER) keeps it.
        if sessions
            .get(&self.key)
            .is_some_and(|t| Arc::ptr_eq(t, &self.target))
        {
            sessions.remove(&self.key);
        }
    }
}

impl<K, T> Registry<K, T> {
    fn lock(&self) -> MutexGuard<'_, Sessions<K, T>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq + Clone, T> Registry<K, T> {
    /// Registers a session under the first of `candidates` no live session holds.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        owner: &str,
        candidates: impl FnMut() -> K,
    ) -> Handle<K, T> {
        let mut sessions = self.lock();
        let key = std::iter::repeat_with(candidates)
            .find(|k| !sessions.contains_key(k))
            .unwrap_or_else(|| unreachable!("repeat_with never ends"));
        self.insert(&mut sessions, key, info, owner)
    }

    /// Registers a session under `key`, in place of the entry there (the same session again).
    pub fn replace(self: &Arc<Self>, key: K, info: SessionInfo, owner: &str) -> Handle<K, T> {
        let mut sessions = self.lock();
        self.insert(&mut sessions, key, info, owner)
    }

    fn insert(
        self: &Arc<Self>,
        sessions: &mut Sessions<K, T>,
        key: K,
        info: SessionInfo,
        owner: &str,
    ) -> Handle<K, T> {
        let target = Arc::new(Entry {
            info,
            state: SessionState::default(),
            owner: owner.into(),
            current: Mutex::new(Current::Idle),
        });
        sessions.insert(key.clone(), target.clone());
        Handle {
            registry: self.clone(),
            key,
            target,
        }
    }

    pub fn get(&self, key: &K) -> Option<Arc<Entry<T>>> {
        self.lock().get(key).cloned()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.lock().contains_key(key)
    }
}

impl<K, T> SessionList for Registry<K, T>
where
    K: Send + std::fmt::Debug + 'static,
    T: Running,
{
    fn sessions(&self) -> Vec<SessionRow> {
        self.lock()
            .values()
            .map(|t| {
                let (in_transaction, pinned) = t.state.get();
                SessionRow {
                    info: t.info.clone(),
                    server: t.get().map(|c| c.server()),
                    in_transaction,
                    pinned,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    impl Running for &'static str {
        fn server(&self) -> String {
            (*self).to_owned()
        }
    }

    fn info(id: u64) -> SessionInfo {
        SessionInfo::new(
            id,
            (&"e".into(), &"g".into()),
            "app",
            "127.0.0.1:1".parse().unwrap(),
            false,
        )
    }

    #[test]
    fn keys_are_unique_among_live_sessions_and_freed_with_their_handle() {
        let registry = Arc::new(Registry::<u32, &'static str>::default());
        let mut next = [7, 7, 8].into_iter();
        let a = registry.register(info(1), "app", || next.next().unwrap());
        let b = registry.register(info(2), "app", || next.next().unwrap());
        assert_eq!((a.key, b.key), (7, 8), "7 was taken");
        b.target.set(Some("db:3306"));
        let rows = registry.sessions();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().any(|r| r.server.as_deref() == Some("db:3306")));
        drop(a);
        assert!(!registry.contains(&7) && registry.contains(&8));
        let again = registry.replace(8, info(2), "other");
        drop(b);
        assert_eq!(
            registry.get(&8).unwrap().owner.as_ref(),
            "other",
            "the old handle does not remove its successor"
        );
        drop(again);
        assert!(registry.sessions().is_empty());
    }

    /// A cancel ends a request's wait for a connection (and only that wait), and is forwarded
    /// once the request runs on one.
    #[tokio::test]
    async fn a_cancel_ends_a_waiting_request_and_reaches_a_running_one() {
        let registry = Arc::new(Registry::<u32, &'static str>::default());
        let handle = registry.register(info(1), "app", || 1);
        let entry = registry.get(&1).unwrap();
        assert_eq!(entry.cancel(), None, "idle: nothing to cancel");
        let wait = handle.target.cancelled();
        let cancel = async {
            tokio::task::yield_now().await;
            assert_eq!(entry.cancel(), None, "a waiting request is cancelled here");
        };
        let ended =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(wait, cancel) });
        assert!(ended.await.is_ok(), "the wait went on after its cancel");
        // The cancel was spent on that wait: the next one waits.
        let next = tokio::time::timeout(Duration::from_millis(20), handle.target.cancelled());
        assert!(
            next.await.is_err(),
            "a later wait was cancelled by an earlier cancel"
        );
        handle.target.set(Some("db:5432"));
        assert_eq!(entry.cancel(), Some("db:5432"));
        assert_eq!(
            entry.cancel(),
            Some("db:5432"),
            "forwarding leaves the request running"
        );
    }
}
