//! The composition root: turns a validated Config into bound listeners, pools and users.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::auth::users::{Users, UsersError};
use crate::config::{Config, ConnectionPool, Engine};
use crate::listener::{self, Endpoint};
use crate::mysql::client::MyEndpoint;
use crate::mysql::kill::KillRegistry;
use crate::mysql::pools::MyPools;
use crate::pool::{Instance, Limit, PoolSettings};
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::client::PgEndpoint;
use crate::postgres::pools::PgPools;
use crate::routing;

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error("endpoint {endpoint}: cannot listen on {addr}: {source}")]
    Bind {
        endpoint: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("endpoint {endpoint}: {reason}")]
    Unsupported { endpoint: String, reason: String },
}

/// Everything sluice runs, bound and ready.
#[derive(Debug)]
pub struct App {
    tasks: JoinSet<()>,
    addrs: Vec<(String, SocketAddr)>,
}

impl App {
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        let users = Arc::new(Users::load(config)?);
        let cancel = Arc::new(CancelRegistry::default());
        let kill = Arc::new(KillRegistry::default());
        let session_ids = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        // One set of pools per (target group, instance), shared by the endpoints using it.
        let mut pools: HashMap<(String, String), Arc<PgPools>> = HashMap::new();
        let mut my_pools: HashMap<(String, String), Arc<MyPools>> = HashMap::new();
        for ep in &config.endpoints {
            let unsupported = |reason: &str| AppError::Unsupported {
                endpoint: ep.name.clone(),
                reason: reason.to_owned(),
            };
            let group = &config.target_groups[&ep.target_group];
            let addr = routing::instance_for(group, ep.role).ok_or_else(|| {
                unsupported("read_only endpoints need health probes, not in this build yet")
            })?;
            let key = (ep.target_group.clone(), addr.to_owned());
            let listener = bind(ep.listen).map_err(|source| AppError::Bind {
                endpoint: ep.name.clone(),
                addr: ep.listen,
                source,
            })?;
            let local = listener.local_addr().unwrap_or(ep.listen);
            addrs.push((ep.name.clone(), local));
            let endpoint = match group.engine {
                Engine::Postgres => {
                    let pg = pools
                        .entry(key)
                        .or_insert_with(|| {
                            let (instance, settings) = instance_for(addr, &group.connection_pool);
                            let p = Arc::new(PgPools::new(
                                instance,
                                settings,
                                group.connection_pool.init_query.clone(),
                            ));
                            tasks.spawn(trim_loop(p.instance.clone(), settings));
                            p
                        })
                        .clone();
                    Endpoint::Postgres(Arc::new(PgEndpoint {
                        name: ep.name.clone(),
                        pools: pg,
                        users: users.clone(),
                        cancel: cancel.clone(),
                        idle_client_timeout: config.idle_client_timeout.as_std(),
                        session_ids: session_ids.clone(),
                    }))
                }
                Engine::Mysql => {
                    let my = my_pools
                        .entry(key)
                        .or_insert_with(|| {
                            let (instance, settings) = instance_for(addr, &group.connection_pool);
                            let p = Arc::new(MyPools::new(
                                instance,
                                settings,
                                group.connection_pool.init_query.clone(),
                            ));
                            tasks.spawn(trim_loop(p.instance.clone(), settings));
                            p
                        })
                        .clone();
                    Endpoint::Mysql(Arc::new(MyEndpoint {
                        name: ep.name.clone(),
                        pools: my,
                        users: users.clone(),
                        kill: kill.clone(),
                        idle_client_timeout: config.idle_client_timeout.as_std(),
                        session_ids: session_ids.clone(),
                    }))
                }
            };
            tracing::info!(endpoint = %ep.name, listen = %local, instance = addr, "endpoint ready");
            tasks.spawn(listener::accept_loop(
                listener,
                ep.allowed_cidrs.clone(),
                endpoint,
            ));
        }
        Ok(Self { tasks, addrs })
    }

    /// The bound address of each endpoint (useful when configured with port 0).
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        tracing::info!("shutting down");
        self.tasks.shutdown().await;
    }
}

/// A listening socket with SO_REUSEADDR, so a restarted sluice can bind its port while
/// connections it closed are still in TIME-WAIT (as PgBouncer and the databases do).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The instance (connection cap) and pool timings a target group's pool settings describe.
fn instance_for<C: crate::pool::PooledConnection>(
    addr: &str,
    cp: &ConnectionPool,
) -> (Arc<Instance<C>>, PoolSettings) {
    let limit = match (cp.max_connections, cp.max_connections_percent) {
        (Some(n), _) => Limit::Absolute(n as usize),
        (None, Some(p)) => Limit::Percent(p),
        (None, None) => Limit::Percent(100),
    };
    let instance = Arc::new(Instance::new(
        addr.to_owned(),
        limit,
        cp.max_idle_connections_percent,
    ));
    let settings = PoolSettings {
        borrow_timeout: cp.connection_borrow_timeout.as_std(),
        connect_timeout: cp.connect_timeout.as_std(),
        max_lifetime: cp.max_connection_lifetime.as_std(),
        idle_timeout: cp.idle_timeout.as_std(),
    };
    (instance, settings)
}

/// Closes idle connections past their idle timeout, lifetime or the idle cap.
async fn trim_loop<C: crate::pool::PooledConnection>(instance: Arc<Instance<C>>, s: PoolSettings) {
    let period = (s.idle_timeout / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let closed = instance.trim(s.idle_timeout, s.max_lifetime);
        if closed > 0 {
            tracing::debug!(
                instance = instance.addr(),
                closed,
                "idle connections trimmed"
            );
        }
    }
}
