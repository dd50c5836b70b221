//! The target groups as the metrics and readiness see them: each instance's pool counts and the
//! probes' topology, read at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::metrics::{GroupStats, InstanceSnapshot};
use crate::pool::{Instance, PooledConnection};
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
