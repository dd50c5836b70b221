//! The read-only JSON routes of the admin listener: `/v1/endpoints`, `/v1/target-groups`,
//! `/v1/pools`, `/v1/sessions`. Built at request time from the same handles the scrape reads;
//! nothing here holds a secret (user names only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::{EndpointMetrics, GroupList, Metrics};
use crate::session::{SessionList, SessionRow};

/// An endpoint as configured, with its live client counts.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub name: String,
    pub listen: std::net::SocketAddr,
    pub target_group: String,
    pub engine: &'static str,
    pub role: &'static str,
    pub require_tls: bool,
    pub metrics: EndpointMetrics,
}

#[derive(Serialize)]
struct EndpointJson {
    name: String,
    listen: String,
    target_group: String,
    engine: &'static str,
    role: &'static str,
    require_tls: bool,
    client_connections: i64,
    client_connections_tls: i64,
    client_connections_received: u64,
    client_connections_setup_failed_auth: u64,
}

#[derive(Serialize)]
struct InstanceJson {
    address: String,
    role: &'static str,
    healthy: bool,
    /// Seconds behind the writer; `null` when it cannot be told.
    lag_seconds: Option<f64>,
}

#[derive(Serialize)]
struct GroupJson {
    name: String,
    writer: Option<String>,
    failovers: u64,
    instances: Vec<InstanceJson>,
}

#[derive(Serialize)]
struct PoolJson {
    target_group: String,
    instance: String,
    max_connections: usize,
    open: usize,
    idle: usize,
    borrowed: usize,
    waiting: usize,
    /// With `connection_pool.fleet`: the last read of the fleet on the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetJson>,
}

#[derive(Serialize)]
struct FleetJson {
    budget: usize,
    connections: usize,
    members: usize,
    share: usize,
    borrow_waits: u64,
}

/// What the admin routes answer from.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub groups: GroupList,
    pub endpoints: arc_swap::ArcSwap<Vec<EndpointView>>,
    /// The session registries of both engines.
    pub sessions: Vec<Arc<dyn SessionList>>,
    /// Set when shutdown begins: readiness turns false at once.
    pub draining: AtomicBool,
    /// `admin.ready_without_writer`: a group without a writer does not make sluice unready.
    pub ready_without_writer: AtomicBool,
    /// Required as `Authorization: Bearer` on /metrics and /v1/ when set.
    pub token: Option<String>,
}

impl AdminState {
    /// Why sluice is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining".into());
        }
        if self.ready_without_writer.load(Ordering::Relaxed) {
            return None;
        }
        let groups = self.groups.load();
        let missing: Vec<&str> = groups
            .iter()
            .filter(|g| g.topology().writer.is_none())
            .map(|g| g.name())
            .collect();
        (!missing.is_empty()).then(|| format!("no writer known in {}", missing.join(", ")))
    }
}

/// The body of a `/v1/` route, or `None` for an unknown one.
pub(super) fn answer(state: &AdminState, path: &str) -> Option<String> {
    let body = match path {
        "/v1/endpoints" => json(&endpoints(state)),
        "/v1/target-groups" => json(&groups(state)),
        "/v1/pools" => json(&pools(state)),
        "/v1/sessions" => json(&sessions(state)),
        _ => return None,
    };
    Some(body)
}

fn json<T: Serialize>(value: &T) -> String {
    let mut out = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    out.push('\n');
    out
}

fn endpoints(state: &AdminState) -> Vec<EndpointJson> {
    state
        .endpoints
        .load()
        .iter()
        .map(|e| EndpointJson {
            name: e.name.clone(),
            listen: e.listen.to_string(),
            target_group: e.target_group.clone(),
            engine: e.engine,
            role: e.role,
            require_tls: e.require_tls,
            client_connections: e.metrics.client_connections.get(),
            client_connections_tls: e.metrics.client_connections_tls.get(),
            client_connections_received: e.metrics.received.get(),
            client_connections_setup_failed_auth: e.metrics.setup_failed_auth.get(),
        })
        .collect()
}

fn groups(state: &AdminState) -> Vec<GroupJson> {
    state
        .groups
        .load()
        .iter()
        .map(|g| {
            let topology = g.topology();
            let instances = g.instances();
            let addr = |i: usize| instances.get(i).map(|s| s.addr.clone());
            GroupJson {
                name: g.name().to_owned(),
                writer: topology.writer.and_then(addr),
                failovers: topology.failovers,
                instances: instances
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let member = topology.members.get(i);
                        InstanceJson {
                            address: s.addr.clone(),
                            role: match (topology.writer == Some(i), member) {
                                (true, _) => "writer",
                                (false, Some(m)) if m.healthy => "reader",
                                _ => "unknown",
                            },
                            healthy: member.is_some_and(|m| m.healthy),
                            lag_seconds: member.and_then(|m| m.lag).map(|l| l.as_secs_f64()),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn pools(state: &AdminState) -> Vec<PoolJson> {
    state
        .groups
        .load()
        .iter()
        .flat_map(|g| {
            g.instances().into_iter().map(move |s| PoolJson {
                target_group: g.name().to_owned(),
                instance: s.addr,
                max_connections: s.max,
                open: s.open,
                idle: s.idle,
                borrowed: s.borrowed,
                waiting: s.waiting,
                fleet: s.fleet.map(|(v, waits)| FleetJson {
                    budget: v.budget,
                    connections: v.seen,
                    members: v.members,
                    share: v.share,
                    borrow_waits: waits,
                }),
            })
        })
        .collect()
}

fn sessions(state: &AdminState) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = state.sessions.iter().flat_map(|l| l.sessions()).collect();
    rows.sort_by(|a, b| (&a.info.endpoint, a.info.id).cmp(&(&b.info.endpoint, b.info.id)));
    rows
}

/// Whether `presented` equals `token`, in time independent of where they differ.
pub(super) fn token_matches(token: &str, presented: &str) -> bool {
    let (a, b) = (token.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
