//! Series counted at scrape time from the session registries and the users' credentials:
//! connections held in a transaction or by a pinned session, parked sessions, and failed secret
//! refreshes.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::GroupList;

/// A user's secret as the scrape sees it: implemented by `auth`, which metrics does not import.
pub trait SecretReads: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    /// Whether the secret is read again (a file or Secrets Manager, not a fixed one).
    fn rereads(&self) -> bool;
    fn refresh_failures(&self) -> u64;
}

/// The credentials of the users in force; a reload swaps the list.
pub type CredentialList = Arc<arc_swap::ArcSwap<Vec<Arc<dyn SecretReads>>>>;

/// Server connections held by sessions in a transaction, and by pinned sessions, per target
/// group: counted from the session registries at scrape time.
#[derive(Debug)]
pub(super) struct SessionCollector {
    pub sessions: Vec<Arc<dyn crate::session::SessionList>>,
    pub groups: GroupList,
}

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let groups = self.groups.load();
        let mut counts: std::collections::BTreeMap<String, (i64, i64)> = groups
            .iter()
            .map(|g| (g.name().to_owned(), (0, 0)))
            .collect();
        for row in self.sessions.iter().flat_map(|s| s.sessions()) {
            if row.server.is_none() && !row.pinned {
                continue;
            }
            let c = counts.entry(row.info.target_group.to_string()).or_default();
            c.0 += i64::from(row.in_transaction);
            c.1 += i64::from(row.pinned);
        }
        type Pick = fn(&(i64, i64)) -> i64;
        const GAUGES: [(&str, &str, Pick); 2] = [
            (
                "database_connections_in_transaction",
                "Server connections whose session is inside a transaction now",
                |c| c.0,
            ),
            (
                "database_connections_pinned",
                "Server connections held by pinned sessions now",
                |c| c.1,
            ),
        ];
        for (name, help, pick) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (group, c) in &counts {
                let labels = [("target_group", group.as_str())];
                ConstGauge::new(pick(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Secret reads that failed (store unreachable, secret malformed), per user whose secret is
/// read again (`file:` and Secrets Manager).
#[derive(Debug)]
pub(super) struct CredentialCollector(pub CredentialList);

impl Collector for CredentialCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "secret_refresh_failures",
            "Reads of a user's secret that failed; the cached secret stayed in use",
            None,
            MetricType::Counter,
        )?;
        for c in self.0.load().iter().filter(|c| c.rereads()) {
            let labels = [("user", c.name())];
            ConstCounter::new(c.refresh_failures()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Idle sessions waiting in the lot, without a task of their own.
#[derive(Debug)]
pub(super) struct ParkedCollector(pub crate::session::park::Parking);

impl Collector for ParkedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(
            "client_sessions_parked",
            "Idle client sessions parked: waiting without a task, their socket watched by the lot",
            None,
            MetricType::Gauge,
        )?;
        let parked = i64::try_from(self.0.parked()).unwrap_or(i64::MAX);
        ConstGauge::new(parked).encode(family)
    }
}
