//! An endpoint as its sessions see it: what both engines share (names, users, client TLS,
//! timeouts, the session id counter and the series) around the engine's own part `E` (its
//! cluster and session registry). Built by `app`, one `Arc` shared by the endpoint's sessions.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::time::Duration;

use crate::auth::users::Users;
use crate::metrics::EndpointMetrics;
use crate::routing::Want;
use crate::tls::ClientTls;

#[derive(Debug)]
pub struct Endpoint<E> {
    /// Shared with every session's listing entry, as is the group's name.
    pub name: Arc<str>,
    /// Its target group's name (session listings and gauges are per group).
    pub group: Arc<str>,
    /// What this endpoint's transactions need: the writer, a reader, or either (split).
    pub want: Want,
    /// Split endpoints: how long a read after a write waits for a reader that applied it.
    pub read_your_writes_timeout: Duration,
    pub users: Arc<Users>,
    /// The port clients connect to: IAM tokens are signed for it.
    pub port: u16,
    /// The certificate offered to clients that ask for TLS; `None`: TLS is not offered.
    pub tls: Option<Arc<ClientTls>>,
    /// Refuse clients that did not switch to TLS.
    pub require_tls: bool,
    pub idle_client_timeout: Duration,
    /// An idle plain-TCP session parks after this long; `None`: never.
    pub idle_client_park_after: Option<Duration>,
    /// This endpoint's client-side series.
    pub metrics: EndpointMetrics,
    /// Process-wide: endpoints share pools, and a session id marks what a session owns there.
    pub session_ids: Arc<AtomicU64>,
    /// The engine's own part.
    pub engine: E,
}

impl Endpoint<()> {
    /// The shared part, completed with the engine's.
    pub fn with_engine<E>(self, engine: E) -> Endpoint<E> {
        Endpoint {
            name: self.name,
            group: self.group,
            want: self.want,
            read_your_writes_timeout: self.read_your_writes_timeout,
            users: self.users,
            port: self.port,
            tls: self.tls,
            require_tls: self.require_tls,
            idle_client_timeout: self.idle_client_timeout,
            idle_client_park_after: self.idle_client_park_after,
            metrics: self.metrics,
            session_ids: self.session_ids,
            engine,
        }
    }
}
