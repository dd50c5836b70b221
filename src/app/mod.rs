//! The composition root: turns a validated Config into bound listeners, pools and users, applies
//! a reloaded one on top of what runs (SIGHUP, or the file watch), and drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::drain::Drain;
use thiserror::Error;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Duration;
use tokio_util::task::TaskTracker;

mod apply;
mod build;
mod groups;
mod plan;
pub mod preflight;

pub use preflight::Preflight;

use crate::auth::users::{Users, UsersError};
use crate::config::Config;
use crate::metrics::admin::{self, AdminState};
use crate::metrics::{CredentialList, GroupList, Metrics};
use crate::mysql::kill::KillRegistry;
use crate::postgres::cancel::CancelRegistry;
use crate::session::park::Lot;
use crate::tls::{ClientTls, TlsError};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error("endpoint {endpoint}: cannot listen on {addr}: {source}")]
    Bind {
        endpoint: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(TlsError),
    #[error("target group {group}: server_tls: {source}")]
    ServerTls { group: String, source: TlsError },
    #[error(
        "target group {group}: server_iam: no AWS credentials found (environment, profile, web identity or instance profile)"
    )]
    ServerIam { group: String },
    #[error("endpoint {endpoint}: {reason}")]
    Unsupported { endpoint: String, reason: String },
    #[error("admin.bearer_token_env: the environment variable {0} is not set or empty")]
    AdminToken(String),
}

/// Where a reload reads the config from, and whether it polls the file for changes.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub watch: bool,
}

/// How often the opt-in file watch reads the config. Polling the content, not inotify: a
/// Kubernetes ConfigMap update swaps a symlink, which file events report unreliably.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Everything sluice runs, bound and ready.
#[derive(Debug)]
pub struct App {
    /// The admin server and what outlives any one config (retiring clusters).
    tasks: JoinSet<()>,
    /// The accept loops: ended first when draining.
    accepts: JoinSet<()>,
    /// Every client session, so a drain can wait for them.
    sessions: TaskTracker,
    /// Process-wide handles every cluster holds: the drain token, the pin counts, the lot.
    shared: build::Shared,
    /// Where idle sessions wait without a task; stopped when the app is dropped.
    _lot: Option<Lot>,
    cancel: Arc<CancelRegistry>,
    kill: Arc<KillRegistry>,
    /// Process-wide: endpoints share pools, and a session id marks unnamed-statement ownership.
    session_ids: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    group_list: GroupList,
    credential_list: CredentialList,
    state: Arc<AdminState>,
    admin: Option<SocketAddr>,
    running: Option<Running>,
}

/// What the config in force built.
#[derive(Debug)]
struct Running {
    config: Config,
    users: Arc<Users>,
    refresher: Option<AbortHandle>,
    client_tls: Option<(Arc<ClientTls>, AbortHandle)>,
    groups: HashMap<String, groups::RunningGroup>,
    /// By [`plan::listen_key`].
    listeners: HashMap<String, apply::Listening>,
}

impl App {
    pub async fn build(preflight: &Preflight) -> Result<Self, AppError> {
        let config = &preflight.config;
        let group_list = GroupList::default();
        let cancel = Arc::new(CancelRegistry::default());
        let kill = Arc::new(KillRegistry::default());
        let sessions = TaskTracker::new();
        let drain = Drain::default();
        let lot = match Lot::start(sessions.clone()) {
            Ok(lot) => Some(lot),
            Err(e) => {
                tracing::warn!(error = %e, "idle sessions will wait in their tasks: no thread for the lot");
                None
            }
        };
        let parking = lot.as_ref().map(Lot::parking);
        let mut metrics = Metrics::new();
        if let Some(parking) = &parking {
            metrics.add_parked(parking.clone());
        }
        metrics.add_groups(group_list.clone());
        metrics.add_sessions(vec![cancel.clone(), kill.clone()], group_list.clone());
        let credential_list = CredentialList::default();
        metrics.add_credentials(credential_list.clone());
        let pin_counts = Arc::new(crate::session::PinCounts::default());
        metrics.add_pins(pin_counts.clone());
        let metrics = Arc::new(metrics);
        let token = match config
            .admin
            .as_ref()
            .and_then(|a| a.bearer_token_env.as_ref())
        {
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                _ => return Err(AppError::AdminToken(var.clone())),
            },
            None => None,
        };
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            groups: group_list.clone(),
            endpoints: Default::default(),
            sessions: vec![cancel.clone(), kill.clone()],
            draining: Default::default(),
            ready_without_writer: Default::default(),
            token,
        });
        let mut app = Self {
            tasks: JoinSet::new(),
            accepts: JoinSet::new(),
            sessions,
            shared: build::Shared {
                drain: drain.clone(),
                pin_counts,
                parking: parking.clone(),
            },
            _lot: lot,
            cancel,
            kill,
            session_ids: Arc::new(AtomicU64::new(0)),
            metrics,
            group_list,
            credential_list,
            state,
            admin: None,
            running: None,
        };
        if let Some(parking) = parking {
            app.tasks.spawn(async move {
                drain.cancelled().await;
                parking.drain();
            });
        }
        app.apply(preflight).await?;
        if let Some(a) = &config.admin {
            let listener = build::bind(a.listen).map_err(|source| AppError::Bind {
                endpoint: "admin".into(),
                addr: a.listen,
                source,
            })?;
            let local = listener.local_addr().unwrap_or(a.listen);
            tracing::info!(listen = %local, "admin ready: /metrics /healthz /readyz /v1/");
            app.tasks.spawn(admin::serve(listener, app.state.clone()));
            app.admin = Some(local);
        }
        Ok(app)
    }

    /// The admin listener's bound address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Serves until `shutdown` resolves, applying the config at `reload` again on SIGHUP (and
    /// when its content changes, with `watch`). Then drains: /readyz turns 503 at once,
    /// listeners keep accepting for `shutdown_grace` (load balancers and Kubernetes endpoints
    /// catch up), then close; sessions end at their next transaction boundary; what is still in
    /// a transaction `shutdown_timeout` after the signal is cut off.
    pub async fn run(
        mut self,
        reload: Option<ReloadSource>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut hangups = crate::shutdown::hangups();
        let watch = reload.as_ref().is_some_and(|r| r.watch);
        let mut seen = reload.as_ref().and_then(|r| std::fs::read(&r.path).ok());
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = hangups.next() => {
                    if let Some(r) = &reload {
                        seen = std::fs::read(&r.path).ok();
                        self.reload(r, "SIGHUP").await;
                    }
                }
                _ = tick.tick(), if watch => {
                    let Some(r) = &reload else { continue };
                    let now = std::fs::read(&r.path).ok();
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload(r, "file changed").await;
                    }
                }
            }
        }
        self.shut_down().await;
    }

    /// Reads and applies the config again; an invalid or unappliable one is refused with its
    /// problems logged, and the running config stays.
    async fn reload(&mut self, source: &ReloadSource, why: &str) {
        tracing::info!(path = %source.path.display(), why, "reloading the config");
        let preflight = match preflight::load(&source.path) {
            Ok(c) => c,
            Err(errors) => {
                tracing::error!(
                    problems = errors.0.len(),
                    "config reload refused, the running config stays:\n{errors}"
                );
                return;
            }
        };
        match self.apply(&preflight).await {
            Ok(()) => tracing::info!("config reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "config reload refused, the running config stays");
            }
        }
    }

    async fn shut_down(mut self) {
        let (grace, timeout) =
            self.running
                .as_ref()
                .map_or((Duration::ZERO, Duration::ZERO), |r| {
                    (
                        r.config.shutdown_grace.as_std(),
                        r.config.shutdown_timeout.as_std(),
                    )
                });
        let deadline = tokio::time::Instant::now() + timeout;
        self.state.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            ?grace,
            ?timeout,
            sessions = self.sessions.len(),
            "draining: /readyz answers 503; still accepting for shutdown_grace"
        );
        tokio::time::sleep(grace).await;
        self.accepts.shutdown().await;
        self.sessions.close();
        self.shared.drain.cancel();
        tracing::info!(
            sessions = self.sessions.len(),
            "listeners closed; sessions end at their next transaction boundary"
        );
        match tokio::time::timeout_at(deadline, self.sessions.wait()).await {
            Ok(()) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!(
                sessions = self.sessions.len(),
                "shutdown_timeout reached: closing sessions still in a transaction"
            ),
        }
        self.tasks.shutdown().await;
    }
}
