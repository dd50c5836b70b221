//! Building a target group's cluster: instances with their caps, the engine's pools and probes
//! on each, the router they share; and the listening sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::session::drain::Drain;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Duration;

use crate::auth::ServerAccess;
use crate::auth::users::{User, Users};
use crate::config::{Config, ConnectionPool, TargetGroup};
use crate::health::{self, Monitor, Thresholds, Timing};
use crate::mysql::cluster::MyCluster;
use crate::mysql::pools::MyPools;
use crate::mysql::probe::MyProbe;
use crate::pool::fleet::{Budget, FleetSpec, Member};
use crate::pool::{Instance, Limit, PoolSettings, PooledConnection};
use crate::postgres::cluster::PgCluster;
use crate::postgres::listen::Listeners;
use crate::postgres::pools::{PgPools, Registries};
use crate::postgres::probe::PgProbe;
use crate::routing::{Cluster, Router};
use crate::session::PinCounts;

/// A listening socket with SO_REUSEADDR, so a restarted sluice can bind its port while
/// connections it closed are still in TIME-WAIT (as PgBouncer and the databases do).
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
pub(super) fn monitor_user(
    config: &Config,
    users: &Users,
    group: &TargetGroup,
) -> Option<Arc<User>> {
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

/// What every cluster holds a clone of: process-wide handles.
#[derive(Debug)]
pub(super) struct Shared {
    /// Cancelled when sluice drains.
    pub drain: Drain,
    pub pin_counts: Arc<PinCounts>,
    pub parking: Option<crate::session::park::Parking>,
}

/// Pools, router and probes of a Postgres target group.
pub(super) fn pg_cluster(
    name: &str,
    group: &TargetGroup,
    monitor: &User,
    access: &ServerAccess,
    shared: &Shared,
    tasks: &mut JoinSet<()>,
) -> Arc<PgCluster> {
    let registries = Arc::new(Registries::default());
    let backlog = group.connection_pool.notification_backlog;
    let listeners = Arc::new(Listeners::new(
        usize::try_from(backlog).unwrap_or(usize::MAX),
    ));
    let init_query = &group.connection_pool.init_query;
    let fleet = fleet_spec(&group.connection_pool);
    cluster(name, group, shared, tasks, |addr, instance, settings| {
        let login = crate::postgres::server::ServerLogin {
            addr: addr.to_owned(),
            user: monitor.credential().secret.username.clone(),
            credentials: monitor.credentials.clone(),
            database: "postgres".into(),
            scram: Default::default(),
            access: access.clone(),
            role: crate::postgres::server::Role::Probe,
        };
        let mut probe = PgProbe::new(login, instance.clone());
        if let Some(spec) = &fleet {
            probe = probe.with_fleet(Member::new(spec, instance.clone()), listeners.clone());
        }
        let pools = PgPools::new(instance, settings, init_query.clone(), registries.clone())
            .with_listeners(listeners.clone())
            .with_access(access.clone());
        (Box::new(probe) as Box<dyn health::Probe>, pools, None)
    })
}

/// Pools, router and probes of a MySQL target group.
pub(super) fn my_cluster(
    name: &str,
    group: &TargetGroup,
    monitor: &User,
    access: &ServerAccess,
    shared: &Shared,
    tasks: &mut JoinSet<()>,
) -> Arc<MyCluster> {
    let init_query = &group.connection_pool.init_query;
    let fleet = fleet_spec(&group.connection_pool);
    let (_, timing) = probe_timing(group);
    cluster(name, group, shared, tasks, |addr, instance, settings| {
        let login = crate::mysql::server::ServerLogin {
            addr: addr.to_owned(),
            user: monitor.credential().secret.username.clone(),
            credentials: monitor.credentials.clone(),
            caps: 0,
            // utf8_general_ci: every MySQL and MariaDB version knows it.
            collation: 33,
            access: access.clone(),
            program_name: crate::mysql::server::PROBE_PROGRAM,
        };
        let side: Option<SideTask> = fleet.as_ref().map(|spec| {
            let member = Member::new(spec, instance.clone());
            let run = crate::mysql::fleet::advertise(
                member,
                login.clone(),
                timing.interval,
                timing.timeout,
            );
            Box::pin(run) as SideTask
        });
        let probe = Box::new(MyProbe::new(login, instance.clone()));
        let pools =
            MyPools::new(instance, settings, init_query.clone()).with_access(access.clone());
        (probe as Box<dyn health::Probe>, pools, side)
    })
}

/// A task an engine runs beside an instance's probe for as long as the group is in service.
type SideTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A target group's instances (cap, idle trim), the engine's pools, probe and side task on
/// each (`each`), the router they share and the probe loops feeding it.
fn cluster<C: PooledConnection, P>(
    name: &str,
    group: &TargetGroup,
    shared: &Shared,
    tasks: &mut JoinSet<()>,
    mut each: impl FnMut(
        &str,
        Arc<Instance<C>>,
        PoolSettings,
    ) -> (Box<dyn health::Probe>, P, Option<SideTask>),
) -> Arc<Cluster<P>> {
    let mut members = Vec::new();
    let mut probes = Vec::new();
    let mut outstanding = Vec::new();
    let mut settings = PoolSettings::uniform(Duration::from_secs(1));
    let metrics = Arc::new(crate::metrics::GroupMetrics::default());
    for addr in &group.instances {
        let (instance, s) = instance_for(addr, &group.connection_pool, &metrics);
        settings = s;
        tasks.spawn(trim_loop(instance.clone(), s));
        outstanding.push(instance.borrowed().clone());
        let drain: health::Drain = {
            let instance = instance.clone();
            Arc::new(move || {
                let closed = instance.drain();
                tracing::info!(instance = %instance.addr(), closed, "pools drained");
            })
        };
        let (probe, pools, side) = each(addr, instance, s);
        if let Some(side) = side {
            tasks.spawn(side);
        }
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
        drain: shared.drain.clone(),
        metrics,
        pin_counts: shared.pin_counts.clone(),
        parking: shared.parking.clone(),
    })
}

/// The instance (connection cap) and pool timings a target group's pool settings describe.
/// Its failed logins count in the group's metrics where they fail: one refusal may answer many
/// waiting sessions.
pub(super) fn instance_for<C: PooledConnection>(
    addr: &str,
    cp: &ConnectionPool,
    metrics: &crate::metrics::GroupMetrics,
) -> (Arc<Instance<C>>, PoolSettings) {
    let instance = Arc::new(
        Instance::new(addr.to_owned(), limit(cp), cp.max_idle_connections_percent)
            .counting_failed_logins(metrics.setup_failed.clone()),
    );
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

/// The fleet budget the pool settings name, if any.
fn fleet_spec(cp: &ConnectionPool) -> Option<FleetSpec> {
    let f = cp.fleet.as_ref()?;
    let budget = match (f.max_connections, f.max_connections_percent) {
        (Some(n), _) => Budget::Absolute(n as usize),
        (None, Some(p)) => Budget::Percent(p),
        (None, None) => return None,
    };
    Some(FleetSpec {
        name: f.name.clone(),
        budget,
    })
}

/// The per-instance connection cap the pool settings ask for.
pub(super) fn limit(cp: &ConnectionPool) -> Limit {
    match (cp.max_connections, cp.max_connections_percent) {
        (Some(n), _) => Limit::Absolute(n as usize),
        (None, Some(p)) => Limit::Percent(p),
        (None, None) => Limit::Percent(100),
    }
}
