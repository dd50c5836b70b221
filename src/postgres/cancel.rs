//! CancelRequest routing: sluice issues its own backend keys and forwards a cancel to the server
//! connection serving that session at that moment, and nowhere else.

use std::sync::Arc;

use super::server::ServerAddr;
use super::wire::BackendKeyData;
use crate::session::SessionInfo;
use crate::session::registry::{Entry, Handle, Registry, Running};

/// Where a session's query runs right now: the server connection's address and backend key.
pub type Backend = (ServerAddr, BackendKeyData);

impl Running for Backend {
    fn server(&self) -> String {
        self.0.to_string()
    }
}

/// Sessions by the backend key sluice issued them.
pub type CancelRegistry = Registry<BackendKeyData, Backend>;
/// A session's registration; unregisters on drop.
pub type CancelHandle = Handle<BackendKeyData, Backend>;
pub type CancelTarget = Entry<Backend>;

/// Registers a new session under a fresh, unguessable key.
pub fn register(registry: &Arc<CancelRegistry>, info: SessionInfo) -> CancelHandle {
    registry.register(info, "", || BackendKeyData {
        pid: session_pid(rand::random()),
        key: rand::random(),
    })
}

/// The server backend to cancel for a key sluice issued, if its session is running a query;
/// a query waiting for a server connection is cancelled on the spot.
pub fn lookup(registry: &CancelRegistry, pid: i32, key: i32) -> Option<Backend> {
    registry.get(&BackendKeyData { pid, key })?.cancel()
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
    use crate::session::SessionList;

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
            .map(|i| {
                register(
                    &registry,
                    SessionInfo::new(i, (&"w".into(), &"pg".into()), "app", peer, false),
                )
            })
            .collect();
        assert!(handles.iter().all(|h| h.key.pid > MAX_LINUX_PID));
    }

    #[test]
    fn only_the_issued_key_of_a_busy_session_resolves() {
        let registry = Arc::new(CancelRegistry::default());
        let peer = "127.0.0.1:40000".parse().unwrap();
        let handle = register(
            &registry,
            SessionInfo::new(1, (&"writer".into(), &"pg".into()), "app", peer, false),
        );
        let (pid, key) = (handle.key.pid, handle.key.key);
        assert_eq!(
            lookup(&registry, pid, key),
            None,
            "idle session: nothing to cancel"
        );
        let server = (
            ServerAddr::Tcp("127.0.0.1:5432".parse().unwrap()),
            BackendKeyData { pid: 42, key: 7 },
        );
        handle.target.set(Some(server.clone()));
        assert_eq!(lookup(&registry, pid, key), Some(server));
        let listed = registry.sessions();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].server.as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(
            lookup(&registry, pid, key.wrapping_add(1)),
            None,
            "wrong secret"
        );
        drop(handle);
        assert_eq!(lookup(&registry, pid, key), None, "gone with its session");
    }
}
