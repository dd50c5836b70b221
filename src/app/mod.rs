//! The composition root: turns a validated Config into bound listeners, pools and users.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod groups;

use crate::auth::iam::signer::TokenSigner;
use crate::auth::secrets_manager::AwsEnv;
use crate::auth::users::{User, Users, UsersError};
use crate::config::{Config, ConnectionPool, Engine, Role, TargetGroup};
use crate::health::{self, Monitor, Thresholds, Timing};
use crate::listener::{self, Endpoint};
use crate::metrics::admin::{self, AdminState};
use crate::metrics::api::EndpointView;
use crate::metrics::{GroupStats, Metrics};
use crate::mysql::client::MyEndpoint;
use crate::mysql::cluster::MyCluster;
use crate::mysql::kill::KillRegistry;
use crate::mysql::pools::MyPools;
use crate::mysql::probe::MyProbe;
use crate::pool::{Instance, Limit, PoolSettings, PooledConnection, ServerAccess};
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::client::PgEndpoint;
use crate::postgres::cluster::PgCluster;
use crate::postgres::pools::{PgPools, Registries};
use crate::postgres::probe::PgProbe;
use crate::routing::{Cluster, Router, Want};
use crate::tls::{ClientTls, ServerConnector, TlsError};

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
    #[error("tls: {0}")]
    Tls(TlsError),
    #[error("target group {group}: server_tls: {source}")]
    ServerTls { group: String, source: TlsError },
    #[error(
        "target group {group}: server_iam: no AWS credentials found (environment, profile, web identity or instance profile)"
    )]
    ServerIam { group: String },
    #[error("endpoint {endpoint}: {reason}")]
    Unsupported { endpoint: String, reason: String },
    #[error("admin.bearer_token_env: the environment variable {0} is not set or empty")]
    AdminToken(String),
}

/// Everything sluice runs, bound and ready.
#[derive(Debug)]
pub struct App {
    tasks: JoinSet<()>,
    /// The accept loops: ended first when draining.
    accepts: JoinSet<()>,
    /// Every client session, so a drain can wait for them.
    sessions: TaskTracker,
    drain: CancellationToken,
    shutdown_grace: Duration,
    shutdown_timeout: Duration,
    addrs: Vec<(String, SocketAddr)>,
    /// The admin listener's bound address, and what it answers from.
    admin: Option<SocketAddr>,
    state: Arc<AdminState>,
}

impl App {
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        let aws = AwsEnv::new(&config.secrets_manager);
        let users = Arc::new(Users::load(config, &aws).await?);
        let cancel = Arc::new(CancelRegistry::default());
        let kill = Arc::new(KillRegistry::default());
        let session_ids = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let mut accepts = JoinSet::new();
        let sessions = TaskTracker::new();
        let drain = CancellationToken::new();
        let stored: Vec<_> = users.from_secrets_manager().cloned().collect();
        if !stored.is_empty() {
            let every = config.secrets_manager.refresh_interval.as_std();
            tasks.spawn(crate::auth::credentials::refresh_every(stored, every));
        }
        let mut addrs = Vec::new();
        let mut endpoint_views = Vec::new();
        let tls = match &config.tls {
            Some(files) => {
                let tls = Arc::new(ClientTls::load(files).map_err(AppError::Tls)?);
                tasks.spawn(tls.clone().watch());
                Some(tls)
            }
            None => None,
        };
        // Once per target group (its CA file read once), whatever the number of its endpoints.
        let mut access_by_group = HashMap::new();
        for (name, group) in &config.target_groups {
            let tls =
                ServerConnector::new(&group.server_tls).map_err(|source| AppError::ServerTls {
                    group: name.clone(),
                    source,
                })?;
            let iam = match &group.server_iam {
                Some(iam) => {
                    let provider = aws.config().await.credentials_provider().ok_or_else(|| {
                        AppError::ServerIam {
                            group: name.clone(),
                        }
                    })?;
                    Some(Arc::new(TokenSigner::new(&iam.region, provider)))
                }
                None => None,
            };
            access_by_group.insert(name.as_str(), ServerAccess { tls, iam });
        }
        // One cluster (pools per instance, router, probes) per target group, shared by the
        // endpoints using it.
        let mut metrics = Metrics::new();
        let mut pg: HashMap<String, Arc<PgCluster>> = HashMap::new();
        let mut my: HashMap<String, Arc<MyCluster>> = HashMap::new();
        for ep in &config.endpoints {
            let name = &ep.target_group;
            let group = &config.target_groups[name];
            let monitor =
                monitor_user(config, &users, group).ok_or_else(|| AppError::Unsupported {
                    endpoint: ep.name.clone(),
                    reason: "no auth entry for the probes to log in with".into(),
                })?;
            let listener = bind(ep.listen).map_err(|source| AppError::Bind {
                endpoint: ep.name.clone(),
                addr: ep.listen,
                source,
            })?;
            let local = listener.local_addr().unwrap_or(ep.listen);
            addrs.push((ep.name.clone(), local));
            let want = match ep.role {
                Role::ReadWrite => Want::Writer,
                Role::ReadOnly => Want::Reader {
                    fallback: ep.reader_fallback_to_writer,
                },
                Role::ReadWriteSplit => Want::Split,
            };
            let ryw_timeout = ep.read_your_writes_timeout.as_std();
            let access = &access_by_group[name.as_str()];
            let endpoint_metrics = metrics.endpoint(&ep.name, name);
            endpoint_views.push(EndpointView {
                name: ep.name.clone(),
                listen: local,
                target_group: name.clone(),
                engine: match group.engine {
                    Engine::Postgres => "postgres",
                    Engine::Mysql => "mysql",
                },
                role: match ep.role {
                    Role::ReadWrite => "read_write",
                    Role::ReadOnly => "read_only",
                    Role::ReadWriteSplit => "read_write_split",
                },
                require_tls: ep.require_tls,
                metrics: endpoint_metrics.clone(),
            });
            let endpoint = match group.engine {
                Engine::Postgres => {
                    let cluster = pg
                        .entry(name.clone())
                        .or_insert_with(|| {
                            pg_cluster(name, group, &monitor, access, &drain, &mut tasks)
                        })
                        .clone();
                    Endpoint::Postgres(Arc::new(PgEndpoint {
                        name: ep.name.clone(),
                        cluster,
                        want,
                        read_your_writes_timeout: ryw_timeout,
                        users: users.clone(),
                        port: local.port(),
                        tls: tls.clone(),
                        require_tls: ep.require_tls,
                        cancel: cancel.clone(),
                        idle_client_timeout: config.idle_client_timeout.as_std(),
                        session_ids: session_ids.clone(),
                        metrics: endpoint_metrics.clone(),
                    }))
                }
                Engine::Mysql => {
                    let cluster = my
                        .entry(name.clone())
                        .or_insert_with(|| {
                            my_cluster(name, group, &monitor, access, &drain, &mut tasks)
                        })
                        .clone();
                    Endpoint::Mysql(Arc::new(MyEndpoint {
                        name: ep.name.clone(),
                        cluster,
                        want,
                        read_your_writes_timeout: ryw_timeout,
                        users: users.clone(),
                        port: local.port(),
                        tls: tls.clone(),
                        require_tls: ep.require_tls,
                        kill: kill.clone(),
                        idle_client_timeout: config.idle_client_timeout.as_std(),
                        session_ids: session_ids.clone(),
                        metrics: endpoint_metrics.clone(),
                    }))
                }
            };
            tracing::info!(endpoint = %ep.name, listen = %local, target_group = %name, role = ?ep.role, "endpoint ready");
            let admission = listener::Admission {
                allowed: ep.allowed_cidrs.clone(),
                handshakes_per_second: ep.max_handshakes_per_second,
            };
            accepts.spawn(listener::accept_loop(
                listener,
                admission,
                endpoint,
                sessions.clone(),
            ));
        }
        let mut views: Vec<Arc<dyn GroupStats>> = Vec::new();
        for (name, cluster) in pg {
            views.push(Arc::new(groups::GroupView { name, cluster }));
        }
        for (name, cluster) in my {
            views.push(Arc::new(groups::GroupView { name, cluster }));
        }
        views.sort_by(|a, b| a.name().cmp(b.name()));
        metrics.add_groups(views.clone());
        let token = match config
            .admin
            .as_ref()
            .and_then(|a| a.bearer_token_env.as_ref())
        {
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                _ => return Err(AppError::AdminToken(var.clone())),
            },
            None => None,
        };
        let state = Arc::new(AdminState {
            metrics: Arc::new(metrics),
            groups: views,
            endpoints: endpoint_views,
            sessions: vec![cancel.clone(), kill.clone()],
            draining: Default::default(),
            ready_without_writer: config
                .admin
                .as_ref()
                .is_some_and(|a| a.ready_without_writer),
            token,
        });
        let admin = match &config.admin {
            Some(a) => {
                let listener = bind(a.listen).map_err(|source| AppError::Bind {
                    endpoint: "admin".into(),
                    addr: a.listen,
                    source,
                })?;
                let local = listener.local_addr().unwrap_or(a.listen);
                tracing::info!(listen = %local, "admin ready: /metrics /healthz /readyz");
                tasks.spawn(admin::serve(listener, state.clone()));
                Some(local)
            }
            None => None,
        };
        Ok(Self {
            tasks,
            accepts,
            sessions,
            drain,
            shutdown_grace: config.shutdown_grace.as_std(),
            shutdown_timeout: config.shutdown_timeout.as_std(),
            addrs,
            admin,
            state,
        })
    }

    /// The admin listener's bound address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The bound address of each endpoint (useful when configured with port 0).
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Serves until `shutdown` resolves, then drains: /readyz turns 503 at once, listeners
    /// keep accepting for `shutdown_grace` (load balancers and Kubernetes endpoints catch up),
    /// then close; sessions end at their next transaction boundary; what is still in a
    /// transaction `shutdown_timeout` after the signal is cut off.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            grace = ?self.shutdown_grace,
            timeout = ?self.shutdown_timeout,
            sessions = self.sessions.len(),
            "draining: /readyz answers 503; still accepting for shutdown_grace"
        );
        tokio::time::sleep(self.shutdown_grace).await;
        self.accepts.shutdown().await;
        self.sessions.close();
        self.drain.cancel();
        tracing::info!(
            sessions = self.sessions.len(),
            "listeners closed; sessions end at their next transaction boundary"
        );
        match tokio::time::timeout_at(deadline, self.sessions.wait()).await {
            Ok(()) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!(
                sessions = self.sessions.len(),
                "shutdown_timeout reached: closing sessions still in a transaction"
            ),
        }
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

/// The user the probes log in as: `monitor_user`, else the first auth entry.
fn monitor_user(config: &Config, users: &Users, group: &TargetGroup) -> Option<Arc<User>> {
    let name = group
        .monitor_user
        .as_deref()
        .or_else(|| config.auth.first().map(|a| a.username.as_str()))?;
    users.get(name).cloned()
}

fn probe_timing(group: &TargetGroup) -> (Thresholds, Timing) {
    let h = &group.health;
    (
        Thresholds {
            unhealthy: h.unhealthy_threshold,
            healthy: h.healthy_threshold,
        },
        Timing {
            interval: h.interval.as_std(),
            timeout: h.timeout.as_std(),
        },
    )
}

/// Pools, router and probes of a Postgres target group.
fn pg_cluster(
    name: &str,
    group: &TargetGroup,
    monitor: &User,
    access: &ServerAccess,
    drain: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Arc<PgCluster> {
    let registries = Arc::new(Registries::default());
    let init_query = &group.connection_pool.init_query;
    cluster(name, group, drain, tasks, |addr, instance, settings| {
        let login = crate::postgres::server::ServerLogin {
            addr: addr.to_owned(),
            user: monitor.credential().secret.username.clone(),
            credentials: monitor.credentials.clone(),
            database: "postgres".into(),
            scram: Default::default(),
            access: access.clone(),
        };
        let probe = Box::new(PgProbe::new(login, instance.clone()));
        let pools = PgPools::new(instance, settings, init_query.clone(), registries.clone())
            .with_access(access.clone());
        (probe, pools)
    })
}

/// Pools, router and probes of a MySQL target group.
fn my_cluster(
    name: &str,
    group: &TargetGroup,
    monitor: &User,
    access: &ServerAccess,
    drain: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Arc<MyCluster> {
    let init_query = &group.connection_pool.init_query;
    cluster(name, group, drain, tasks, |addr, instance, settings| {
        let login = crate::mysql::server::ServerLogin {
            addr: addr.to_owned(),
            user: monitor.credential().secret.username.clone(),
            credentials: monitor.credentials.clone(),
            caps: 0,
            // utf8_general_ci: every MySQL and MariaDB version knows it.
            collation: 33,
            access: access.clone(),
        };
        let probe = Box::new(MyProbe::new(login, instance.clone()));
        let pools =
            MyPools::new(instance, settings, init_query.clone()).with_access(access.clone());
        (probe, pools)
    })
}

/// A target group's instances (cap, idle trim), the engine's pools and probe on each (`each`),
/// the router they share and the probe loops feeding it.
fn cluster<C: PooledConnection, P>(
    name: &str,
    group: &TargetGroup,
    drain: &CancellationToken,
    tasks: &mut JoinSet<()>,
    mut each: impl FnMut(&str, Arc<Instance<C>>, PoolSettings) -> (Box<dyn health::Probe>, P),
) -> Arc<Cluster<P>> {
    let mut members = Vec::new();
    let mut probes = Vec::new();
    let mut outstanding = Vec::new();
    let mut settings = PoolSettings::uniform(Duration::from_secs(1));
    for addr in &group.instances {
        let (instance, s) = instance_for(addr, &group.connection_pool);
        settings = s;
        tasks.spawn(trim_loop(instance.clone(), s));
        outstanding.push(instance.borrowed().clone());
        let drain = instance.clone();
        let (probe, pools) = each(addr, instance, s);
        probes.push(health::Member { probe, drain });
        members.push(Arc::new(pools));
    }
    let lag = group.health.max_replica_lag.as_std();
    let router = Arc::new(Router::new(outstanding.into(), lag));
    let (thresholds, timing) = probe_timing(group);
    Monitor::spawn(name, probes, thresholds, timing, router.clone(), tasks);
    Arc::new(Cluster {
        router,
        members: members.into(),
        settings,
        drain: drain.clone(),
    })
}

/// The instance (connection cap) and pool timings a target group's pool settings describe.
fn instance_for<C: PooledConnection>(
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
async fn trim_loop<C: PooledConnection>(instance: Arc<Instance<C>>, s: PoolSettings) {
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
