//! Test support for driving a relay without a database: a connector whose server connections
//! are in-memory sockets the test plays the server on, and one end of such a conversation.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::time::Duration;

use super::{ConnectFuture, Connector};
use crate::auth::credentials::Credentials;
use crate::errors::ConnectError;
use crate::tls::memory::{self, MemorySocket};

/// How long a scripted side waits for the relay before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The pools' secret, with SCRAM keys of one iteration (the rigs check no password).
pub fn credentials() -> Arc<Credentials> {
    let secret = serde_json::from_str(r#"{"username": "app", "password": "pw"}"#).unwrap();
    Arc::new(Credentials::fixed_unstretched("app", secret))
}

/// Opens server connections over in-memory pairs; `make` wraps sluice's end in the engine's
/// connection type, the far end goes to [`Servers`].
#[derive(Debug)]
pub struct Scripted<C> {
    servers: mpsc::UnboundedSender<MemorySocket>,
    failures: Arc<Mutex<VecDeque<ConnectError>>>,
    make: fn(MemorySocket) -> C,
}

/// The test's side of the connector: the server end of each connection it opened.
#[derive(Debug)]
pub struct Servers {
    opened: mpsc::UnboundedReceiver<MemorySocket>,
    failures: Arc<Mutex<VecDeque<ConnectError>>>,
}

/// A scripted instance at `addr` with a cap of `max` connections and one pool on it, whose
/// connections `make` builds from in-memory sockets.
pub fn instance<C: super::PooledConnection>(
    addr: &str,
    max: usize,
    make: fn(MemorySocket) -> C,
) -> (Arc<super::Instance<C>>, super::Pool<C>, Servers) {
    let instance = Arc::new(super::Instance::new(
        addr.into(),
        super::Limit::Absolute(max),
        100,
    ));
    let (connector, servers) = connector(make);
    let settings = super::PoolSettings::uniform(Duration::from_secs(2));
    let pool = super::Pool::new(
        format!("app@{addr}"),
        instance.clone(),
        Box::new(connector),
        settings,
    );
    (instance, pool, servers)
}

pub fn connector<C: Send + 'static>(make: fn(MemorySocket) -> C) -> (Scripted<C>, Servers) {
    let (tx, opened) = mpsc::unbounded_channel();
    let failures = Arc::new(Mutex::new(VecDeque::new()));
    let scripted = Scripted {
        servers: tx,
        failures: failures.clone(),
        make,
    };
    (scripted, Servers { opened, failures })
}

impl<C: Send + 'static> Connector<C> for Scripted<C> {
    fn connect(&self) -> ConnectFuture<'_, C> {
        Box::pin(async move {
            if let Some(e) = self.failures.lock().unwrap().pop_front() {
                return Err(e);
            }
            let (ours, theirs) = memory::pair();
            self.servers.send(theirs).unwrap();
            Ok((self.make)(ours))
        })
    }
}

impl Servers {
    /// The next server connection the pool opened.
    pub async fn next(&mut self) -> Peer {
        let sock = tokio::time::timeout(WAIT, self.opened.recv())
            .await
            .expect("no server connection opened")
            .unwrap();
        Peer::new(sock)
    }

    /// A server connection the pool opened since the last call, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Peer> {
        self.opened.try_recv().ok().map(Peer::new)
    }

    /// The next connect fails with `e`.
    pub fn fail_next(&self, e: ConnectError) {
        self.failures.lock().unwrap().push_back(e);
    }
}

/// One end of a scripted conversation; the engine's tests say what a message is.
#[derive(Debug)]
pub struct Peer {
    pub sock: MemorySocket,
    pub buf: BytesMut,
}

impl Peer {
    pub fn new(sock: MemorySocket) -> Self {
        Self {
            sock,
            buf: BytesMut::new(),
        }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.sock.write(bytes).unwrap();
    }

    /// The next message `take` finds whole at the front of what was read, or `None` once the
    /// other side closed.
    pub async fn next<T>(&mut self, mut take: impl FnMut(&mut BytesMut) -> Option<T>) -> Option<T> {
        loop {
            if let Some(message) = take(&mut self.buf) {
                return Some(message);
            }
            tokio::time::timeout(WAIT, self.sock.readable())
                .await
                .expect("nothing within the wait");
            if self.sock.read_some(&mut self.buf, 1 << 16).unwrap_or(0) == 0 {
                return None;
            }
        }
    }
}

/// Open and idle connections of `instance`, once the tasks that use it had time to act.
pub async fn settled<C: super::PooledConnection>(instance: &super::Instance<C>) -> (usize, usize) {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let stats = instance.stats();
    (stats.open, stats.idle)
}
