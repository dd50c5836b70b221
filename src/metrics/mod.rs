//! Prometheus metrics (names in docs/metrics.md): typed handles each component records into,
//! built once at start, and the registry `/metrics` encodes. No global registry; recording is an
//! atomic add on a handle resolved at start, never a label lookup.

pub mod admin;
pub mod api;
mod groups;
pub mod histogram;
mod sessions;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use groups::{GroupList, GroupStats, InstanceSnapshot};
pub use sessions::{CredentialList, SecretReads};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
    target_group: String,
}

/// One endpoint's client-side series.
#[derive(Debug, Clone, Default)]
pub struct EndpointMetrics {
    /// Connections accepted (after the allow-list), whatever became of them.
    pub received: Counter,
    /// Logins that reached a session.
    pub setup_succeeded: Counter,
    /// Logins refused for their credentials.
    pub setup_failed_auth: Counter,
    /// Connections closed before any byte because `allowed_cidrs` does not cover them.
    pub refused_cidr: Counter,
    /// Sessions open now, and those of them over TLS.
    pub client_connections: Gauge,
    pub client_connections_tls: Gauge,
}

impl EndpointMetrics {
    /// A session began; `tls` as its client connected.
    pub fn session_opened(&self, tls: bool) {
        self.setup_succeeded.inc();
        self.client_connections.inc();
        if tls {
            self.client_connections_tls.inc();
        }
    }

    pub fn session_closed(&self, tls: bool) {
        self.client_connections.dec();
        if tls {
            self.client_connections_tls.dec();
        }
    }
}

/// One target group's request-side series, recorded by its sessions: atomic adds only.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    /// Borrows asked of the group's pools (each routing attempt counts).
    pub connection_requests: Counter,
    /// Server connections that could not be opened (unreachable, refused login, timeout).
    pub setup_failed: Counter,
    /// From asking for a server connection to holding one.
    pub borrow_latency: histogram::LatencyHistogram,
    /// Client requests: Postgres simple queries and Syncs, MySQL COM_QUERY and COM_STMT_EXECUTE.
    pub query_requests: Counter,
    /// From a request reaching sluice to its response (with the borrow it waited for).
    pub query_response_latency: histogram::LatencyHistogram,
    /// From a request going to the database to the database's complete response.
    pub database_response_latency: histogram::LatencyHistogram,
    /// Postgres LISTEN without pinning: sessions with at least one subscription, channels the
    /// listening connections LISTEN on, those connections, notifications handed to clients,
    /// and sessions closed for falling `notification_backlog` behind.
    pub listening_sessions: Gauge,
    pub listen_channels: Gauge,
    pub listener_connections: Gauge,
    pub notifications_delivered: Counter,
    pub notification_backlog_closed: Counter,
}

/// The registry and the families handles are taken from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Family<EndpointLabels, Counter>,
    setup_succeeded: Family<EndpointLabels, Counter>,
    setup_failed_auth: Family<EndpointLabels, Counter>,
    refused_cidr: Family<EndpointLabels, Counter>,
    client_connections: Family<EndpointLabels, Gauge>,
    client_connections_tls: Family<EndpointLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let received = Family::default();
        let setup_succeeded = Family::default();
        let setup_failed_auth = Family::default();
        let refused_cidr = Family::default();
        let client_connections = Family::default();
        let client_connections_tls = Family::default();
        registry.register(
            "client_connections_received",
            "Client connections accepted by the endpoint (after allowed_cidrs)",
            received.clone(),
        );
        registry.register(
            "client_connections_setup_succeeded",
            "Client logins that became a session",
            setup_succeeded.clone(),
        );
        registry.register(
            "client_connections_setup_failed_auth",
            "Client logins refused for their password or token",
            setup_failed_auth.clone(),
        );
        registry.register(
            "client_connections_refused_cidr",
            "Client connections closed before any byte: not in the endpoint's allowed_cidrs",
            refused_cidr.clone(),
        );
        registry.register(
            "client_connections",
            "Client sessions open now",
            client_connections.clone(),
        );
        registry.register(
            "client_connections_tls",
            "Client sessions open now over TLS",
            client_connections_tls.clone(),
        );
        Self {
            registry,
            received,
            setup_succeeded,
            setup_failed_auth,
            refused_cidr,
            client_connections,
            client_connections_tls,
        }
    }

    /// The handles of endpoint `endpoint` serving `target_group`, resolved once.
    pub fn endpoint(&self, endpoint: &str, target_group: &str) -> EndpointMetrics {
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
            target_group: target_group.to_owned(),
        };
        EndpointMetrics {
            received: self.received.get_or_create(&labels).clone(),
            setup_succeeded: self.setup_succeeded.get_or_create(&labels).clone(),
            setup_failed_auth: self.setup_failed_auth.get_or_create(&labels).clone(),
            refused_cidr: self.refused_cidr.get_or_create(&labels).clone(),
            client_connections: self.client_connections.get_or_create(&labels).clone(),
            client_connections_tls: self.client_connections_tls.get_or_create(&labels).clone(),
        }
    }

    /// The target groups whose pool and probe state is read at each scrape (called once:
    /// each series must be one family across groups).
    /// The pin and unpin counts every session adds to.
    pub fn add_pins(&mut self, counts: std::sync::Arc<crate::session::PinCounts>) {
        self.registry
            .register_collector(Box::new(groups::PinCollector(counts)));
    }

    pub fn add_groups(&mut self, groups: GroupList) {
        self.registry
            .register_collector(Box::new(groups::GroupCollector(groups)));
    }

    /// The open sessions of both engines, counted per target group at each scrape (pinned, in a
    /// transaction); `groups` gives every group a sample, zero included.
    pub fn add_sessions(
        &mut self,
        sessions: Vec<std::sync::Arc<dyn crate::session::SessionList>>,
        groups: GroupList,
    ) {
        self.registry
            .register_collector(Box::new(sessions::SessionCollector { sessions, groups }));
    }

    /// The lot's parked sessions, counted at each scrape.
    pub fn add_parked(&mut self, parking: crate::session::park::Parking) {
        self.registry
            .register_collector(Box::new(sessions::ParkedCollector(parking)));
    }

    /// The users whose failed secret reads are counted at each scrape.
    pub fn add_credentials(&mut self, credentials: CredentialList) {
        self.registry
            .register_collector(Box::new(sessions::CredentialCollector(credentials)));
    }

    /// The exposition in OpenMetrics text, which Prometheus asks for first.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the classic Prometheus text format (0.0.4), for clients that do not
    /// ask for OpenMetrics (curl, promtool, older scrapers).
    pub fn encode_classic(&self) -> String {
        to_classic(&self.encode())
    }
}

/// OpenMetrics names a counter family without `_total` in HELP/TYPE and ends with `# EOF`;
/// the classic format names the family as its samples are named and has no EOF line.
fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_like_their_samples() {
        let m = Metrics::new();
        m.endpoint("writer", "pg").received.inc();
        let open = m.encode();
        assert!(open.contains("# TYPE sluice_client_connections_received counter\n"));
        assert!(open.ends_with("# EOF\n"));
        let classic = m.encode_classic();
        assert!(classic.contains("# HELP sluice_client_connections_received_total Client"));
        assert!(classic.contains("# TYPE sluice_client_connections_received_total counter\n"));
        assert!(classic.contains(
            "sluice_client_connections_received_total{endpoint=\"writer\",target_group=\"pg\"} 1\n"
        ));
        assert!(classic.contains("# TYPE sluice_client_connections gauge\n"));
        assert!(!classic.contains("# EOF"));
    }
}
