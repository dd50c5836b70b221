//! A borrowed server connection; it goes back to its pool when released, or is closed when dropped.

use std::ops::{Deref, DerefMut};

use tokio::time::Instant;

use super::instance::Pooled;
use super::{Pool, PooledConnection};

pub struct Lease<C: PooledConnection> {
    pool: Pool<C>,
    conn: Option<Pooled<C>>,
}

impl<C: PooledConnection> std::fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("pool", &self.pool.name())
            .finish()
    }
}

impl<C: PooledConnection> Lease<C> {
    pub(super) fn new(pool: Pool<C>, conn: Pooled<C>) -> Self {
        pool.instance().lease_taken();
        Self {
            pool,
            conn: Some(conn),
        }
    }

    pub fn pool(&self) -> &Pool<C> {
        &self.pool
    }

    /// Returns the connection: `reusable` only when it is clean (idle, no session state). One
    /// past `max_connection_lifetime` is closed by the pool.
    pub fn release(self, reusable: bool) {
        self.release_at(reusable, Instant::now());
    }

    /// `release` by a caller that has just read the clock: `now` stamps the connection's idle
    /// time and checks its lifetime.
    pub fn release_at(mut self, reusable: bool, now: Instant) {
        if let Some(conn) = self.conn.take() {
            self.pool.instance().lease_returned();
            self.pool.release(conn, reusable, now);
        }
    }
}

impl<C: PooledConnection> Deref for Lease<C> {
    type Target = C;
    fn deref(&self) -> &C {
        // Invariant: `conn` is Some until release or drop consume the lease.
        &self.conn.as_ref().expect("lease holds a connection").conn
    }
}

impl<C: PooledConnection> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn.as_mut().expect("lease holds a connection").conn
    }
}

impl<C: PooledConnection> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.instance().lease_returned();
            self.pool.release(conn, false, Instant::now());
        }
    }
}
