//! `KILL QUERY <id>` routing: clients see sluice's connection ids, and a kill reaches the server
//! thread running that session's statement right now, only for a session of the same user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::session::{SessionInfo, SessionList, SessionRow, SessionState};

/// Where a session's statement runs right now: (instance address, server thread id).
#[derive(Debug)]
pub struct KillTarget {
    user: Box<str>,
    current: Mutex<Option<(Arc<str>, u32)>>,
    /// The session as /v1/sessions lists it.
    pub info: SessionInfo,
    pub state: SessionState,
}

impl KillTarget {
    pub fn set(&self, target: Option<(Arc<str>, u32)>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

#[derive(Debug, Default)]
pub struct KillRegistry {
    sessions: Mutex<HashMap<u32, Arc<KillTarget>>>,
}

/// A session's registration; unregisters on drop.
#[derive(Debug)]
pub struct KillHandle {
    registry: Arc<KillRegistry>,
    pub id: u32,
    pub target: Arc<KillTarget>,
}

impl KillHandle {
    pub fn lookup(&self, id: u32, user: &str) -> KillLookup {
        self.registry.lookup(id, user)
    }
}

impl Drop for KillHandle {
    fn drop(&mut self) {
        let mut sessions = self
            .registry
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A session that re-registered (COM_CHANGE_USER) keeps its id under the new handle.
        if sessions
            .get(&self.id)
            .is_some_and(|t| Arc::ptr_eq(t, &self.target))
        {
            sessions.remove(&self.id);
        }
    }
}

/// What a `KILL QUERY` for a sluice connection id resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum KillLookup {
    /// No such session, or another user's (MySQL says "Unknown thread id" for both).
    Unknown,
    /// The session holds no server connection: nothing runs.
    Idle,
    Running(Arc<str>, u32),
}

impl KillRegistry {
    pub fn register(self: &Arc<Self>, id: u32, user: &str, info: SessionInfo) -> KillHandle {
        let target = Arc::new(KillTarget {
            user: user.into(),
            current: Mutex::new(None),
            info,
            state: SessionState::default(),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, target.clone());
        KillHandle {
            registry: self.clone(),
            id,
            target,
        }
    }

    pub fn lookup(&self, id: u32, user: &str) -> KillLookup {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&id) {
            Some(t) if &*t.user == user => {
                match t.current.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    Some((addr, thread)) => KillLookup::Running(addr, thread),
                    None => KillLookup::Idle,
                }
            }
            _ => KillLookup::Unknown,
        }
    }
}

impl SessionList for KillRegistry {
    fn sessions(&self) -> Vec<SessionRow> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .values()
            .map(|t| {
                let (in_transaction, pinned) = t.state.get();
                SessionRow {
                    info: t.info.clone(),
                    server: t
                        .current
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .map(|(addr, _)| addr.to_string()),
                    in_transaction,
                    pinned,
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_session_of_the_same_user_resolves() {
        let registry = Arc::new(KillRegistry::default());
        let peer = "127.0.0.1:40000".parse().unwrap();
        let info = SessionInfo::new(7, ("writer", "my"), "app", peer, false);
        let handle = registry.register(7, "app", info);
        assert_eq!(registry.lookup(7, "app"), KillLookup::Idle);
        handle.target.set(Some(("db:3306".into(), 99)));
        assert_eq!(registry.sessions()[0].server.as_deref(), Some("db:3306"));
        assert_eq!(
            registry.lookup(7, "app"),
            KillLookup::Running("db:3306".into(), 99)
        );
        assert_eq!(registry.lookup(7, "other"), KillLookup::Unknown);
        assert_eq!(registry.lookup(8, "app"), KillLookup::Unknown);
        drop(handle);
        assert_eq!(registry.lookup(7, "app"), KillLookup::Unknown);
    }
}
