//! The target groups at run time: what `app` keeps of each (config, cluster, tasks), and what
//! the metrics and readiness see of it (each instance's pool counts and the probes' topology,
//! read at scrape time).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinSet;

use super::build;
use crate::config::{ConnectionPool, TargetGroup};
use crate::metrics::{GroupStats, InstanceSnapshot};
use crate::mysql::cluster::MyCluster;
use crate::pool::{Instance, PooledConnection};
use crate::postgres::cluster::PgCluster;
use crate::routing::{Cluster, Topology};

/// The per-instance pools of an engine, by the instance they share.
pub trait InstancePools: Send + Sync + std::fmt::Debug + 'static {
    fn snapshot(&self) -> InstanceSnapshot;
}

fn snapshot<C: PooledConnection>(instance: &Instance<C>) -> InstanceSnapshot {
    let stats = instance.stats();
    InstanceSnapshot {
        addr: instance.addr().to_owned(),
        max: stats.max,
        open: stats.open,
        idle: stats.idle,
        borrowed: instance.borrowed().load(Ordering::Relaxed),
        waiting: stats.waiting,
        fleet: stats.fleet,
    }
}

impl InstancePools for crate::postgres::pools::PgPools {
    fn snapshot(&self) -> InstanceSnapshot {
        snapshot(&self.instance)
    }
}

impl InstancePools for crate::mysql::pools::MyPools {
    fn snapshot(&self) -> InstanceSnapshot {
        snapshot(&self.instance)
    }
}

/// A named target group.
#[derive(Debug)]
pub struct GroupView<P> {
    pub name: String,
    pub cluster: Arc<Cluster<P>>,
}

impl<P: InstancePools> GroupStats for GroupView<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn instances(&self) -> Vec<InstanceSnapshot> {
        self.cluster.members.iter().map(|m| m.snapshot()).collect()
    }

    fn topology(&self) -> Arc<Topology> {
        self.cluster.router.snapshot()
    }

    fn requests(&self) -> Arc<crate::metrics::GroupMetrics> {
        self.cluster.metrics.clone()
    }
}

/// A target group in service: its config, its cluster (what sessions and metrics hold) and
/// the tasks that keep it (probes, idle trim). The one runtime home of a target group.
#[derive(Debug)]
pub(super) struct RunningGroup {
    pub config: TargetGroup,
    pub cluster: GroupCluster,
    /// Probe and idle-trim tasks: aborted once the group is retired and no session uses it.
    pub tasks: JoinSet<()>,
}

#[derive(Debug, Clone)]
/// A target group's cluster, of either engine.
pub(super) enum GroupCluster {
    Postgres(Arc<PgCluster>),
    Mysql(Arc<MyCluster>),
}

impl GroupCluster {
    /// A reloaded cap, applied to the instances the open sessions use too.
    pub fn resize(&self, cp: &ConnectionPool) {
        let limit = build::limit(cp);
        let idle = cp.max_idle_connections_percent;
        match self {
            Self::Postgres(c) => c
                .members
                .iter()
                .for_each(|m| m.instance.reconfigure(limit, idle)),
            Self::Mysql(c) => c
                .members
                .iter()
                .for_each(|m| m.instance.reconfigure(limit, idle)),
        }
    }

    pub fn view(&self, name: &str) -> Arc<dyn GroupStats> {
        let name = name.to_owned();
        match self {
            Self::Postgres(c) => Arc::new(GroupView {
                name,
                cluster: c.clone(),
            }),
            Self::Mysql(c) => Arc::new(GroupView {
                name,
                cluster: c.clone(),
            }),
        }
    }

    /// Whether anything (an endpoint, a session) still holds the cluster, without holding it.
    pub fn in_use(self) -> impl Fn() -> bool + Send + 'static {
        let weak = match self {
            Self::Postgres(c) => Weak::Pg(Arc::downgrade(&c)),
            Self::Mysql(c) => Weak::My(Arc::downgrade(&c)),
        };
        move || match &weak {
            Weak::Pg(w) => w.strong_count() > 0,
            Weak::My(w) => w.strong_count() > 0,
        }
    }
}

enum Weak {
    Pg(std::sync::Weak<PgCluster>),
    My(std::sync::Weak<MyCluster>),
}
