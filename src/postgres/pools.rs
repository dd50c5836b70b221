//! The Postgres pools of one instance, keyed by (database, user), and how they open connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;

use super::listen::Listeners;
use super::server::{ServerConn, ServerLogin};
use super::settings::Settings;
use super::statements::{SchemaEpoch, StatementRegistry};
use crate::auth::ServerAccess;
use crate::auth::credentials::Credentials;
use crate::errors::ConnectError;
use crate::pool::{ConnectFuture, Connector, Instance, Pool, PoolSettings};

/// One (instance, database, user) pool and what sessions share through it.
#[derive(Debug)]
pub struct PgPool {
    pub pool: Pool<ServerConn>,
    pub login: ServerLogin,
    /// Shared by the pools of every instance for this (database, user): a session that moves to
    /// another instance keeps its statements' ids.
    pub statements: Arc<StatementRegistry>,
    /// Server name prefix of remapped statements, random per process.
    pub prefix: Arc<str>,
    /// Run on every new connection, and again after a reset wiped what it set.
    pub init_query: Arc<str>,
    /// The ParameterStatus set of this pool's server, learned from its first connection, so a
    /// connecting client is answered without a server connection.
    pub reported: OnceLock<Vec<(String, String)>>,
    /// The startup parameters of the last session that logged in: handed to the next one
    /// that sent the same, so a fleet of one application's clients shares one copy; with the
    /// ParameterStatus messages those clients are greeted with, encoded once.
    pub(super) startup: Mutex<(Settings, Option<Bytes>)>,
    /// The ParameterStatus messages of a client that set no parameters (`reported` as is).
    pub(super) plain_parameters: OnceLock<Bytes>,
    /// The target group's listening hubs (shared by every instance's pools).
    pub listeners: Arc<Listeners>,
}

impl PgPool {
    /// `settings` (sorted, as `Settings::from_sorted` takes them) as a copy shared with the
    /// sessions before that sent the same, and the ParameterStatus messages that greet a client
    /// with them: `encode` runs only when they differ from the last login's (callgrind, a
    /// connect storm: encoding them for every login was 4 % of its instructions).
    pub fn share(
        &self,
        settings: Vec<(String, String)>,
        encode: impl FnOnce(&Settings) -> Bytes,
    ) -> (Settings, Bytes) {
        if settings.is_empty() {
            let settings = Settings::default();
            let block = self.plain_parameters.get_or_init(|| encode(&settings));
            return (settings, block.clone());
        }
        let mut last = self.startup.lock().unwrap_or_else(|e| e.into_inner());
        if *last.0 != *settings {
            *last = (Settings::from_sorted(settings), None);
        }
        let (shared, block) = &mut *last;
        let block = block.get_or_insert_with(|| encode(shared)).clone();
        (shared.clone(), block)
    }
}

struct PgConnector {
    login: ServerLogin,
    init_query: String,
    instance: Weak<Instance<ServerConn>>,
}

impl Connector<ServerConn> for PgConnector {
    fn connect(&self) -> ConnectFuture<'_, ServerConn> {
        Box::pin(async move {
            let mut conn = ServerConn::connect(&self.login).await?;
            if !self.init_query.is_empty() {
                conn.simple_query(&self.login, &self.init_query).await?;
            }
            if let Some(instance) = self.instance.upgrade()
                && instance.needs_server_max()
            {
                let rows = conn
                    .simple_query(&self.login, "SHOW max_connections")
                    .await?;
                let max = rows
                    .first()
                    .and_then(|r| r.as_deref())
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| ConnectError::Protocol {
                        instance: self.login.addr.clone(),
                        reason: "unreadable max_connections".into(),
                    })?;
                instance.learn_server_max(max);
            }
            Ok(conn)
        })
    }
}

/// The statement registries of a target group, by (database, user), across its instances,
/// with one schema epoch per database.
#[derive(Debug)]
pub struct Registries {
    prefix: Arc<str>,
    by_key: Mutex<HashMap<String, Database>>,
}

#[derive(Debug, Default)]
struct Database {
    schema: Arc<SchemaEpoch>,
    by_user: HashMap<String, Arc<StatementRegistry>>,
}

impl Default for Registries {
    fn default() -> Self {
        let token: u32 = rand::random();
        Self {
            prefix: format!("_sluice_{token:08x}_").into(),
            by_key: Mutex::new(HashMap::new()),
        }
    }
}

impl Registries {
    fn get(&self, database: &str, user: &str) -> Arc<StatementRegistry> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let db = by_key.entry(database.to_owned()).or_default();
        let schema = &db.schema;
        db.by_user
            .entry(user.to_owned())
            .or_insert_with(|| {
                Arc::new(StatementRegistry::new(
                    self.prefix.to_string(),
                    schema.clone(),
                ))
            })
            .clone()
    }
}

/// All pools on one instance.
#[derive(Debug)]
pub struct PgPools {
    pub instance: Arc<Instance<ServerConn>>,
    settings: PoolSettings,
    init_query: Arc<str>,
    registries: Arc<Registries>,
    listeners: Arc<Listeners>,
    access: ServerAccess,
    /// By database, then login user: looked up with `&str`, no allocation per login.
    pools: Mutex<HashMap<String, HashMap<String, Arc<PgPool>>>>,
}

impl PgPools {
    pub fn new(
        instance: Arc<Instance<ServerConn>>,
        settings: PoolSettings,
        init_query: String,
        registries: Arc<Registries>,
    ) -> Self {
        Self {
            instance,
            settings,
            init_query: init_query.into(),
            registries,
            listeners: Arc::default(),
            access: ServerAccess::default(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Shares the target group's listening hubs (one per database and user across instances).
    #[must_use]
    pub fn with_listeners(mut self, listeners: Arc<Listeners>) -> Self {
        self.listeners = listeners;
        self
    }

    /// Reaches the instance as the target group's `server_tls` and `server_iam` say.
    #[must_use]
    pub fn with_access(mut self, access: ServerAccess) -> Self {
        self.access = access;
        self
    }

    /// The pool for `database` as `login_user` (the secret's username), created on first use.
    pub fn get(
        &self,
        database: &str,
        login_user: &str,
        credentials: &Arc<Credentials>,
    ) -> Arc<PgPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(database).and_then(|users| users.get(login_user)) {
            return p.clone();
        }
        let login = ServerLogin {
            addr: self.instance.addr().to_owned(),
            user: login_user.to_owned(),
            credentials: credentials.clone(),
            database: database.to_owned(),
            scram: Default::default(),
            access: self.access.clone(),
            role: super::server::Role::Pool,
        };
        let connector = PgConnector {
            login: login.clone(),
            init_query: self.init_query.to_string(),
            instance: Arc::downgrade(&self.instance),
        };
        let name = format!("{}/{}/{}", self.instance.addr(), database, login_user);
        let pool = Arc::new(PgPool {
            pool: Pool::new(
                name,
                self.instance.clone(),
                Box::new(connector),
                self.settings,
            ),
            login,
            statements: self.registries.get(database, login_user),
            prefix: self.registries.prefix.clone(),
            init_query: self.init_query.clone(),
            reported: OnceLock::new(),
            startup: Mutex::default(),
            plain_parameters: OnceLock::new(),
            listeners: self.listeners.clone(),
        });
        pools
            .entry(database.to_owned())
            .or_default()
            .insert(login_user.to_owned(), pool.clone());
        pool
    }

    /// Forgets a pool whose database refused us, so bad names do not accumulate.
    pub fn forget(&self, database: &str, login_user: &str) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(users) = pools.get_mut(database) {
            users.remove(login_user);
            if users.is_empty() {
                pools.remove(database);
            }
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }
}

impl super::listen::Addressed for PgPools {
    fn addr(&self) -> &str {
        self.instance.addr()
    }
}
