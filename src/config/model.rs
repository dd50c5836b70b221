//! The YAML configuration model: the user-facing contract of DESIGN.md, field for field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::duration::Duration;
use super::secret_ref::SecretRef;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening addresses, each serving one target group in one role.
    pub endpoints: Vec<Endpoint>,
    /// The database clusters behind the endpoints, by name.
    pub target_groups: BTreeMap<String, TargetGroup>,
    /// Who may log in, and the secret sluice uses to log in to the database for them.
    pub auth: Vec<AuthEntry>,
    /// The certificate sluice presents to clients that ask for TLS (all endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How `client_auth: iam` tokens are verified (offline, standing in for AWS IAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamConfig>,
    /// How `client_auth: jwt` tokens are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Where `aws-secretsmanager:` secrets are read; unset parts come from the standard AWS
    /// environment (AWS_REGION, AWS_ENDPOINT_URL, web identity for IRSA, instance profile).
    #[serde(default)]
    pub secrets_manager: SecretsManager,
    /// The admin HTTP listener (metrics, health, read-only API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// A client session idle (between transactions) for this long is closed.
    #[serde(default = "defaults::idle_client_timeout")]
    pub idle_client_timeout: Duration,
    /// A plain-TCP client session idle (between transactions, holding no server connection) for
    /// this long parks: it gives up its task and waits in the lot, costing a few hundred bytes.
    /// `0s`: sessions never park.
    #[serde(default = "defaults::idle_client_park_after")]
    pub idle_client_park_after: Duration,
    /// After SIGTERM, listeners keep accepting this long (while /readyz already answers 503,
    /// so load balancers and Kubernetes stop sending new clients), then close.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: Duration,
    /// From SIGTERM, running transactions get this long to finish; sessions between
    /// transactions are closed at the boundary; then sluice exits.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Threads serving sessions. Default: half the CPUs, at least one, since sluice usually
    /// shares its machine with the application or the database (measured in docs/benchmarks.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u32>,
}

impl Config {
    /// The worker thread count to run with.
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        }
    }
}

/// One listening address with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Unique; used in logs and metric labels.
    pub name: String,
    /// `IP:PORT` to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// A key of `target_groups`.
    pub target_group: String,
    #[serde(default)]
    pub role: Role,
    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// CIDR blocks allowed to connect (IPv4 or IPv6); empty means everyone.
    #[serde(default)]
    pub allowed_cidrs: Vec<Cidr>,
    /// New client connections started per second, at most (a burst of as many is allowed);
    /// beyond it, connections wait in the listen queue, so an auth storm cannot take the CPU
    /// from running sessions. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_handshakes_per_second: Option<u32>,
    /// `read_only` endpoints: when no reader is usable, use the writer instead of waiting.
    #[serde(default)]
    pub reader_fallback_to_writer: bool,
    /// `read_write_split` endpoints: how long a read-only transaction waits for a reader to
    /// replay the session's last write before it runs on the writer instead.
    #[serde(default = "defaults::read_your_writes_timeout")]
    pub read_your_writes_timeout: Duration,
    /// MySQL endpoints: relay `LOAD DATA LOCAL INFILE` file requests to clients that announce
    /// they can send files; `false` does not pass that capability on, so the server refuses the
    /// statement (4166 on MariaDB).
    #[serde(default = "defaults::yes")]
    pub local_infile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Follows the writer.
    #[default]
    ReadWrite,
    /// Spreads transactions over readers.
    ReadOnly,
    /// Read-only transactions (`BEGIN READ ONLY`, or any under a read-only session default) go
    /// to a reader that has replayed the session's last write; everything else to the writer.
    ReadWriteSplit,
}

impl Role {
    /// The word the config uses, also in /v1/endpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadWrite => "read_write",
            Self::ReadOnly => "read_only",
            Self::ReadWriteSplit => "read_write_split",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// The database engine of every instance.
    pub engine: Engine,
    /// `host:port` of each instance; roles are found by probing.
    pub instances: Vec<String>,
    /// Username (of an auth entry) whose secret the probes log in with; else the first
    /// auth entry's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_user: Option<String>,
    #[serde(default)]
    pub connection_pool: ConnectionPool,
    #[serde(default)]
    pub health: Health,
    /// TLS from sluice to the instances.
    #[serde(default)]
    pub server_tls: ServerTls,
    /// Log in to the instances with RDS IAM auth tokens (end-to-end IAM) instead of the
    /// secret's password; the tokens are signed with the standard AWS credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_iam: Option<ServerIam>,
}

/// End-to-end IAM: the region the instances' tokens are signed for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerIam {
    pub region: String,
}

/// The Secrets Manager client for `aws-secretsmanager:` secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsManager {
    /// Region; else AWS_REGION / the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint (a VPC endpoint, or a local stand-in); empty: the region's public one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_url: String,
    /// How long a secret read from Secrets Manager is used before it is read again; a
    /// password the database rejects is re-read at once regardless.
    #[serde(default = "defaults::secret_refresh_interval")]
    pub refresh_interval: Duration,
}

/// Client-facing TLS. Both files are PEM and re-read on SIGHUP and when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, leaf first (relative to the config file).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// RDS IAM auth tokens: who may sign them and which database users they may log in as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// The region tokens are signed for.
    pub region: String,
    /// The host name clients sign tokens for (`DBHostname`); the port is the endpoint's.
    pub endpoint_host: String,
    /// Signing keys: the access key id in a token picks the secret to check it with.
    pub credentials: Vec<IamCredential>,
    /// `rds-db:connect` grants; a token is accepted only if one matches.
    pub policy: Vec<IamGrant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IamCredential {
    pub access_key_id: String,
    /// Environment variable holding the secret access key (never the config file).
    pub secret_access_key_env: String,
    /// The IAM principal (ARN) these keys belong to.
    pub principal: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IamGrant {
    /// Principal ARN; `*` matches any run of characters.
    pub principal: String,
    /// Database users (`dbuser:<name>` resources) the principal may connect as; `*` allowed.
    pub db_users: Vec<String>,
}

/// JWT logins (OIDC, Kubernetes service-account tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// JSON Web Key Set with the signing keys (relative to the config file); re-read on change.
    pub jwks_file: PathBuf,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Claim holding the database user: a top-level name, or a JSON pointer such as
    /// `/kubernetes.io/serviceaccount/name`.
    #[serde(default = "defaults::username_claim")]
    pub username_claim: String,
    /// Environment variable with an HS256 secret; without it HMAC-signed tokens are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_env: Option<String>,
}

/// The socket path of a `unix:/path` instance (a Unix-domain socket on this host); `None` for
/// `host:port`.
pub fn unix_path(instance: &str) -> Option<&str> {
    instance.strip_prefix("unix:")
}

/// How sluice secures its connections to the instances (libpq's `sslmode` words).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// PEM CA bundle for `verify-ca` and `verify-full` (for RDS: the region's CA bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the instance offers it, without checking its certificate.
    #[default]
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS with a certificate signed by `ca_file`, whatever name it carries.
    VerifyCa,
    /// TLS with a certificate signed by `ca_file` for the instance's host name.
    VerifyFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    /// The word the config uses, also in /v1/endpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }
}

/// Pool limits, per instance. Exactly one of `max_connections` and
/// `max_connections_percent` may be set; with neither, 100 percent applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// Pool size as a percentage (1-100) of the instance's own `max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_percent: Option<u32>,
    /// Absolute pool size per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Share (0-100) of the pool that may stay idle; idle connections beyond it are closed
    /// once idle for half the `idle_timeout`.
    #[serde(default = "defaults::max_idle_connections_percent")]
    pub max_idle_connections_percent: u32,
    /// How long a transaction waits for a server connection before failing.
    #[serde(default = "defaults::connection_borrow_timeout")]
    pub connection_borrow_timeout: Duration,
    /// How long an idle server connection may stay in the pool (idle trim).
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Duration,
    /// Server connections are replaced after this long.
    #[serde(default = "defaults::max_connection_lifetime")]
    pub max_connection_lifetime: Duration,
    /// Bound on connecting and logging in to an instance.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// A server connection whose sent bytes go unacknowledged this long (or whose keepalive
    /// probes go unanswered: a dead host, a partition, a half-open path) is closed and its
    /// client told; 0s leaves it to the kernel (about 15 minutes).
    #[serde(default = "defaults::tcp_user_timeout")]
    pub tcp_user_timeout: Duration,
    /// SQL run once on each new server connection.
    #[serde(default)]
    pub init_query: String,
    /// Postgres: notifications a listening session may fall behind (in a long transaction, or
    /// a client that does not read) before it is closed with an error (54000).
    #[serde(default = "defaults::notification_backlog")]
    pub notification_backlog: u32,
    /// A connection budget shared, per instance, by every sluice process with the same fleet
    /// name in front of this target group (docs/fleet.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Fleet>,
}

/// A fleet's shared budget. Exactly one of `max_connections` and `max_connections_percent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Every sluice with this name in front of the target group shares the budget.
    pub name: String,
    /// The fleet's server connections per instance, probes included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The budget as a percentage (1-100) of the instance's own `max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_percent: Option<u32>,
}

impl Default for SecretsManager {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: String::new(),
            refresh_interval: defaults::secret_refresh_interval(),
        }
    }
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            max_connections_percent: None,
            max_connections: None,
            max_idle_connections_percent: defaults::max_idle_connections_percent(),
            connection_borrow_timeout: defaults::connection_borrow_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connection_lifetime: defaults::max_connection_lifetime(),
            connect_timeout: defaults::connect_timeout(),
            tcp_user_timeout: defaults::tcp_user_timeout(),
            notification_backlog: defaults::notification_backlog(),
            init_query: String::new(),
            fleet: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Time between probes of one instance.
    #[serde(default = "defaults::health_interval")]
    pub interval: Duration,
    /// A probe slower than this fails.
    #[serde(default = "defaults::health_timeout")]
    pub timeout: Duration,
    /// Failed probes in a row before an instance counts as down.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Good probes in a row before a down instance counts as up again.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    /// Readers lagging more than this are skipped by `read_only` endpoints.
    #[serde(default = "defaults::max_replica_lag")]
    pub max_replica_lag: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: defaults::health_interval(),
            timeout: defaults::health_timeout(),
            unhealthy_threshold: defaults::unhealthy_threshold(),
            healthy_threshold: defaults::healthy_threshold(),
            max_replica_lag: defaults::max_replica_lag(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthEntry {
    /// Unique; the name clients log in with.
    pub username: String,
    /// How clients prove who they are.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The password exchange with clients when `client_auth` is `password`.
    #[serde(default)]
    pub client_password_auth_type: PasswordAuthType,
    /// Client sessions this user may have open at once (across endpoints); unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<u32>,
    /// `file:PATH#KEY` (PATH relative to the config file) or `aws-secretsmanager:<arn-or-name>`.
    // Once loaded, a relative file path is already resolved against the config file's directory.
    pub secret: SecretRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Password,
    Iam,
    Jwt,
}

impl ClientAuth {
    /// The word the config uses, also in audit lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Iam => "iam",
            Self::Jwt => "jwt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordAuthType {
    #[default]
    #[serde(rename = "postgres_scram_sha_256")]
    PostgresScramSha256,
    PostgresMd5,
    MysqlNativePassword,
    MysqlCachingSha2Password,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:PORT` serving /metrics, /healthz, /readyz and /v1/.
    pub listen: SocketAddr,
    /// The environment variable holding a token that /metrics and /v1/ then require as
    /// `Authorization: Bearer <token>`; /healthz and /readyz stay open for probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// /readyz answers 200 even while a target group has no known writer (reader endpoints
    /// keep receiving clients through a failover).
    #[serde(default)]
    pub ready_without_writer: bool,
}

mod defaults {
    use super::Duration;

    pub fn secret_refresh_interval() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn username_claim() -> String {
        "sub".into()
    }
    pub fn idle_client_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    /// Long enough that a client transacting every few seconds never pays a resume (about
    /// 17 µs of CPU and a thread hop), short enough that idle fleets (Lambda, app pools) park.
    pub fn idle_client_park_after() -> Duration {
        Duration::from_secs(30)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(5)
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_idle_connections_percent() -> u32 {
        50
    }
    pub fn connection_borrow_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn max_connection_lifetime() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn tcp_user_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn notification_backlog() -> u32 {
        10_000
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn unhealthy_threshold() -> u32 {
        3
    }
    pub fn healthy_threshold() -> u32 {
        2
    }
    pub fn yes() -> bool {
        true
    }
    pub fn read_your_writes_timeout() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_replica_lag() -> Duration {
        Duration::from_secs(30)
    }
}
