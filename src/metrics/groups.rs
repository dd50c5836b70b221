//! Series read at scrape time from the target groups' pools and probes: nothing on the hot path
//! keeps them, since the pools and the router already hold the numbers.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::session::{PinCounts, PinReason};
use crate::topology::Topology;

/// One instance's pool counts, across its (database, user) pools.
#[derive(Debug, Clone, Default)]
pub struct InstanceSnapshot {
    pub addr: String,
    /// The connection cap in force (max_connections, or the percent of the server's).
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub borrowed: usize,
    /// Sessions waiting for a connection now.
    pub waiting: usize,
    /// With a fleet budget: the last read of the fleet, and the borrows its budget made wait.
    pub fleet: Option<(crate::pool::FleetView, u64)>,
}

/// A target group as a scrape sees it.
pub trait GroupStats: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &str;
    fn instances(&self) -> Vec<InstanceSnapshot>;
    fn topology(&self) -> Arc<Topology>;
    fn requests(&self) -> Arc<super::GroupMetrics>;
}

/// The target groups in service; a reload swaps the list.
pub type GroupList = Arc<arc_swap::ArcSwap<Vec<Arc<dyn GroupStats>>>>;

/// Every target group, encoded as one family per series (families must not repeat).
#[derive(Debug)]
pub(super) struct GroupCollector(pub GroupList);

type Pick = fn(&InstanceSnapshot) -> usize;

const POOL_GAUGES: [(&str, &str, Pick); 5] = [
    (
        "database_connections",
        "Server connections open on the instance",
        |s| s.open,
    ),
    (
        "database_connections_borrowed",
        "Server connections lent to sessions now",
        |s| s.borrowed,
    ),
    (
        "database_connections_idle",
        "Server connections idle in the pools",
        |s| s.idle,
    ),
    (
        "database_connection_waiters",
        "Sessions waiting for a server connection now",
        |s| s.waiting,
    ),
    (
        "max_database_connections_allowed",
        "The connection cap on the instance (max_connections or its percent of the server's)",
        |s| s.max,
    ),
];

/// A group's name, its instances' pool counts and the probes' view of it, read once per scrape.
type Snapshot<'a> = (&'a str, Vec<InstanceSnapshot>, Arc<Topology>);

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let groups = self.0.load();
        let snapshots: Vec<Snapshot<'_>> = groups
            .iter()
            .map(|g| (g.name(), g.instances(), g.topology()))
            .collect();
        encode_pools(&mut encoder, &snapshots)?;
        encode_fleets(&mut encoder, &snapshots)?;
        encode_topology(&mut encoder, &snapshots)?;
        let requests: Vec<_> = groups.iter().map(|g| (g.name(), g.requests())).collect();
        encode_requests(&mut encoder, &requests)
    }
}

/// Per instance: the pool gauges.
fn encode_pools(encoder: &mut DescriptorEncoder, snapshots: &[Snapshot<'_>]) -> std::fmt::Result {
    for (name, help, pick) in POOL_GAUGES {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (group, instances, _) in snapshots {
            for s in instances {
                let labels = [("target_group", *group), ("instance", s.addr.as_str())];
                let value = i64::try_from(pick(s)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

type FleetPick = fn(&crate::pool::FleetView) -> usize;

const FLEET_GAUGES: [(&str, &str, FleetPick); 4] = [
    (
        "fleet_budget_connections",
        "The fleet's connection budget on the instance",
        |f| f.budget,
    ),
    (
        "fleet_connections",
        "The fleet's server connections on the instance, as its members advertise them",
        |f| f.seen,
    ),
    (
        "fleet_members",
        "sluice processes of the fleet seen on the instance, this one included",
        |f| f.members,
    ),
    (
        "fleet_share_connections",
        "This process's share of the fleet budget: its pool cap on the instance",
        |f| f.share,
    ),
];

/// Per instance of a target group with a fleet: its budget, what the last read saw, this
/// process's share, and the borrows the budget made wait.
fn encode_fleets(encoder: &mut DescriptorEncoder, snapshots: &[Snapshot<'_>]) -> std::fmt::Result {
    let fleets = || {
        snapshots.iter().flat_map(|(group, instances, _)| {
            instances.iter().filter_map(move |s| {
                s.fleet
                    .map(|f| ([("target_group", *group), ("instance", s.addr.as_str())], f))
            })
        })
    };
    if fleets().next().is_none() {
        return Ok(());
    }
    for (name, help, pick) in FLEET_GAUGES {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, (view, _)) in fleets() {
            let value = i64::try_from(pick(&view)).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "fleet_borrow_waits",
        "Borrows that waited because the fleet share, not the process's own cap, was reached",
        None,
        MetricType::Counter,
    )?;
    for (labels, (_, waits)) in fleets() {
        ConstCounter::new(waits).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What the probes found: availability by role, replica lag, failovers.
fn encode_topology(
    encoder: &mut DescriptorEncoder,
    snapshots: &[Snapshot<'_>],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        "availability",
        "1 when the instance's probe passes, by the role it has now (writer or reader)",
        None,
        MetricType::Gauge,
    )?;
    for (group, instances, topology) in snapshots {
        for (i, s) in instances.iter().enumerate() {
            let Some(view) = topology.members.get(i) else {
                continue;
            };
            let role = if topology.writer == Some(i) {
                "writer"
            } else {
                "reader"
            };
            let labels = [
                ("target_group", *group),
                ("instance", s.addr.as_str()),
                ("role", role),
            ];
            ConstGauge::new(i64::from(view.healthy)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "replica_lag_seconds",
        "How far a reader is behind the writer, where it can be told",
        None,
        MetricType::Gauge,
    )?;
    for (group, instances, topology) in snapshots {
        for (i, s) in instances.iter().enumerate() {
            let Some(lag) = topology.members.get(i).and_then(|v| v.lag) else {
                continue;
            };
            let labels = [("target_group", *group), ("instance", s.addr.as_str())];
            ConstGauge::new(lag.as_secs_f64()).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "failovers",
        "Times the target group's writer changed to another instance",
        None,
        MetricType::Counter,
    )?;
    for (group, _, topology) in snapshots {
        let labels = [("target_group", *group)];
        ConstCounter::new(topology.failovers).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Per group: the request-side counters and latency histograms.
fn encode_requests(
    encoder: &mut DescriptorEncoder,
    requests: &[(&str, Arc<super::GroupMetrics>)],
) -> std::fmt::Result {
    type PickCounter = fn(&super::GroupMetrics) -> u64;
    const COUNTERS: [(&str, &str, PickCounter); 5] = [
        (
            "database_connection_requests",
            "Server connections asked of the pools (each routing attempt counts)",
            |m| m.connection_requests.get(),
        ),
        (
            "database_connections_setup_failed",
            "Server connections that could not be opened",
            |m| m.setup_failed.get(),
        ),
        (
            "query_requests",
            "Client requests: Postgres simple queries and Syncs, MySQL COM_QUERY and COM_STMT_EXECUTE",
            |m| m.query_requests.get(),
        ),
        (
            "notifications_delivered",
            "Postgres notifications handed to listening client sessions",
            |m| m.notifications_delivered.get(),
        ),
        (
            "notification_backlog_closed_sessions",
            "Listening sessions closed for falling notification_backlog notifications behind",
            |m| m.notification_backlog_closed.get(),
        ),
    ];
    type PickGauge = fn(&super::GroupMetrics) -> i64;
    const GAUGES: [(&str, &str, PickGauge); 3] = [
        (
            "listening_sessions",
            "Client sessions subscribed to at least one Postgres notification channel",
            |m| m.listening_sessions.get(),
        ),
        (
            "listen_channels",
            "Channels the listening connections LISTEN on for their sessions",
            |m| m.listen_channels.get(),
        ),
        (
            "listener_connections",
            "Server connections that LISTEN for client sessions (one per database and user)",
            |m| m.listener_connections.get(),
        ),
    ];
    for (name, help, pick) in GAUGES {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (group, m) in requests {
            ConstGauge::new(pick(m)).encode(family.encode_family(&[("target_group", *group)])?)?;
        }
    }
    for (name, help, pick) in COUNTERS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (group, m) in requests {
            ConstCounter::new(pick(m))
                .encode(family.encode_family(&[("target_group", *group)])?)?;
        }
    }
    type PickHistogram = fn(&super::GroupMetrics) -> &super::histogram::LatencyHistogram;
    const HISTOGRAMS: [(&str, &str, PickHistogram); 3] = [
        (
            "borrow_latency_seconds",
            "From asking for a server connection to holding one",
            |m| &m.borrow_latency,
        ),
        (
            "query_response_latency_seconds",
            "From a request reaching sluice to its complete response, the borrow included",
            |m| &m.query_response_latency,
        ),
        (
            "query_database_response_latency_seconds",
            "From a request going to the database to the database's complete response",
            |m| &m.database_response_latency,
        ),
    ];
    for (name, help, pick) in HISTOGRAMS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (group, m) in requests {
            pick(m).encode(family.encode_family(&[("target_group", *group)])?)?;
        }
    }
    Ok(())
}

/// `session_pins_total` and `session_unpins_total`, by reason, process-wide.
#[derive(Debug)]
pub(super) struct PinCollector(pub Arc<PinCounts>);

impl Collector for PinCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type PickPins = fn(&PinCounts, PinReason) -> u64;
        const PINS: [(&str, &str, PickPins); 2] = [
            (
                "session_pins",
                "Sessions pinned to their server connection, by reason",
                |counts, r| counts.pins(r),
            ),
            (
                "session_unpins",
                "Pins lifted (the session's server state was gone), by reason",
                |counts, r| counts.unpins(r),
            ),
        ];
        for (name, help, pick) in PINS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for reason in PinReason::ALL {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(pick(&self.0, reason)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
