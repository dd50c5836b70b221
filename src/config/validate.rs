//! Semantic checks across the deserialized config: references, limits, and what this
//! build does not support. Runs on whatever deserialized, so problems add up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::model::{
    AuthEntry, ClientAuth, ConnectionPool, Endpoint, Engine, Fleet, Health, ServerTlsMode,
    TargetGroup,
};
use super::parse::Parts;
use super::{Duration, Problem, Seg};

pub(super) fn validate(parts: &Parts, problems: &mut Vec<Problem>) {
    let mut v = Validator { problems };
    let group_names: Option<BTreeSet<&str>> = parts
        .target_groups
        .as_ref()
        .map(|groups| groups.keys().map(String::as_str).collect());
    let admin_listen = parts
        .rest
        .as_ref()
        .and_then(|c| c.admin.as_ref())
        .map(|a| a.listen);
    // Without a readable rest, whether `tls` is set is unknown: no second report then.
    let has_tls = parts.rest.as_ref().is_none_or(|c| c.tls.is_some());
    if let Some(endpoints) = &parts.endpoints {
        v.endpoints(endpoints, group_names.as_ref(), admin_listen, has_tls);
    }
    if let Some(groups) = &parts.target_groups {
        if groups.is_empty() {
            v.report(
                &[Seg::key("target_groups")],
                "at least one target group is required",
            );
        }
        for (name, group) in groups {
            if let Some(group) = group {
                let path = [Seg::key("target_groups"), Seg::key(name)];
                v.target_group(&path, group, &parts.auth_usernames);
            }
        }
    }
    if let Some(auth) = &parts.auth {
        // Unknown when the rest did not parse: then no second report.
        let sections = parts
            .rest
            .as_ref()
            .map_or((true, true), |c| (c.iam.is_some(), c.jwt.is_some()));
        v.auth(auth, sections);
    }
    if let Some(rest) = &parts.rest {
        v.positive(&[Seg::key("idle_client_timeout")], rest.idle_client_timeout);
        let park = rest.idle_client_park_after.as_std();
        if !park.is_zero() && park < std::time::Duration::from_secs(1) {
            v.report(
                &[Seg::key("idle_client_park_after")],
                "must be 0s (never park) or at least 1s (an idle session keeps its buffers for a second first)",
            );
        }
        if rest.shutdown_grace > rest.shutdown_timeout {
            v.report(
                &[Seg::key("shutdown_grace")],
                "must not be longer than shutdown_timeout",
            );
        }
        if let Some(admin) = &rest.admin
            && let Some(var) = &admin.bearer_token_env
            && var.is_empty()
        {
            v.report(
                &[Seg::key("admin"), Seg::key("bearer_token_env")],
                "must name an environment variable",
            );
        }
        v.positive(
            &[Seg::key("secrets_manager"), Seg::key("refresh_interval")],
            rest.secrets_manager.refresh_interval,
        );
        if rest.worker_threads == Some(0) {
            v.problems.push(Problem::new(
                &[Seg::key("worker_threads")],
                "must be at least 1",
            ));
        }
    }
}

struct Validator<'a> {
    problems: &'a mut Vec<Problem>,
}

fn at(base: &[Seg], key: &str) -> Vec<Seg> {
    let mut path = base.to_vec();
    path.push(Seg::key(key));
    path
}

impl Validator<'_> {
    fn report(&mut self, path: &[Seg], message: &str) {
        self.problems.push(Problem::new(path, message));
    }

    fn positive(&mut self, path: &[Seg], d: Duration) {
        if d.is_zero() {
            self.report(path, "must be greater than 0");
        }
    }

    fn endpoints(
        &mut self,
        endpoints: &[Option<Endpoint>],
        groups: Option<&BTreeSet<&str>>,
        admin_listen: Option<SocketAddr>,
        has_tls: bool,
    ) {
        if endpoints.is_empty() {
            self.report(
                &[Seg::key("endpoints")],
                "at least one endpoint is required",
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut listens: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            let Some(e) = e else { continue };
            let path = [Seg::key("endpoints"), Seg::Index(i)];
            if e.name.is_empty() {
                self.report(&at(&path, "name"), "must not be empty");
            } else if let Some(first) = names.insert(&e.name, i) {
                names.insert(&e.name, first);
                let msg = format!(
                    "duplicate endpoint name `{}` (also endpoints[{first}])",
                    e.name
                );
                self.report(&at(&path, "name"), &msg);
            }
            // Port 0 asks the OS for a free port, so several such endpoints never clash.
            if e.listen.port() != 0
                && let Some(first) = listens.insert(e.listen, i)
            {
                listens.insert(e.listen, first);
                let msg = format!(
                    "listen address {} is already used by endpoints[{first}]",
                    e.listen
                );
                self.report(&at(&path, "listen"), &msg);
            }
            if let Some(groups) = groups
                && !groups.contains(e.target_group.as_str())
            {
                let defined: Vec<&str> = groups.iter().copied().collect();
                let msg = format!(
                    "unknown target group `{}` (defined: {})",
                    e.target_group,
                    if defined.is_empty() {
                        "none".to_owned()
                    } else {
                        defined.join(", ")
                    }
                );
                self.report(&at(&path, "target_group"), &msg);
            }
            if e.require_tls && !has_tls {
                self.report(
                    &at(&path, "require_tls"),
                    "needs a `tls` section with the certificate to present",
                );
            }
        }
        if let Some(listen) = admin_listen.filter(|l| l.port() != 0)
            && let Some(first) = listens.get(&listen)
        {
            let msg = format!("listen address {listen} is already used by endpoints[{first}]");
            self.report(&[Seg::key("admin"), Seg::key("listen")], &msg);
        }
    }

    fn target_group(&mut self, path: &[Seg], group: &TargetGroup, auth_usernames: &[String]) {
        if let Some(iam) = &group.server_iam {
            if iam.region.trim().is_empty() {
                self.report(&at(path, "server_iam"), "region must not be empty");
            }
            // A token is a bearer credential for 15 minutes; RDS itself demands TLS for it.
            if matches!(
                group.server_tls.mode,
                ServerTlsMode::Disable | ServerTlsMode::Prefer
            ) {
                self.report(
                    &at(path, "server_iam"),
                    "IAM tokens are sent in clear text: set server_tls.mode to require, verify-ca or verify-full",
                );
            }
        }
        if group.instances.is_empty() {
            self.report(&at(path, "instances"), "at least one instance is required");
        }
        let unix = group
            .instances
            .iter()
            .any(|i| super::unix_path(i).is_some());
        // Neither engine's socket carries TLS here, and RDS is never on the same host.
        if unix
            && !matches!(
                group.server_tls.mode,
                ServerTlsMode::Disable | ServerTlsMode::Prefer
            )
        {
            self.report(
                &at(path, "server_tls"),
                "a unix: instance has no TLS: set server_tls.mode to disable or prefer",
            );
        }
        if unix && group.server_iam.is_some() {
            self.report(
                &at(path, "server_iam"),
                "a unix: instance cannot take IAM tokens (they are for RDS over TLS)",
            );
        }
        let mut seen = BTreeSet::new();
        for (k, instance) in group.instances.iter().enumerate() {
            let mut ipath = at(path, "instances");
            ipath.push(Seg::Index(k));
            if let Err(why) = check_instance(instance) {
                self.report(&ipath, &format!("invalid instance `{instance}`: {why}"));
            } else if !seen.insert(instance.as_str()) {
                self.report(&ipath, &format!("duplicate instance `{instance}`"));
            }
        }
        if let Some(user) = &group.monitor_user
            && !auth_usernames.contains(user)
        {
            let msg = format!("monitor_user `{user}` is not the username of any auth entry");
            self.report(&at(path, "monitor_user"), &msg);
        }
        self.pool(
            &at(path, "connection_pool"),
            &group.connection_pool,
            group.engine,
        );
        self.health(&at(path, "health"), &group.health);
    }

    fn pool(&mut self, path: &[Seg], pool: &ConnectionPool, engine: Engine) {
        if pool.max_connections.is_some() && pool.max_connections_percent.is_some() {
            self.report(
                path,
                "max_connections and max_connections_percent are mutually exclusive; set one",
            );
        }
        if pool
            .max_connections_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            self.report(
                &at(path, "max_connections_percent"),
                "must be between 1 and 100",
            );
        }
        if pool.max_connections == Some(0) {
            self.report(&at(path, "max_connections"), "must be at least 1");
        }
        if pool.max_idle_connections_percent > 100 {
            self.report(
                &at(path, "max_idle_connections_percent"),
                "must be between 0 and 100",
            );
        }
        self.positive(
            &at(path, "connection_borrow_timeout"),
            pool.connection_borrow_timeout,
        );
        self.positive(&at(path, "idle_timeout"), pool.idle_timeout);
        self.positive(
            &at(path, "max_connection_lifetime"),
            pool.max_connection_lifetime,
        );
        self.positive(&at(path, "connect_timeout"), pool.connect_timeout);
        let user_timeout = pool.tcp_user_timeout.as_std();
        if !user_timeout.is_zero()
            && !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600))
                .contains(&user_timeout)
        {
            self.report(
                &at(path, "tcp_user_timeout"),
                "must be 0s (the kernel's) or between 1s and 1h",
            );
        }
        if !(1..=10_000_000).contains(&pool.notification_backlog) {
            self.report(
                &at(path, "notification_backlog"),
                "must be between 1 and 10000000",
            );
        }
        if let Some(fleet) = &pool.fleet {
            self.fleet(&at(path, "fleet"), fleet, engine);
        }
    }

    fn fleet(&mut self, path: &[Seg], fleet: &Fleet, engine: Engine) {
        // A member's own connections come first: its probe, and on MySQL its advertising
        // connection (docs/fleet.md); then at least one pool connection.
        let least = match engine {
            Engine::Postgres => 2,
            Engine::Mysql => 3,
        };
        if fleet.name.trim().is_empty() {
            self.report(&at(path, "name"), "must not be empty");
        }
        match (fleet.max_connections, fleet.max_connections_percent) {
            (Some(_), Some(_)) => self.report(
                path,
                "max_connections and max_connections_percent are mutually exclusive; set one",
            ),
            (None, None) => self.report(
                path,
                "needs a budget: max_connections or max_connections_percent",
            ),
            (Some(n), None) if n < least => self.report(
                &at(path, "max_connections"),
                if least == 2 {
                    "must be at least 2 (a probe and a pool connection)"
                } else {
                    "must be at least 3 on MySQL (a probe, an advertising and a pool connection)"
                },
            ),
            (None, Some(p)) if !(1..=100).contains(&p) => self.report(
                &at(path, "max_connections_percent"),
                "must be between 1 and 100",
            ),
            _ => {}
        }
    }

    fn health(&mut self, path: &[Seg], health: &Health) {
        self.positive(&at(path, "interval"), health.interval);
        self.positive(&at(path, "timeout"), health.timeout);
        self.positive(&at(path, "max_replica_lag"), health.max_replica_lag);
        if health.unhealthy_threshold == 0 {
            self.report(&at(path, "unhealthy_threshold"), "must be at least 1");
        }
        if health.healthy_threshold == 0 {
            self.report(&at(path, "healthy_threshold"), "must be at least 1");
        }
    }

    fn auth(&mut self, entries: &[Option<AuthEntry>], (has_iam, has_jwt): (bool, bool)) {
        if entries.is_empty() {
            self.report(&[Seg::key("auth")], "at least one auth entry is required");
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            let path = [Seg::key("auth"), Seg::Index(i)];
            if entry.username.is_empty() {
                self.report(&at(&path, "username"), "must not be empty");
            } else if let Some(first) = names.insert(&entry.username, i) {
                names.insert(&entry.username, first);
                let msg = format!(
                    "duplicate username `{}` (also auth[{first}])",
                    entry.username
                );
                self.report(&at(&path, "username"), &msg);
            }
            match entry.client_auth {
                ClientAuth::Password => {}
                ClientAuth::Iam if !has_iam => self.report(
                    &at(&path, "client_auth"),
                    "client_auth iam needs an `iam` section",
                ),
                ClientAuth::Jwt if !has_jwt => self.report(
                    &at(&path, "client_auth"),
                    "client_auth jwt needs a `jwt` section",
                ),
                ClientAuth::Iam | ClientAuth::Jwt => {}
            }
        }
    }
}

/// `host:port` or `[v6]:port`, port 1-65535; the host is resolved at connect time.
fn check_instance(instance: &str) -> Result<(), &'static str> {
    if let Some(path) = super::unix_path(instance) {
        return if path.starts_with('/') && !path.ends_with('/') {
            Ok(())
        } else {
            Err(
                "a Unix-domain socket is `unix:` and the socket file's absolute path, e.g. unix:/var/run/postgresql/.s.PGSQL.5432",
            )
        };
    }
    let (host, port) = instance
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. 127.0.0.1:5432 or db.internal:5432")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .ok_or("unbalanced `[` around an IPv6 address")?,
        None if host.contains(':') => return Err("write IPv6 addresses as [addr]:port"),
        None => host,
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err("the host is empty or contains spaces");
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err("the port must be a number in 1-65535"),
    }
}
