//! CancelRequest routing: sluice issues its own backend keys and forwards a cancel to the server
//! connection serving that session at that moment, and nowhere else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::wire::BackendKeyData;
use crate::session::{SessionInfo, SessionList, SessionRow, SessionState};

/// Where a session's query runs right now, if it holds a server connection.
#[derive(Debug)]
pub struct CancelTarget {
    current: Mutex<Option<(SocketAddr, BackendKeyData)>>,
    /// The session as /v1/sessions lists it.
    pub info: SessionInfo,
    pub state: SessionState,
}

impl CancelTarget {
    pub fn set(&self, target: Option<(SocketAddr, BackendKeyData)>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    fn get(&self) -> Option<(SocketAddr, BackendKeyData)> {
        *self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, i32), Arc<CancelTarget>>>,
}

/// A session's registration; unregisters on drop.
#[derive(Debug)]
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub key: BackendKeyData,
    pub target: Arc<CancelTarget>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.key.pid, self.key.key));
    }
}

impl CancelRegistry {
    /// Issues a fresh, unguessable key for a new session.
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> CancelHandle {
        let target = Arc::new(CancelTarget {
            current: Mutex::new(None),
            info,
            state: SessionState::default(),
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = loop {
            let key = BackendKeyData {
                pid: session_pid(rand::random()),
                key: rand::random(),
            };
            if !sessions.contains_key(&(key.pid, key.key)) {
                break key;
            }
        };
        sessions.insert((key.pid, key.key), target.clone());
        CancelHandle {
            registry: self.clone(),
            key,
            target,
        }
    }

    /// The server backend to cancel for a key sluice issued, if its session is running a query.
    pub fn lookup(&self, pid: i32, key: i32) -> Option<(SocketAddr, BackendKeyData)> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&(pid, key)).and_then(|t| t.get())
    }
}

impl SessionList for CancelRegistry {
    fn sessions(&self) -> Vec<SessionRow> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .values()
            .map(|t| {
                let (in_transaction, pinned) = t.state.get();
                SessionRow {
                    info: t.info.clone(),
                    server: t.get().map(|(addr, _)| addr.to_string()),
                    in_transaction,
                    pinned,
                }
            })
            .collect()
    }
}

/// Linux's largest `pid_max` (2^22): no process id on any server can exceed it.
const MAX_LINUX_PID: i32 = 1 << 22;

/// The backend pid a session is told: above any real process id, so a client that runs
/// `pg_terminate_backend(<its pid>)` through sluice reaches nobody's server backend (the
/// server answers that no such process exists), and positive, as drivers expect.
fn session_pid(random: u32) -> i32 {
    let span = (i32::MAX - MAX_LINUX_PID) as u32;
    MAX_LINUX_PID + 1 + (random % span) as i32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_pids_are_never_real_process_ids() {
        for random in [
            0,
            1,
            u32::MAX,
            u32::MAX / 2,
            (i32::MAX - MAX_LINUX_PID) as u32,
        ] {
            let pid = session_pid(random);
            assert!(pid > MAX_LINUX_PID, "{random} -> {pid}");
        }
        let registry = Arc::new(CancelRegistry::default());
        let peer = "127.0.0.1:40000".parse().unwrap();
        let handles: Vec<_> = (0..10_000)
            .map(|i| registry.register(SessionInfo::new(i, ("w", "pg"), "app", peer, false)))
            .collect();
        assert!(handles.iter().all(|h| h.key.pid > MAX_LINUX_PID));
    }

    #[test]
    fn only_the_issued_key_of_a_busy_session_resolves() {
        let registry = Arc::new(CancelRegistry::default());
        let peer = "127.0.0.1:40000".parse().unwrap();
        let handle = registry.register(SessionInfo::new(1, ("writer", "pg"), "app", peer, false));
        let (pid, key) = (handle.key.pid, handle.key.key);
        assert_eq!(
            registry.lookup(pid, key),
            None,
            "idle session: nothing to cancel"
        );
        let server = (
            "127.0.0.1:5432".parse().unwrap(),
            BackendKeyData { pid: 42, key: 7 },
        );
        handle.target.set(Some(server));
        assert_eq!(registry.lookup(pid, key), Some(server));
        let listed = registry.sessions();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].server.as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(
            registry.lookup(pid, key.wrapping_add(1)),
            None,
            "wrong secret"
        );
        drop(handle);
        assert_eq!(registry.lookup(pid, key), None, "gone with its session");
    }
}
