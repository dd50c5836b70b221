//! Protocol-level prepared statements, remapped so they survive transaction pooling.
//!
//! A client's named statement maps to a server-side name derived from its content (query text
//! and parameter types), interned per pool so sessions preparing the same query share it. Each
//! server connection remembers which of those it has prepared, in a bounded LRU; a statement
//! missing on the connection a session borrows is prepared there on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Server-side statements kept per connection before the least recently used is closed.
pub const SERVER_STATEMENT_CAPACITY: usize = 256;
/// Distinct statements interned per pool; beyond this, statements still work but are not shared.
const REGISTRY_CAPACITY: usize = 50_000;

/// A statement as sluice knows it: its server name and the Parse body after the name.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    pub server_name: Box<[u8]>,
    /// Query text, NUL, parameter count and types: what follows the name in a Parse.
    pub parse_rest: Bytes,
    /// Executing it may change session parameters (read back after each execution).
    pub settings: bool,
    /// A server of this pool has accepted this Parse, so a client's Parse of it can be
    /// answered without a server connection.
    confirmed: AtomicBool,
}

impl Statement {
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Relaxed);
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }
}

/// Interns statements by content, per pool.
#[derive(Debug)]
pub struct StatementRegistry {
    prefix: String,
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_body: HashMap<Bytes, Arc<Statement>>,
    next_id: u64,
}

impl StatementRegistry {
    /// `prefix` is random per process, so no client can name a statement that is ours.
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            inner: Mutex::new(Registry::default()),
        }
    }

    /// The statement with this Parse body, if a server of the pool has accepted it.
    pub fn confirmed(&self, parse_rest: &[u8]) -> Option<Arc<Statement>> {
        let reg = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        reg.by_body
            .get(parse_rest)
            .filter(|s| s.confirmed())
            .cloned()
    }

    pub fn intern(&self, parse_rest: &[u8], settings: bool) -> Arc<Statement> {
        let mut reg = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = reg.by_body.get(parse_rest) {
            return s.clone();
        }
        reg.next_id += 1;
        let id = reg.next_id;
        let stmt = Arc::new(Statement {
            id,
            server_name: server_name(&self.prefix, id).into(),
            parse_rest: Bytes::copy_from_slice(parse_rest),
            settings,
            confirmed: AtomicBool::new(false),
        });
        if reg.by_body.len() < REGISTRY_CAPACITY {
            reg.by_body.insert(stmt.parse_rest.clone(), stmt.clone());
        }
        stmt
    }
}

/// What one server connection has prepared, with a use tick for LRU eviction.
#[derive(Debug, Default)]
pub struct ServerStatements {
    prepared: HashMap<u64, u64>,
    tick: u64,
    /// The session whose unnamed statement this connection currently holds.
    pub unnamed_owner: u64,
}

impl ServerStatements {
    /// Marks `id` used; true if it is prepared here.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.prepared.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `id` as prepared; returns the id to close first if the cache was full.
    pub fn insert(&mut self, id: u64) -> Option<u64> {
        self.tick += 1;
        let evict = if self.prepared.len() >= SERVER_STATEMENT_CAPACITY {
            self.prepared
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(id, _)| *id)
        } else {
            None
        };
        if let Some(old) = evict {
            self.prepared.remove(&old);
        }
        self.prepared.insert(id, self.tick);
        evict
    }

    /// Marks `id` prepared again, without evicting (its eviction never reached the server).
    pub fn restore(&mut self, id: u64) {
        self.tick += 1;
        self.prepared.insert(id, self.tick);
    }

    pub fn remove(&mut self, id: u64) {
        self.prepared.remove(&id);
    }

    /// After DISCARD ALL or DEALLOCATE ALL nothing is prepared any more.
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.unnamed_owner = 0;
    }

    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }
}

/// Server name of a statement id, for closing evicted statements.
pub fn server_name(prefix: &str, id: u64) -> Vec<u8> {
    format!("{prefix}{id}").into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_statement() {
        let reg = StatementRegistry::new("_s_x_".into());
        let a = reg.intern(b"select 1\0\0\0", false);
        let b = reg.intern(b"select 1\0\0\0", false);
        let c = reg.intern(b"select 2\0\0\0", false);
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(&*a.server_name, format!("_s_x_{}", a.id).as_bytes());
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut s = ServerStatements::default();
        for id in 1..=SERVER_STATEMENT_CAPACITY as u64 {
            assert_eq!(s.insert(id), None);
        }
        assert!(s.touch(1));
        assert_eq!(s.insert(9999), Some(2), "1 was touched, 2 is the oldest");
        assert!(!s.touch(2));
        assert_eq!(s.len(), SERVER_STATEMENT_CAPACITY);
    }
}
