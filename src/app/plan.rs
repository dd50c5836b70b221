//! What applying a config does, decided from the running config and the new one alone: which
//! target groups are kept, resized or built anew, which listening sockets are bound or closed,
//! and what only a restart changes. No I/O, so every case is a unit test; `apply` then prepares
//! what can fail and commits the rest.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::{Config, SecretRef, TargetGroup};

/// What a reload does with a target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupPlan {
    Keep,
    /// Only the connection caps changed: applied in place, to the open sessions' pools too.
    Resize,
    /// New, or changed in a way its pools and probes cannot follow.
    Build,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// The target groups the new config's endpoints use.
    pub groups: BTreeMap<String, GroupPlan>,
    /// Listening sockets to bind, by [`listen_key`], with the endpoint that gets each.
    pub bind: BTreeMap<String, String>,
    /// The client certificate files changed: load and watch the new ones.
    pub client_tls_changed: bool,
    /// Settings that changed but take effect only at a restart.
    pub restart_only: Vec<&'static str>,
}

/// Listening sockets are matched across reloads by address, so renaming an endpoint keeps its
/// socket; port 0 (a fresh port each bind) is matched by name too.
pub(super) fn listen_key(name: &str, addr: SocketAddr) -> String {
    if addr.port() == 0 {
        format!("{addr}#{name}")
    } else {
        addr.to_string()
    }
}

/// The auth entry the probes of `group` log in with: `monitor_user`, else the first entry.
fn monitor(config: &Config, group: &TargetGroup) -> Option<(String, SecretRef)> {
    let name = group
        .monitor_user
        .as_deref()
        .or_else(|| config.auth.first().map(|a| a.username.as_str()))?;
    let entry = config.auth.iter().find(|a| a.username == name)?;
    Some((entry.username.clone(), entry.secret.clone()))
}

/// Whether `new` differs from `old` in its connection caps alone.
fn resizable(old: &TargetGroup, new: &TargetGroup) -> bool {
    let mut like = new.clone();
    let (cp, was) = (&mut like.connection_pool, &old.connection_pool);
    cp.max_connections = was.max_connections;
    cp.max_connections_percent = was.max_connections_percent;
    cp.max_idle_connections_percent = was.max_idle_connections_percent;
    like == *old
}

/// What applying `new` on top of `old` (none at start) does. Groups and sockets the new config
/// no longer uses are what commit finds left over: retired, closed.
pub(super) fn plan(old: Option<&Config>, new: &Config) -> Plan {
    let mut plan = Plan {
        client_tls_changed: old.is_none_or(|o| o.tls != new.tls),
        ..Plan::default()
    };
    for ep in &new.endpoints {
        let name = &ep.target_group;
        let Some(group) = new.target_groups.get(name) else {
            continue;
        };
        // Same probes' credentials: `Users::reload` keeps an entry whose secret is unchanged.
        let before = old
            .and_then(|o| Some((o, o.target_groups.get(name)?)))
            .filter(|(o, g)| monitor(o, g) == monitor(new, group));
        let decided = match before {
            Some((_, g)) if g == group => GroupPlan::Keep,
            Some((_, g)) if resizable(g, group) => GroupPlan::Resize,
            _ => GroupPlan::Build,
        };
        plan.groups.insert(name.clone(), decided);
    }
    let keys = |c: &Config| -> BTreeMap<String, String> {
        c.endpoints
            .iter()
            .map(|ep| (listen_key(&ep.name, ep.listen), ep.name.clone()))
            .collect()
    };
    let was = old.map(keys).unwrap_or_default();
    plan.bind = keys(new)
        .into_iter()
        .filter(|(k, _)| !was.contains_key(k))
        .collect();
    if let Some(old) = old {
        plan.restart_only = restart_only(old, new);
    }
    plan
}

/// Settings a running process cannot change: said, not silently ignored.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.worker_threads != new.worker_threads {
        changed.push("worker_threads");
    }
    let admin = |c: &Config| {
        c.admin
            .as_ref()
            .map(|a| (a.listen, a.bearer_token_env.clone()))
    };
    if admin(old) != admin(new) {
        changed.push("admin.listen or admin.bearer_token_env");
    }
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BASE: &str = "
endpoints:
  - name: writer
    listen: 127.0.0.1:6432
    target_group: pg
  - name: reader
    listen: 127.0.0.1:0
    target_group: pg
    role: read_only
target_groups:
  pg:
    engine: postgres
    instances: [127.0.0.1:5432]
    connection_pool: { max_connections: 10 }
  unused:
    engine: postgres
    instances: [127.0.0.1:5433]
auth:
  - username: app
    secret: file:secrets.yaml#app
";

    fn config(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn the_first_config_builds_everything_it_uses_and_binds_every_endpoint() {
        let p = plan(None, &config(BASE));
        assert_eq!(p.groups, BTreeMap::from([("pg".into(), GroupPlan::Build)]));
        let bound: Vec<_> = p.bind.values().map(String::as_str).collect();
        assert_eq!(bound, ["reader", "writer"]);
        assert!(p.client_tls_changed);
    }

    #[test]
    fn the_same_config_keeps_everything() {
        let p = plan(Some(&config(BASE)), &config(BASE));
        assert_eq!(
            p.groups.len(),
            1,
            "a group no endpoint uses is not planned: {p:?}"
        );
        assert_eq!(p.groups["pg"], GroupPlan::Keep);
        assert!(p.bind.is_empty() && !p.client_tls_changed);
        assert!(p.restart_only.is_empty());
    }

    #[test]
    fn a_cap_change_resizes_and_anything_else_rebuilds() {
        let caps = BASE.replace("max_connections: 10", "max_connections: 20");
        assert_eq!(
            plan(Some(&config(BASE)), &config(&caps)).groups["pg"],
            GroupPlan::Resize
        );
        let moved = BASE.replace("[127.0.0.1:5432]", "[127.0.0.1:5434]");
        assert_eq!(
            plan(Some(&config(BASE)), &config(&moved)).groups["pg"],
            GroupPlan::Build
        );
    }

    #[test]
    fn a_new_secret_for_the_probes_rebuilds_the_group() {
        let rotated = BASE.replace("secrets.yaml#app", "other.yaml#app");
        assert_eq!(
            plan(Some(&config(BASE)), &config(&rotated)).groups["pg"],
            GroupPlan::Build
        );
    }

    #[test]
    fn endpoints_keep_their_socket_by_address_and_port_zero_by_name() {
        let renamed = BASE.replace("name: writer", "name: primary");
        let p = plan(Some(&config(BASE)), &config(&renamed));
        assert!(p.bind.is_empty(), "{p:?}");
        let renamed = BASE.replace("name: reader", "name: replicas");
        let p = plan(Some(&config(BASE)), &config(&renamed));
        assert_eq!(p.bind.values().collect::<Vec<_>>(), ["replicas"]);
        let moved = BASE.replace("127.0.0.1:6432", "127.0.0.1:6433");
        let p = plan(Some(&config(BASE)), &config(&moved));
        assert_eq!(p.bind.keys().collect::<Vec<_>>(), ["127.0.0.1:6433"]);
    }

    #[test]
    fn restart_only_settings_are_named() {
        let threads = format!("{BASE}worker_threads: 3\n");
        let p = plan(Some(&config(BASE)), &config(&threads));
        assert_eq!(p.restart_only, ["worker_threads"]);
        assert_eq!(p.groups["pg"], GroupPlan::Keep);
    }
}
