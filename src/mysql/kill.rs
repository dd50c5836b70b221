//! `KILL QUERY <id>` routing: clients see sluice's connection ids, and a kill reaches the server
//! thread running that session's statement right now, only for a session of the same user.

use std::sync::Arc;

use crate::session::SessionInfo;
use crate::session::registry::{Entry, Handle, Registry, Running};

/// Where a session's statement runs right now: (instance address, server thread id).
pub type Thread = (Arc<str>, u32);

impl Running for Thread {
    fn server(&self) -> String {
        self.0.to_string()
    }
}

/// Sessions by the connection id their client was given.
pub type KillRegistry = Registry<u32, Thread>;
/// A session's registration; unregisters on drop.
pub type KillHandle = Handle<u32, Thread>;
pub type KillTarget = Entry<Thread>;

/// What a `KILL QUERY` for a sluice connection id resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum KillLookup {
    /// No such session, or another user's (MySQL says "Unknown thread id" for both).
    Unknown,
    /// The session holds no server connection: nothing runs (or what waited for one was
    /// stopped).
    Idle,
    Running(Arc<str>, u32),
}

/// The connection id a session is given for its 64-bit session id: the MySQL wire has 32 bits
/// for it (the greeting, `CONNECTION_ID()`, `KILL`). The one place the id is narrowed: past
/// 2^32 sessions the low bits repeat, so an id a live session holds (or 0, which clients read
/// as none) is skipped rather than shared.
pub fn connection_id(registry: &KillRegistry, session: u64) -> u32 {
    let mut id = session as u32; // the low 32 bits, on purpose; checked below
    while id == 0 || registry.contains(&id) {
        id = id.wrapping_add(1);
    }
    id
}

/// Registers a session under the connection id its client was given (again after
/// COM_CHANGE_USER, as a new user).
pub fn register(
    registry: &Arc<KillRegistry>,
    id: u32,
    user: &str,
    info: SessionInfo,
) -> KillHandle {
    registry.replace(id, info, user)
}

/// The statement a `KILL QUERY <id>` from `user` would stop; one waiting for a server
/// connection is stopped on the spot (answered 1317, and never run).
pub fn lookup(registry: &KillRegistry, id: u32, user: &str) -> KillLookup {
    match registry.get(&id) {
        Some(t) if &*t.owner == user => match t.cancel() {
            Some((addr, thread)) => KillLookup::Running(addr, thread),
            None => KillLookup::Idle,
        },
        _ => KillLookup::Unknown,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::session::SessionList;

    fn info(id: u64) -> SessionInfo {
        let peer = "127.0.0.1:40000".parse().unwrap();
        SessionInfo::new(id, (&"writer".into(), &"my".into()), "app", peer, false)
    }

    #[test]
    fn only_a_running_session_of_the_same_user_resolves() {
        let registry = Arc::new(KillRegistry::default());
        let handle = register(&registry, 7, "app", info(7));
        assert_eq!(lookup(&registry, 7, "app"), KillLookup::Idle);
        handle.target.set(Some(("db:3306".into(), 99)));
        assert_eq!(registry.sessions()[0].server.as_deref(), Some("db:3306"));
        assert_eq!(
            lookup(&registry, 7, "app"),
            KillLookup::Running("db:3306".into(), 99)
        );
        assert_eq!(lookup(&registry, 7, "other"), KillLookup::Unknown);
        assert_eq!(lookup(&registry, 8, "app"), KillLookup::Unknown);
        drop(handle);
        assert_eq!(lookup(&registry, 7, "app"), KillLookup::Unknown);
    }

    #[test]
    fn connection_ids_past_32_bits_never_reach_a_live_session() {
        let registry = Arc::new(KillRegistry::default());
        assert_eq!(connection_id(&registry, 5), 5);
        let live = register(&registry, 5, "app", info(5));
        // 2^32 sessions later the low bits are 5 again: that id is taken.
        assert_eq!(connection_id(&registry, (1 << 32) + 5), 6);
        assert_eq!(connection_id(&registry, 1 << 32), 1, "0 is never given");
        assert_eq!(connection_id(&registry, u64::from(u32::MAX)), u32::MAX);
        drop(live);
        assert_eq!(connection_id(&registry, (1 << 32) + 5), 5);
    }
}
