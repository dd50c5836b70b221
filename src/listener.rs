//! The accept loop of one endpoint: allow-list by CIDR (before any protocol byte), the
//! handshake rate limit, socket options, one task per client of the endpoint's engine.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

use crate::config::Cidr;
use crate::mysql::endpoint::MyEndpoint;
use crate::postgres::client::PgEndpoint;

/// An endpoint of either engine.
#[derive(Debug, Clone)]
pub enum AnyEndpoint {
    Postgres(Arc<PgEndpoint>),
    Mysql(Arc<MyEndpoint>),
}

impl AnyEndpoint {
    fn name(&self) -> &str {
        match self {
            Self::Postgres(ep) => &ep.name,
            Self::Mysql(ep) => &ep.name,
        }
    }

    fn metrics(&self) -> &crate::metrics::EndpointMetrics {
        match self {
            Self::Postgres(ep) => &ep.metrics,
            Self::Mysql(ep) => &ep.metrics,
        }
    }
}

/// Who may connect and how fast.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub allowed: Vec<Cidr>,
    pub handshakes_per_second: Option<u32>,
}

/// What a listening address serves now: a reload swaps it without closing the socket.
#[derive(Debug)]
pub struct Served {
    pub endpoint: AnyEndpoint,
    pub admission: Admission,
}

/// Accepts clients until the task is dropped; each session is a task `sessions` tracks, so a
/// drain can wait for them. Each client gets the endpoint `served` holds when it connects.
pub async fn accept_loop(
    listener: TcpListener,
    served: Arc<ArcSwap<Served>>,
    sessions: TaskTracker,
) {
    let mut bucket: Option<Bucket> = None;
    loop {
        let rate = served.load().admission.handshakes_per_second;
        if bucket.as_ref().map(|b| b.per_second) != rate {
            bucket = rate.map(Bucket::new);
        }
        if let Some(bucket) = &mut bucket {
            // Waiting here leaves further clients in the kernel's listen queue.
            bucket.take().await;
        }
        let accepted = listener.accept().await;
        let now = served.load_full();
        let (endpoint, admission) = (&now.endpoint, &now.admission);
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(endpoint = %endpoint.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allowed_peer(&admission.allowed, peer) {
            crate::audit::turned_away(endpoint.name(), peer, "not in allowed_cidrs");
            endpoint.metrics().refused_cidr.inc();
            continue;
        }
        crate::audit::connected(endpoint.name(), peer);
        endpoint.metrics().received.inc();
        let _ = stream.set_nodelay(true);
        // Boxed: spawning moves a future by value several times on its way into the task, and
        // the task's completion copies the task's stage (its size) again; a session's future is
        // about 1.5 KiB, a pointer is 8 bytes (callgrind, `pgbench -C`: the copies were 2 % of a
        // connection's instructions).
        match endpoint {
            AnyEndpoint::Postgres(ep) => {
                sessions.spawn(Box::pin(crate::postgres::client::serve(
                    stream,
                    peer,
                    ep.clone(),
                )));
            }
            AnyEndpoint::Mysql(ep) => {
                sessions.spawn(Box::pin(crate::mysql::client::serve(
                    stream,
                    peer,
                    ep.clone(),
                )));
            }
        }
    }
}

fn allowed_peer(allowed: &[Cidr], peer: SocketAddr) -> bool {
    allowed.is_empty() || allowed.iter().any(|c| c.contains(peer.ip()))
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
#[derive(Debug)]
struct Bucket {
    per_second: u32,
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        let per_second = rate;
        let rate = f64::from(rate.max(1));
        Self {
            per_second,
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    async fn take(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_paces() {
        let mut bucket = Bucket::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            bucket.take().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst waited"
        );
        for _ in 0..20 {
            bucket.take().await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(1990) && paced <= Duration::from_millis(2100),
            "20 more at 10/s took {paced:?}"
        );
    }
}
