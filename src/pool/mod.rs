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
            .take(inner.index, inner.settings.max_lifetime)
        {
            instance::Take::Idle(conn) => return Ok(Lease::new(self.clone(), conn)),
            instance::Take::Connect => instance::Grant::Slot,
            instance::Take::Wait(rx) => {
                let mut wait = Waiting { pool: self, rx };
                match tokio::time::timeout_at(deadline, &mut wait.rx).await {
                    Ok(Ok(grant)) => grant,
                    Ok(Err(_)) => {
                        return Err(BorrowError::Closed {
                            pool: inner.name.clone(),
                        });
                    }
                    Err(_) => {
                        // `wait` drops here and hands back anything granted at the last moment.
                        return Err(BorrowError::Timeout {
                            pool: inner.name.clone(),
                            waited: started.elapsed(),
                        });
                    }
                }
            }
        };
        match grant {
            instance::Grant::Conn(conn) => Ok(Lease::new(self.clone(), conn)),
            instance::Grant::Slot => self.connect_in_slot().await,
        }
    }

    /// Opens a connection in a slot this pool already holds; the slot is given back on failure.
    async fn connect_in_slot(&self) -> Result<Lease<C>, BorrowError> {
        let inner = &self.inner;
        // Gives the slot back on failure, and also if this future is dropped mid-connect.
        let slot = Slot {
            pool: self,
            held: true,
        };
        let generation = inner.instance.generation();
        let result =
            tokio::time::timeout(inner.settings.connect_timeout, inner.connector.connect()).await;
        match result {
            Ok(Ok(conn)) => {
                let mut slot = slot;
                slot.held = false;
                Ok(Lease::new(
                    self.clone(),
                    instance::Pooled::new(conn, generation),
                ))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ConnectError::Timeout {
                instance: inner.instance.addr().to_owned(),
            }
            .into()),
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
    rx: tokio::sync::oneshot::Receiver<instance::Grant<C>>,
}

impl<C: PooledConnection> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        self.rx.close();
        match self.rx.try_recv() {
            Ok(instance::Grant::Conn(conn)) => self.pool.release(conn, true, Instant::now()),
            Ok(instance::Grant::Slot) => {
                let inner = &self.pool.inner;
                inner.instance.discard_slot(inner.index);
            }
            Err(_) => {}
        }
    }
}

/// A reserved slot under the instance cap while its connection is being opened.
struct Slot<'a, C: PooledConnection> {
    pool: &'a Pool<C>,
    held: bool,
}

impl<C: PooledConnection> Drop for Slot<'_, C> {
    fn drop(&mut self) {
        if self.held {
            let inner = &self.pool.inner;
            inner.instance.discard_slot(inner.index);
        }
    }
}

#[cfg(test)]
mod tests;
