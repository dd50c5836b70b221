//! Applying a config on top of what runs. Everything that can fail (secrets, TLS files, binding
//! new addresses) happens first, so a refused reload changes nothing; then target groups are
//! kept, resized in place or built anew, and each listening socket is handed the endpoint its
//! new clients get. Open sessions keep what they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Duration;

use super::groups::{GroupCluster, RunningGroup};
use super::plan::{self, GroupPlan, Plan, listen_key};
use super::preflight::Preflight;
use super::{App, AppError, Running, build};
use crate::auth::ServerAccess;
use crate::auth::iam::signer::TokenSigner;
use crate::auth::secrets_manager::AwsEnv;
use crate::auth::users::{User, Users};
use crate::config::TargetGroup;
use crate::config::{Config, Endpoint as EndpointConfig, Engine, Role};
use crate::listener::{self, Admission, AnyEndpoint, Served};
use crate::metrics::EndpointMetrics;
use crate::metrics::api::EndpointView;
use crate::mysql::endpoint::MySide;
use crate::postgres::client::PgSide;
use crate::routing::Want;
use crate::tls::{ClientTls, ServerConnector};

/// One listening socket and what it serves now.
#[derive(Debug)]
pub(super) struct Listening {
    served: Arc<ArcSwap<Served>>,
    local: SocketAddr,
    task: AbortHandle,
}

async fn server_access(
    name: &str,
    group: &TargetGroup,
    preflight: &Preflight,
    aws: &AwsEnv<'_>,
) -> Result<ServerAccess, AppError> {
    let tls = match preflight.server_tls.get(name) {
        Some(tls) => tls.clone(),
        None => ServerConnector::new(&group.server_tls).map_err(|source| AppError::ServerTls {
            group: name.to_owned(),
            source,
        })?,
    };
    let iam =
        match &group.server_iam {
            Some(iam) => {
                let provider = aws.config().await.credentials_provider().ok_or_else(|| {
                    AppError::ServerIam {
                        group: name.to_owned(),
                    }
                })?;
                Some(Arc::new(TokenSigner::new(&iam.region, provider)))
            }
            None => None,
        };
    Ok(ServerAccess {
        tls,
        iam,
        tcp_user_timeout: group.connection_pool.tcp_user_timeout.as_std(),
    })
}

/// What the endpoints of a config are built from.
struct Serving<'a> {
    groups: &'a HashMap<String, RunningGroup>,
    users: &'a Arc<Users>,
    tls: &'a Option<Arc<ClientTls>>,
    config: &'a Config,
}

/// What could fail, done: applying a config either gets this far or changes nothing.
struct Prepared {
    users: Arc<Users>,
    /// The client TLS in force after this config.
    tls: Option<Arc<ClientTls>>,
    /// Groups to build, with how their instances are reached and who the probes log in as.
    builds: HashMap<String, (ServerAccess, Arc<User>)>,
    /// Newly bound listening sockets, by listen key.
    bound: HashMap<String, TcpListener>,
}

impl App {
    /// Makes `config` the one in force (the first one at start): what to do is planned from
    /// the two configs, everything that can fail is prepared, then the rest is committed.
    pub(super) async fn apply(&mut self, preflight: &Preflight) -> Result<(), AppError> {
        let config = &preflight.config;
        let plan = plan::plan(self.running.as_ref().map(|r| &r.config), config);
        for setting in &plan.restart_only {
            tracing::warn!("{setting} changed: takes effect at the next restart");
        }
        let prepared = self.prepare(&plan, preflight).await?;
        // Nothing below fails: the new config goes into force.
        self.commit(plan, prepared, config);
        Ok(())
    }

    async fn prepare(&self, plan: &Plan, preflight: &Preflight) -> Result<Prepared, AppError> {
        let config = &preflight.config;
        let prev = self.running.as_ref();
        let aws = AwsEnv::new(&config.secrets_manager);
        let previous = prev.map(|r| &*r.users);
        let users = Arc::new(Users::reload(config, &aws, previous, &preflight.preread).await?);
        let tls = if plan.client_tls_changed {
            preflight.client_tls.clone()
        } else {
            prev.and_then(|r| r.client_tls.as_ref().map(|(t, _)| t.clone()))
        };
        let mut builds = HashMap::new();
        for (name, decided) in &plan.groups {
            let group = &config.target_groups[name];
            let monitor = build::monitor_user(config, &users, group).ok_or_else(|| {
                let endpoint = config.endpoints.iter().find(|e| &e.target_group == name);
                AppError::Unsupported {
                    endpoint: endpoint.map_or_else(|| name.clone(), |e| e.name.clone()),
                    reason: "no auth entry for the probes to log in with".into(),
                }
            })?;
            if *decided == GroupPlan::Build {
                let access = server_access(name, group, preflight, &aws).await?;
                builds.insert(name.clone(), (access, monitor));
            }
        }
        let mut bound = HashMap::new();
        for (key, endpoint) in &plan.bind {
            let Some(ep) = config.endpoints.iter().find(|e| &e.name == endpoint) else {
                continue;
            };
            let listener = build::bind(ep.listen).map_err(|source| AppError::Bind {
                endpoint: ep.name.clone(),
                addr: ep.listen,
                source,
            })?;
            bound.insert(key.clone(), listener);
        }
        Ok(Prepared {
            users,
            tls,
            builds,
            bound,
        })
    }

    fn commit(&mut self, plan: Plan, prepared: Prepared, config: &Config) {
        let Prepared {
            users,
            tls,
            mut builds,
            bound,
        } = prepared;
        let mut running = self.running.take();
        let old_groups = running
            .as_mut()
            .map(|r| std::mem::take(&mut r.groups))
            .unwrap_or_default();
        let groups = self.commit_groups(&plan, &mut builds, old_groups, config);
        let old_listeners = running
            .as_mut()
            .map(|r| std::mem::take(&mut r.listeners))
            .unwrap_or_default();
        let serving = Serving {
            groups: &groups,
            users: &users,
            tls: &tls,
            config,
        };
        let (listeners, views) = self.commit_listeners(&serving, bound, old_listeners);
        self.publish(&groups, &users, views, config);
        let (mut refresher, mut client_tls) = running
            .map(|r| (r.refresher, r.client_tls))
            .unwrap_or_default();
        if let Some(old) = refresher.take() {
            old.abort();
        }
        let stored: Vec<_> = users.from_secrets_manager().cloned().collect();
        if !stored.is_empty() {
            let every = config.secrets_manager.refresh_interval.as_std();
            refresher = Some(
                self.tasks
                    .spawn(crate::auth::credentials::refresh_every(stored, every)),
            );
        }
        if plan.client_tls_changed {
            if let Some((_, watch)) = client_tls.take() {
                watch.abort();
            }
            client_tls = tls.map(|t| {
                let watch = self.tasks.spawn(t.clone().watch());
                (t, watch)
            });
        }
        self.running = Some(Running {
            config: config.clone(),
            users,
            refresher,
            client_tls,
            groups,
            listeners,
        });
    }

    /// Keeps, resizes or builds each group the plan names; retires the rest.
    fn commit_groups(
        &mut self,
        plan: &Plan,
        builds: &mut HashMap<String, (ServerAccess, Arc<User>)>,
        mut old: HashMap<String, RunningGroup>,
        config: &Config,
    ) -> HashMap<String, RunningGroup> {
        let mut groups = HashMap::new();
        for (name, decided) in &plan.groups {
            let group = &config.target_groups[name];
            let g = match (decided, old.remove(name), builds.remove(name)) {
                (GroupPlan::Keep, Some(g), _) => g,
                (GroupPlan::Resize, Some(mut g), _) => {
                    g.cluster.resize(&group.connection_pool);
                    g.config = group.clone();
                    tracing::info!(target_group = %name, "connection caps changed");
                    g
                }
                (_, before, Some((access, monitor))) => {
                    if let Some(before) = before {
                        self.retire(name.clone(), before);
                    }
                    self.build_group(name, group, &access, &monitor)
                }
                // Keep and Resize are planned from a group that is there; Build was prepared.
                (_, before, None) => {
                    if let Some(before) = before {
                        self.retire(name.clone(), before);
                    }
                    continue;
                }
            };
            groups.insert(name.clone(), g);
        }
        for (name, g) in old {
            self.retire(name, g);
        }
        groups
    }

    /// Hands every endpoint's socket (kept or newly bound) the endpoint its new clients get;
    /// closes the sockets the plan drops.
    fn commit_listeners(
        &mut self,
        serving: &Serving<'_>,
        mut bound: HashMap<String, TcpListener>,
        mut old: HashMap<String, Listening>,
    ) -> (HashMap<String, Listening>, Vec<EndpointView>) {
        let config = serving.config;
        let mut listeners = HashMap::new();
        let mut views = Vec::new();
        for ep in &config.endpoints {
            let Some(group) = serving.groups.get(&ep.target_group) else {
                continue;
            };
            let key = listen_key(&ep.name, ep.listen);
            let local = match (old.get(&key), bound.get(&key)) {
                (Some(l), _) => l.local,
                (None, Some(b)) => b.local_addr().unwrap_or(ep.listen),
                (None, None) => continue,
            };
            let metrics = self.metrics.endpoint(&ep.name, &ep.target_group);
            let served = Served {
                endpoint: self.endpoint(ep, serving, &group.cluster, local, &metrics),
                admission: Admission {
                    allowed: ep.allowed_cidrs.clone(),
                    handshakes_per_second: ep.max_handshakes_per_second,
                },
            };
            let listening = if let Some(l) = old.remove(&key) {
                l.served.store(Arc::new(served));
                l
            } else if let Some(socket) = bound.remove(&key) {
                let served = Arc::new(ArcSwap::from_pointee(served));
                let task = self.accepts.spawn(listener::accept_loop(
                    socket,
                    served.clone(),
                    self.sessions.clone(),
                ));
                tracing::info!(endpoint = %ep.name, listen = %local, target_group = %ep.target_group, role = ?ep.role, "endpoint ready");
                Listening {
                    served,
                    local,
                    task,
                }
            } else {
                continue;
            };
            views.push(endpoint_view(ep, config, local, metrics));
            listeners.insert(key, listening);
        }
        for (_, l) in old {
            l.task.abort();
            tracing::info!(listen = %l.local, "endpoint removed: no new clients; its sessions go on");
        }
        (listeners, views)
    }

    /// What the admin API and the scrape read: groups, users' secrets, endpoints, readiness.
    fn publish(
        &self,
        groups: &HashMap<String, RunningGroup>,
        users: &Users,
        views: Vec<EndpointView>,
        config: &Config,
    ) {
        let mut group_views: Vec<_> = groups.iter().map(|(n, g)| g.cluster.view(n)).collect();
        group_views.sort_by(|a, b| a.name().cmp(b.name()));
        self.group_list.store(Arc::new(group_views));
        let mut credentials: Vec<Arc<dyn crate::metrics::SecretReads>> = users
            .credentials()
            .map(|c| c.clone() as Arc<dyn crate::metrics::SecretReads>)
            .collect();
        credentials.sort_by(|a, b| a.name().cmp(b.name()));
        self.credential_list.store(Arc::new(credentials));
        self.state.endpoints.store(Arc::new(views));
        let ready_without_writer = config
            .admin
            .as_ref()
            .is_some_and(|a| a.ready_without_writer);
        self.state
            .ready_without_writer
            .store(ready_without_writer, std::sync::atomic::Ordering::Relaxed);
    }

    fn build_group(
        &self,
        name: &str,
        group: &TargetGroup,
        access: &ServerAccess,
        monitor: &Arc<User>,
    ) -> RunningGroup {
        let mut tasks = JoinSet::new();
        let shared = &self.shared;
        let cluster = match group.engine {
            Engine::Postgres => GroupCluster::Postgres(build::pg_cluster(
                name, group, monitor, access, shared, &mut tasks,
            )),
            Engine::Mysql => GroupCluster::Mysql(build::my_cluster(
                name, group, monitor, access, shared, &mut tasks,
            )),
        };
        RunningGroup {
            config: group.clone(),
            cluster,
            tasks,
        }
    }

    /// Stops a replaced or removed group's probes and trimming once no endpoint or session
    /// holds its cluster any more (open sessions keep using it until they end).
    fn retire(&mut self, name: String, group: RunningGroup) {
        let RunningGroup { cluster, tasks, .. } = group;
        let in_use = cluster.in_use();
        tracing::info!(target_group = %name, "target group replaced: open sessions keep the old one");
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while in_use() {
                tick.tick().await;
            }
            drop(tasks);
            tracing::info!(target_group = %name, "replaced target group's probes stopped");
        });
    }

    fn endpoint(
        &self,
        ep: &EndpointConfig,
        serving: &Serving<'_>,
        cluster: &GroupCluster,
        local: SocketAddr,
        metrics: &EndpointMetrics,
    ) -> AnyEndpoint {
        let Serving {
            users, tls, config, ..
        } = serving;
        let want = match ep.role {
            Role::ReadWrite => Want::Writer,
            Role::ReadOnly => Want::Reader {
                fallback: ep.reader_fallback_to_writer,
            },
            Role::ReadWriteSplit => Want::Split,
        };
        let shared = crate::endpoint::Endpoint {
            name: ep.name.as_str().into(),
            group: ep.target_group.as_str().into(),
            want,
            read_your_writes_timeout: ep.read_your_writes_timeout.as_std(),
            users: Arc::clone(users),
            port: local.port(),
            tls: Option::clone(tls),
            require_tls: ep.require_tls,
            idle_client_timeout: config.idle_client_timeout.as_std(),
            idle_client_park_after: Some(config.idle_client_park_after.as_std())
                .filter(|d| !d.is_zero()),
            metrics: metrics.clone(),
            session_ids: self.session_ids.clone(),
            engine: (),
        };
        match cluster {
            GroupCluster::Postgres(cluster) => {
                let engine = PgSide {
                    cluster: cluster.clone(),
                    cancel: self.cancel.clone(),
                };
                AnyEndpoint::Postgres(Arc::new(shared.with_engine(engine)))
            }
            GroupCluster::Mysql(cluster) => {
                let engine = MySide {
                    cluster: cluster.clone(),
                    kill: self.kill.clone(),
                    local_infile: ep.local_infile,
                };
                AnyEndpoint::Mysql(Arc::new(shared.with_engine(engine)))
            }
        }
    }
}

fn endpoint_view(
    ep: &EndpointConfig,
    config: &Config,
    local: SocketAddr,
    metrics: EndpointMetrics,
) -> EndpointView {
    EndpointView {
        name: ep.name.clone(),
        listen: local,
        target_group: ep.target_group.clone(),
        engine: config.target_groups[&ep.target_group].engine.name(),
        role: ep.role.name(),
        require_tls: ep.require_tls,
        metrics,
    }
}
