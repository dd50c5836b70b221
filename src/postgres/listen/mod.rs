//! LISTEN/NOTIFY without pinning. A session's `LISTEN` does not run on its pooled connection
//! (that gets a no-op `UNLISTEN` of the same name, for the syntax check and the transaction
//! rules); the change is applied at commit to the session's subscriptions, which live in a
//! [`Hub`] per (database, user). The hub's one listening connection on the writer LISTENs the
//! union of its sessions' channels and fans each notification out to the inboxes of the
//! sessions subscribed to it; a session delivers what its inbox holds between transactions.

mod conn;
mod inbox;
pub mod sql;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::server::ServerLogin;
use crate::metrics::GroupMetrics;
use crate::routing::Cluster;
pub use inbox::Inbox;

/// What the listening connection needs of an instance's pools: the instance's address. (A
/// trait, so that the pools can hold the hubs without this module importing them.)
pub trait Addressed: Send + Sync + 'static {
    fn addr(&self) -> &str;
}

/// Default of `connection_pool.notification_backlog`.
pub const DEFAULT_BACKLOG: usize = 10_000;

/// The hubs of one target group, by (database, user), shared by its instances' pools.
#[derive(Debug)]
pub struct Listeners {
    by_key: Mutex<HashMap<(String, String), Arc<Hub>>>,
    backlog: usize,
    /// Listening connections open now, across the hubs (a fleet counts them as its own).
    open: Arc<AtomicUsize>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self::new(DEFAULT_BACKLOG)
    }
}

impl Listeners {
    /// `backlog`: notifications a session may fall behind before it is closed.
    pub fn new(backlog: usize) -> Self {
        Self {
            by_key: Mutex::default(),
            backlog,
            open: Arc::default(),
        }
    }

    /// Listening connections open now (all on the writer).
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn hub(&self, login: &ServerLogin) -> Arc<Hub> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .entry((login.database.clone(), login.user.clone()))
            .or_insert_with(|| {
                Arc::new(Hub {
                    login: login.clone(),
                    state: Mutex::default(),
                    wake: Notify::new(),
                    backlog: self.backlog,
                    open: self.open.clone(),
                })
            })
            .clone()
    }
}

/// The subscriptions of one (database, user) and its listening connection's shared state.
#[derive(Debug)]
pub struct Hub {
    /// The pools' login; the listening connection goes to whichever instance is the writer.
    login: ServerLogin,
    state: Mutex<HubState>,
    /// Tells the listening connection's task that the wanted channels changed.
    wake: Notify,
    backlog: usize,
    /// The target group's count of open listening connections.
    open: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct HubState {
    /// Wanted channels and the inboxes of the sessions subscribed to each, by the inbox's
    /// address: a session leaving a channel of thousands is one removal, not a scan.
    subscribers: HashMap<Arc<str>, HashMap<usize, Arc<Inbox>>>,
    /// Channels the listening connection LISTENs now.
    confirmed: HashSet<Arc<str>>,
    /// Sessions waiting for a channel to be confirmed before their LISTEN is answered.
    waiters: Vec<(Arc<str>, oneshot::Sender<()>)>,
    /// The listening connection's task runs (it ends once nobody listens).
    running: bool,
    metrics: Option<Arc<GroupMetrics>>,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Adds `inbox` to `channel`'s subscribers, starting the listening connection if needed.
    /// Returns what resolves once the server listens on the channel, if it does not yet: a
    /// notification committed after the client sees its LISTEN answered must reach it.
    pub fn subscribe<P: Addressed>(
        self: &Arc<Self>,
        cluster: &Arc<Cluster<P>>,
        inbox: &Arc<Inbox>,
        channel: &str,
    ) -> (Arc<str>, Option<oneshot::Receiver<()>>) {
        let mut s = self.state();
        let key: Arc<str> = match s.subscribers.get_key_value(channel) {
            Some((k, _)) => k.clone(),
            None => {
                cluster.metrics.listen_channels.inc();
                channel.into()
            }
        };
        // The session subscribes to a channel once (it keeps its own list).
        s.subscribers
            .entry(key.clone())
            .or_default()
            .insert(address(inbox), inbox.clone());
        s.metrics.get_or_insert_with(|| cluster.metrics.clone());
        let wait = if s.confirmed.contains(&key) {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            s.waiters.push((key.clone(), tx));
            Some(rx)
        };
        if !s.running {
            s.running = true;
            tokio::spawn(conn::run(self.clone(), cluster.clone()));
        }
        drop(s);
        self.wake.notify_one();
        (key, wait)
    }

    /// Takes `inbox` off `channel`; the last one out makes the connection UNLISTEN it.
    pub fn unsubscribe(&self, inbox: &Arc<Inbox>, channel: &str) {
        let mut s = self.state();
        let Some(subs) = s.subscribers.get_mut(channel) else {
            return;
        };
        subs.remove(&address(inbox));
        if subs.is_empty() {
            s.subscribers.remove(channel);
            // Nobody waits for a channel nobody wants (LISTEN and UNLISTEN in one commit).
            s.waiters.retain(|(c, _)| **c != *channel);
            if let Some(m) = &s.metrics {
                m.listen_channels.dec();
            }
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Ends the listening connection's task when nobody listens: under the lock, so a session
    /// subscribing at the same moment starts a new one.
    fn stop_if_unused(&self) -> bool {
        let mut s = self.state();
        if s.subscribers.is_empty() {
            s.running = false;
            s.waiters.clear();
            s.confirmed.clear();
            return true;
        }
        false
    }

    /// Lets the sessions waiting for a channel go on without it.
    fn release_waiters(&self) {
        self.state().waiters.clear();
    }

    /// Hands a notification (a whole NotificationResponse) to the subscribers of `channel`.
    fn fan_out(&self, channel: &str, message: &[u8]) {
        let s = self.state();
        let Some((key, subs)) = s.subscribers.get_key_value(channel) else {
            return;
        };
        let message = Bytes::copy_from_slice(message);
        for inbox in subs.values() {
            inbox.push(Some(key.clone()), message.clone());
        }
    }

    /// Tells every subscribed session `message` (a NoticeResponse), once each.
    fn tell_all(&self, message: Bytes) {
        let s = self.state();
        let mut told = HashSet::new();
        for (at, inbox) in s.subscribers.values().flatten() {
            if told.insert(*at) {
                inbox.push(None, message.clone());
            }
        }
    }
}

/// An inbox's identity while it is subscribed (its `Arc` keeps the address).
fn address(inbox: &Arc<Inbox>) -> usize {
    Arc::as_ptr(inbox) as usize
}

#[cfg(test)]
mod tests;
