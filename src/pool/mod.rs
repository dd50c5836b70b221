//! Server connection pools: one per (instance, database, user), all pools of an instance sharing
//! its connection cap.
//!
//! One small mutex per instance guards every pool of that instance, so a borrow that finds the
//! cap reached can evict an idle connection of a sibling pool and a release can hand its slot to
//! the oldest waiter of any pool. The lock is never held across an await.

pub mod fleet;
mod instance;
mod lease;
#[cfg(any(test, fuzzing))]
pub mod scripted;

pub use instance::{FleetSample, FleetView, Instance, InstanceStats, Limit};
pub use lease::Lease;

use crate::errors::{BorrowError, ConnectError};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

/// A server connection the pool can hold. `close` must not block: it may run under the
/// instance lock's caller and in Drop.
pub trait PooledConnection: Send + 'static {
    fn close(self);
    /// False when the server ended the connection while it sat idle (restart, terminated
    /// backend): the pool closes it instead of handing it out.
    fn is_usable(&mut self) -> bool;
    /// Closes, and resolves once the server has let the connection go (it closed its end),
    /// so that a budget the server counts can count the connection free. The caller bounds
    /// the wait.
    fn close_confirmed(self) -> Pin<Box<dyn Future<Output = ()> + Send>>
    where
        Self: Sized,
    {
        self.close();
        Box::pin(std::future::ready(()))
    }
}

pub type ConnectFuture<'a, C> = Pin<Box<dyn Future<Output = Result<C, ConnectError>> + Send + 'a>>;

/// Opens new server connections for one pool (knows the instance, database, user and secret).
pub trait Connector<C>: Send + Sync + 'static {
    fn connect(&self) -> ConnectFuture<'_, C>;
}

/// Timing settings of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub borrow_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_lifetime: Duration,
    pub idle_timeout: Duration,
}

impl PoolSettings {
    /// Every timing the same: for tests that need a pool but never time anything.
    pub fn uniform(d: Duration) -> Self {
        Self {
            borrow_timeout: d,
            connect_timeout: d,
            max_lifetime: d,
            idle_timeout: d,
        }
    }
}

/// A handle on one (instance, database, user) pool; cheap to clone.
pub struct Pool<C: PooledConnection> {
    inner: Arc<PoolInner<C>>,
}

struct PoolInner<C: PooledConnection> {
    name: String,
    instance: Arc<Instance<C>>,
    index: usize,
    connector: Box<dyn Connector<C>>,
    settings: PoolSettings,
}

impl<C: PooledConnection> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: PooledConnection> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl<C: PooledConnection> Pool<C> {
    pub fn new(
        name: String,
        instance: Arc<Instance<C>>,
        connector: Box<dyn Connector<C>>,
        settings: PoolSettings,
    ) -> Self {
        let index = instance.add_pool();
        Self {
            inner: Arc::new(PoolInner {
                name,
                instance,
                index,
                connector,
                settings,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn instance(&self) -> &Arc<Instance<C>> {
        &self.inner.instance
    }

    /// A usable idle connection if one is ready now: no future, no allocation (the steady state).
    /// `now` is the caller's last clock read, for the lifetime check.
    pub fn try_borrow_idle(&self, now: Instant) -> Option<Lease<C>> {
        let inner = &self.inner;
        loop {
            let conn = inner
                .instance
                .take_idle(inner.index, inner.settings.max_lifetime, now)?;
            if let Some(lease) = self.usable(Lease::new(self.clone(), conn)) {
                return Some(lease);
            }
        }
    }

    /// Takes a usable server connection: an idle one, a new one under the cap, or the next one
    /// released, waiting in FIFO order up to the borrow timeout.
    pub async fn borrow(&self) -> Result<Lease<C>, BorrowError> {
        let started = Instant::now();
        let deadline = started + self.inner.settings.borrow_timeout;
        loop {
            if let Some(lease) = self.usable(self.borrow_until(started, deadline).await?) {
                return Ok(lease);
            }
        }
    }

    /// `lease` unless the server ended it while it sat idle (then it is closed).
    fn usable(&self, mut lease: Lease<C>) -> Option<Lease<C>> {
        if lease.is_usable() {
            return Some(lease);
        }
        tracing::info!(pool = %self.inner.name, "discarded a server connection closed while idle");
        lease.release(false);
        None
    }

    async fn borrow_until(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<Lease<C>, BorrowError> {
        let inner = &self.inner;
        let grant = match inner
            .instance
            .take(inner.index, inner.settings.max_lifetime, deadline)
        {
            instance::Take::Idle(conn) => return Ok(Lease::new(self.clone(), conn)),
            instance::Take::Connect => return self.log_in(started, false).await,
            // No timer of its own: the instance's expiry task answers at the deadline.
            instance::Take::Wait(rx) => {
                // Dropped before its grant (the borrowing future dropped), it hands it back.
                let mut wait = Waiting { pool: self, rx };
                match (&mut wait.rx).await {
                    Ok(grant) => grant,
                    Err(_) => return Err(self.closed()),
                }
            }
        };
        match grant {
            instance::Grant::Conn(conn) => Ok(Lease::new(self.clone(), conn)),
            instance::Grant::Slot => self.log_in(started, true).await,
            instance::Grant::Refused(e) => Err(e.into()),
            instance::Grant::Expired => Err(BorrowError::Timeout {
                pool: inner.name.clone(),
                waited: started.elapsed(),
            }),
        }
    }

    /// Runs a login in a slot this pool holds, and takes whichever comes first: its
    /// connection, or one released meanwhile (PgBouncer's queue likewise hands its head the
    /// first server connection ready). The login runs on in a task of its own, bounded by the
    /// connect timeout; a connection nobody waits for any more goes to the queue. A failed
    /// login fails this borrower at once, as a direct connection would.
    async fn log_in(&self, started: Instant, was_head: bool) -> Result<Lease<C>, BorrowError> {
        let inner = &self.inner;
        let mut login = Login {
            pool: self,
            rx: self.spawn_login(),
        };
        let mut wait = Some(Waiting {
            pool: self,
            rx: inner.instance.enqueue(inner.index, started, was_head),
        });
        loop {
            let granted = async {
                match wait.as_mut() {
                    Some(w) => (&mut w.rx).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                done = &mut login.rx => {
                    if let Some(mut w) = wait.take() {
                        // A connection released in the same instant beats a failed login.
                        if matches!(done, Ok(Err(_)))
                            && let Some(conn) = w.leave()
                        {
                            return Ok(Lease::new(self.clone(), conn));
                        }
                        drop(w);
                        inner.instance.forget_closed(inner.index);
                    }
                    return match done {
                        // Drained while it logged in: closed, and the session routes again.
                        Ok(Ok(conn)) if conn.generation != inner.instance.generation() => {
                            self.release(conn, true, Instant::now());
                            Err(self.closed())
                        }
                        Ok(Ok(conn)) => Ok(Lease::new(self.clone(), conn)),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err(self.closed()),
                    };
                }
                grant = granted => match grant {
                    Ok(instance::Grant::Conn(conn)) => return Ok(Lease::new(self.clone(), conn)),
                    // Slots skip a borrower whose login runs; one that came anyway goes back.
                    Ok(instance::Grant::Slot) => {
                        wait = None;
                        inner.instance.discard_slot(inner.index);
                    }
                    // Not sent to a borrower whose login runs; its own login answers it (nor is
                    // a deadline set for it).
                    Ok(instance::Grant::Refused(_) | instance::Grant::Expired) => wait = None,
                    // Drained: route again; the login's connection, of the old generation,
                    // is closed when it comes back.
                    Err(_) => return Err(self.closed()),
                },
            }
        }
    }

    /// Starts a login in a reserved slot. Its task settles the slot: a connection goes to the
    /// receiver, or to the pool if the receiver is gone; a failure gives the slot back.
    fn spawn_login(&self) -> oneshot::Receiver<Result<instance::Pooled<C>, ConnectError>> {
        let (tx, rx) = oneshot::channel();
        let pool = self.clone();
        tokio::spawn(async move {
            let inner = &pool.inner;
            // Settles the slot however the task ends, a panicking connector included.
            let mut settle = Settle {
                pool: &pool,
                outcome: Outcome::Failed,
            };
            let generation = inner.instance.generation();
            let connect =
                tokio::time::timeout(inner.settings.connect_timeout, inner.connector.connect());
            tokio::pin!(connect);
            let done = loop {
                tokio::select! {
                    done = &mut connect => break done,
                    () = tokio::time::sleep(instance::SLOW_LOGIN) => {
                        inner.instance.login_slow(inner.index);
                    }
                }
            };
            let result = match done {
                Ok(Ok(conn)) => Ok(instance::Pooled::new(conn, generation)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ConnectError::Timeout {
                    instance: inner.instance.addr().to_owned(),
                }),
            };
            settle.outcome = match &result {
                Ok(_) => Outcome::Opened,
                Err(e) if e.refuses_every_login() => Outcome::Refused(e.clone()),
                Err(_) => Outcome::Failed,
            };
            match tx.send(result) {
                Ok(()) => {}
                Err(Ok(conn)) => pool.release(conn, true, Instant::now()),
                Err(Err(e)) => {
                    tracing::warn!(pool = %inner.name, error = %e, "server login failed");
                }
            }
        });
        rx
    }

    fn closed(&self) -> BorrowError {
        BorrowError::Closed {
            pool: self.inner.name.clone(),
        }
    }

    fn release(&self, conn: instance::Pooled<C>, reusable: bool, now: Instant) {
        let inner = &self.inner;
        inner.instance.put(
            inner.index,
            conn,
            reusable,
            inner.settings.max_lifetime,
            now,
        );
    }
}

/// A waiter's place in the queue. Dropped before it took its grant (timeout, or the borrowing
/// future dropped), it returns what it was granted meanwhile instead of leaking it.
struct Waiting<'a, C: PooledConnection> {
    pool: &'a Pool<C>,
    rx: oneshot::Receiver<instance::Grant<C>>,
}

impl<C: PooledConnection> Waiting<'_, C> {
    /// Leaves the queue: a connection granted meanwhile is returned, a slot given back.
    fn leave(&mut self) -> Option<instance::Pooled<C>> {
        self.rx.close();
        match self.rx.try_recv() {
            Ok(instance::Grant::Conn(conn)) => Some(conn),
            Ok(instance::Grant::Slot) => {
                let inner = &self.pool.inner;
                inner.instance.discard_slot(inner.index);
                None
            }
            Ok(instance::Grant::Refused(_) | instance::Grant::Expired) | Err(_) => None,
        }
    }
}

impl<C: PooledConnection> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.leave() {
            self.pool.release(conn, true, Instant::now());
        }
    }
}

/// A login's slot: given back when the login failed, or kept for its connection.
struct Settle<'a, C: PooledConnection> {
    pool: &'a Pool<C>,
    outcome: Outcome,
}

enum Outcome {
    Opened,
    /// The server refused it as it would refuse every login of the pool.
    Refused(ConnectError),
    /// Failed otherwise, or the task ended without an answer (a panicking connector).
    Failed,
}

impl<C: PooledConnection> Drop for Settle<'_, C> {
    fn drop(&mut self) {
        let inner = &self.pool.inner;
        match &self.outcome {
            Outcome::Opened => inner.instance.login_done(inner.index),
            Outcome::Refused(e) => {
                inner.instance.count_failed_login();
                inner.instance.login_refused(inner.index, e);
            }
            Outcome::Failed => {
                inner.instance.count_failed_login();
                inner.instance.discard_slot(inner.index);
            }
        }
    }
}

/// The far end of a login's task. Dropped before it took the result, it hands a connection
/// that arrived meanwhile to the pool.
struct Login<'a, C: PooledConnection> {
    pool: &'a Pool<C>,
    rx: oneshot::Receiver<Result<instance::Pooled<C>, ConnectError>>,
}

impl<C: PooledConnection> Drop for Login<'_, C> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(conn)) = self.rx.try_recv() {
            self.pool.release(conn, true, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
