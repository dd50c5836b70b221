//! The accept loop of one endpoint: allow-list by CIDR, socket options, one task per client of
//! the endpoint's engine.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Cidr;
use crate::mysql::client::MyEndpoint;
use crate::postgres::client::PgEndpoint;

/// An endpoint of either engine.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Postgres(Arc<PgEndpoint>),
    Mysql(Arc<MyEndpoint>),
}

impl Endpoint {
    fn name(&self) -> &str {
        match self {
            Self::Postgres(ep) => &ep.name,
            Self::Mysql(ep) => &ep.name,
        }
    }
}

/// Accepts clients until the task is dropped.
pub async fn accept_loop(listener: TcpListener, allowed: Vec<Cidr>, endpoint: Endpoint) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(endpoint = %endpoint.name(), error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allowed_peer(&allowed, peer) {
            tracing::info!(endpoint = %endpoint.name(), %peer, "client refused by allowed_cidrs");
            continue;
        }
        let _ = stream.set_nodelay(true);
        match &endpoint {
            Endpoint::Postgres(ep) => {
                tokio::spawn(crate::postgres::client::serve(stream, peer, ep.clone()));
            }
            Endpoint::Mysql(ep) => {
                tokio::spawn(crate::mysql::client::serve(stream, peer, ep.clone()));
            }
        }
    }
}

fn allowed_peer(allowed: &[Cidr], peer: SocketAddr) -> bool {
    allowed.is_empty() || allowed.iter().any(|c| c.contains(peer.ip()))
}
