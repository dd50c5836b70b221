//! Protocol-level prepared statements, remapped so they survive transaction pooling.
//!
//! A client's named statement maps to a server-side name derived from its content (query text
//! and parameter types), interned per pool so sessions preparing the same query share it. Each
//! server connection remembers which of those it has prepared, in a bounded LRU; a statement
//! missing on the connection a session borrows is prepared there on first use.
//!
//! A shared statement must never be worse than each session preparing its own, so a schema
//! change retires statements: DDL that sluice sees bumps the database's schema epoch (every
//! statement interned before it is retired at once), and a statement the server calls stale
//! (a result type or a type it names changed under it) is retired alone. A retired statement
//! keeps serving the sessions that hold it, as their own statement would on a direct
//! connection, but the next Parse of its text gets a new one, planned afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The Parse gave every parameter's type: planned afresh, it takes the same binary values.
    pub typed: bool,
    /// A server of this pool has accepted this Parse, so a client's Parse of it can be
    /// answered without a server connection.
    confirmed: AtomicBool,
    /// The database's schema epoch when it was interned.
    epoch: u64,
    /// The server reported it stale, or its session freed it with DEALLOCATE or DISCARD.
    retired: AtomicBool,
    /// The ErrorResponse a server gave when it called this statement stale: what a session
    /// still holding it gets where it is not prepared, as its own stale statement would answer.
    stale_error: OnceLock<Box<[u8]>>,
}

impl Statement {
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Relaxed);
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }

    pub fn stale_error(&self) -> Option<&[u8]> {
        self.stale_error.get().map(|e| &e[..])
    }
}

/// Counts the schema changes sluice has seen in one database, shared by the statement
/// registries of all its users and instances (a replica replays the writer's DDL).
#[derive(Debug, Default)]
pub struct SchemaEpoch(AtomicU64);

impl SchemaEpoch {
    pub fn changed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Interns statements by content, per pool.
#[derive(Debug)]
pub struct StatementRegistry {
    prefix: String,
    schema: Arc<SchemaEpoch>,
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_body: HashMap<Bytes, Arc<Statement>>,
    next_id: u64,
}

impl StatementRegistry {
    /// `prefix` is random per process, so no client can name a statement that is ours.
    pub fn new(prefix: String, schema: Arc<SchemaEpoch>) -> Self {
        Self {
            prefix,
            schema,
            inner: Mutex::new(Registry::default()),
        }
    }

    /// The schema epoch of this registry's database.
    pub fn schema(&self) -> &SchemaEpoch {
        &self.schema
    }

    /// Whether `stmt` may still be handed to a session that prepares its text.
    fn current(&self, stmt: &Statement) -> bool {
        stmt.epoch == self.schema.now() && !stmt.retired.load(Ordering::Relaxed)
    }

    /// The statement with this Parse body, if a server of the pool has accepted it and no
    /// schema change has retired it since.
    pub fn confirmed(&self, parse_rest: &[u8]) -> Option<Arc<Statement>> {
        let reg = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        reg.by_body
            .get(parse_rest)
            .filter(|s| s.confirmed() && self.current(s))
            .cloned()
    }

    pub fn intern(&self, parse_rest: &[u8], settings: bool) -> Arc<Statement> {
        let mut reg = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = reg.by_body.get(parse_rest)
            && self.current(s)
        {
            return s.clone();
        }
        reg.next_id += 1;
        let id = reg.next_id;
        let stmt = Arc::new(Statement {
            id,
            server_name: server_name(&self.prefix, id).into(),
            parse_rest: Bytes::copy_from_slice(parse_rest),
            settings,
            typed: all_typed(parse_rest),
            confirmed: AtomicBool::new(false),
            epoch: self.schema.now(),
            retired: AtomicBool::new(false),
            stale_error: OnceLock::new(),
        });
        if reg.by_body.len() < REGISTRY_CAPACITY || reg.by_body.contains_key(parse_rest) {
            reg.by_body.insert(stmt.parse_rest.clone(), stmt.clone());
        }
        stmt
    }

    /// The server called `stmt` stale with `error` (a whole ErrorResponse): retired, and that
    /// error is its answer wherever it is not prepared.
    pub fn retire_stale(&self, stmt: &Arc<Statement>, error: &[u8]) {
        let _ = stmt.stale_error.set(error.into());
        self.retire(stmt);
    }

    /// Retires `stmt`: sessions holding it keep it, the next Parse of its text gets a new one.
    pub fn retire(&self, stmt: &Arc<Statement>) {
        if !stmt.retired.swap(true, Ordering::Relaxed) {
            let mut reg = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if reg
                .by_body
                .get(&stmt.parse_rest)
                .is_some_and(|s| Arc::ptr_eq(s, stmt))
            {
                reg.by_body.remove(&stmt.parse_rest);
            }
        }
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

/// Whether a Parse body after the name (query, NUL, count, type OIDs) names every type.
fn all_typed(parse_rest: &[u8]) -> bool {
    let Some(nul) = parse_rest.iter().position(|&b| b == 0) else {
        return false;
    };
    let types = &parse_rest[nul + 1..];
    types.len() >= 2
        && types[2..]
            .chunks(4)
            .all(|oid| oid.len() == 4 && oid != [0, 0, 0, 0])
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
        let reg = StatementRegistry::new("_s_x_".into(), Arc::default());
        let a = reg.intern(b"select 1\0\0\0", false);
        let b = reg.intern(b"select 1\0\0\0", false);
        let c = reg.intern(b"select 2\0\0\0", false);
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(&*a.server_name, format!("_s_x_{}", a.id).as_bytes());
    }

    #[test]
    fn schema_change_and_retire_give_the_next_parse_a_new_statement() {
        let reg = StatementRegistry::new("_s_x_".into(), Arc::default());
        let a = reg.intern(b"select * from t\0\0\0", false);
        a.confirm();
        assert!(reg.confirmed(&a.parse_rest).is_some());
        reg.schema().changed();
        assert!(reg.confirmed(&a.parse_rest).is_none(), "DDL retires it");
        let b = reg.intern(&a.parse_rest, false);
        assert_ne!(a.id, b.id);
        assert!(Arc::ptr_eq(&b, &reg.intern(&a.parse_rest, false)));
        reg.retire(&a); // an old holder's retirement must not touch its successor
        assert!(Arc::ptr_eq(&b, &reg.intern(&a.parse_rest, false)));
        reg.retire(&b);
        let c = reg.intern(&a.parse_rest, false);
        assert_ne!(c.id, b.id);
    }

    #[test]
    fn typed_means_every_parameter_type_given() {
        assert!(all_typed(b"select 1\0\0\0"));
        assert!(all_typed(b"select $1\0\0\x01\0\0\0\x17"));
        assert!(!all_typed(b"select $1, $2\0\0\x02\0\0\0\x17\0\0\0\0"));
        assert!(!all_typed(b"no nul"));
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
