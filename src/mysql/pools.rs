//! The MySQL pools of one instance, keyed by login user and the client capabilities and collation
//! a server connection is opened with (the default schema is session state, not a pool key).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::server::{ServerConn, ServerLogin};
use super::state::{Dialect, Vars};
use crate::auth::ServerAccess;
use crate::auth::credentials::Credentials;
use crate::errors::ConnectError;
use crate::pool::{ConnectFuture, Connector, Instance, Pool, PoolSettings};

/// What a client's handshake decides about its server connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: String,
    pub caps: u32,
    pub collation: u8,
}

/// One (instance, user, capabilities, collation) pool.
#[derive(Debug)]
pub struct MyPool {
    pub pool: Pool<ServerConn>,
    /// Its key, to find the same pool on another instance.
    pub key: PoolKey,
    pub login: ServerLogin,
    /// The instance address, shared (a session names it for KILL QUERY at every borrow).
    pub addr: Arc<str>,
    pub dialect: Arc<Dialect>,
    pub init_query: Arc<str>,
    /// Tracked variables of a fresh connection (after `init_query`), learned at first connect.
    pub baseline: Arc<OnceLock<Vars>>,
    /// MariaDB: the role a fresh connection has active (the user's default role, or none),
    /// learned at first connect; a reset must leave a connection in it.
    pub baseline_role: Arc<OnceLock<Option<Box<str>>>>,
    /// Schemas a `USE` or login already proved to exist, so later logins skip the check.
    pub known_schemas: Mutex<HashSet<String>>,
}

struct MyConnector {
    login: ServerLogin,
    init_query: Arc<str>,
    dialect: Arc<Dialect>,
    baseline: Arc<OnceLock<Vars>>,
    baseline_role: Arc<OnceLock<Option<Box<str>>>>,
    instance: Weak<Instance<ServerConn>>,
}

impl Connector<ServerConn> for MyConnector {
    fn connect(&self) -> ConnectFuture<'_, ServerConn> {
        Box::pin(async move {
            let addr = self.login.addr.as_str();
            let mut conn = ServerConn::connect(&self.login).await?;
            for statement in self.init_query.split(';').filter(|s| !s.trim().is_empty()) {
                conn.query(addr, statement).await?;
            }
            if let Some(instance) = self.instance.upgrade()
                && instance.needs_server_max()
            {
                let rows = conn.query(addr, "SELECT @@max_connections").await?;
                let max = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| ConnectError::Protocol {
                        instance: addr.to_owned(),
                        reason: "unreadable max_connections".into(),
                    })?;
                instance.learn_server_max(max);
            }
            if self.baseline.get().is_none() {
                let row = conn.query(addr, &self.dialect.read_back).await?.pop();
                let (vars, _) = row
                    .and_then(|r| self.dialect.parse_read_back(r))
                    .ok_or_else(|| ConnectError::Protocol {
                        instance: addr.to_owned(),
                        reason: "unreadable session variables".into(),
                    })?;
                let _ = self.baseline.set(vars);
            }
            if self.dialect.mariadb && self.baseline_role.get().is_none() {
                let role = conn.current_role(addr).await?;
                let _ = self.baseline_role.set(role);
            }
            Ok(conn)
        })
    }
}

/// All pools on one instance.
#[derive(Debug)]
pub struct MyPools {
    pub instance: Arc<Instance<ServerConn>>,
    settings: PoolSettings,
    init_query: Arc<str>,
    /// The server's greeting, learned from the first client that connects.
    pub server: tokio::sync::OnceCell<ServerInfo>,
    access: ServerAccess,
    pools: Mutex<HashMap<PoolKey, Arc<MyPool>>>,
}

/// What a client greeting repeats from the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub caps: u32,
    pub collation: u8,
    pub dialect: Arc<Dialect>,
}

impl MyPools {
    pub fn new(
        instance: Arc<Instance<ServerConn>>,
        settings: PoolSettings,
        init_query: String,
    ) -> Self {
        Self {
            instance,
            settings,
            init_query: init_query.into(),
            server: tokio::sync::OnceCell::new(),
            access: ServerAccess::default(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Reaches the instance as the target group's `server_tls` and `server_iam` say.
    #[must_use]
    pub fn with_access(mut self, access: ServerAccess) -> Self {
        self.access = access;
        self
    }

    /// The server's version and capabilities, read once from a greeting (no login needed).
    pub async fn server_info(&self) -> Result<&ServerInfo, ConnectError> {
        self.server
            .get_or_try_init(|| async {
                let addr = self.instance.addr();
                let g = tokio::time::timeout(
                    self.settings.connect_timeout,
                    super::server::greeting(addr),
                )
                .await
                .map_err(|_| ConnectError::Timeout {
                    instance: addr.to_owned(),
                })??;
                Ok(ServerInfo {
                    dialect: Arc::new(Dialect::for_version(&g.version)),
                    version: g.version,
                    caps: g.caps,
                    collation: g.charset,
                })
            })
            .await
    }

    /// The pool for `key`, created on first use.
    pub fn get(
        &self,
        key: &PoolKey,
        credentials: &Arc<Credentials>,
        dialect: &Arc<Dialect>,
    ) -> Arc<MyPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(key) {
            return p.clone();
        }
        let login = ServerLogin {
            addr: self.instance.addr().to_owned(),
            user: key.user.clone(),
            credentials: credentials.clone(),
            caps: key.caps,
            collation: key.collation,
            access: self.access.clone(),
            program_name: super::server::POOL_PROGRAM,
        };
        let baseline = Arc::new(OnceLock::new());
        let baseline_role = Arc::new(OnceLock::new());
        let connector = MyConnector {
            login: login.clone(),
            init_query: self.init_query.clone(),
            dialect: dialect.clone(),
            baseline: baseline.clone(),
            baseline_role: baseline_role.clone(),
            instance: Arc::downgrade(&self.instance),
        };
        let name = format!(
            "{}/{}/{:x}/{}",
            self.instance.addr(),
            key.user,
            key.caps,
            key.collation
        );
        let pool = Arc::new(MyPool {
            pool: Pool::new(
                name,
                self.instance.clone(),
                Box::new(connector),
                self.settings,
            ),
            key: key.clone(),
            addr: login.addr.as_str().into(),
            login,
            dialect: dialect.clone(),
            init_query: self.init_query.clone(),
            baseline,
            baseline_role,
            known_schemas: Mutex::new(HashSet::new()),
        });
        pools.insert(key.clone(), pool.clone());
        pool
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }
}
