//! The proxy under test: runs the `sluice` binary on a generated config and waits until it listens.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mariadb::MariaDb;
use super::postgres::{APP, MD5USER, MONITOR, PLAINUSER, PgServer};
use super::tools::{free_port, tail};

/// Knobs for [`config_for`] / [`Sluice::start_for`].
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `connection_pool.max_connections` (absolute, per instance).
    pub pool_size: u32,
    /// `connection_pool.connection_borrow_timeout`, e.g. "10s".
    pub borrow_timeout: String,
    /// `client_password_auth_type` of the `app` entry.
    pub client_auth_type: String,
    /// Top-level `idle_client_timeout`, e.g. "2s".
    pub idle_client_timeout: Option<String>,
    /// Top-level `idle_client_park_after`, e.g. "1s".
    pub idle_client_park_after: Option<String>,
    /// `health.interval` of the target group, e.g. "100ms" (omitted when None).
    pub health_interval: Option<String>,
}

impl ProxyOptions {
    /// The defaults with a pool of `size` server connections.
    pub fn pool(size: u32) -> Self {
        Self {
            pool_size: size,
            ..Self::default()
        }
    }
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            pool_size: 5,
            borrow_timeout: "10s".into(),
            client_auth_type: "postgres_scram_sha_256".into(),
            idle_client_timeout: None,
            idle_client_park_after: None,
            health_interval: None,
        }
    }
}

/// The secrets file for the standard test roles, in the RDS secret format.
pub fn default_secrets() -> String {
    [APP, MD5USER, PLAINUSER, MONITOR]
        .iter()
        .map(|(user, password)| format!("{user}: {{username: {user}, password: {password}}}\n"))
        .collect()
}

/// A config (DESIGN.md contract) with one `writer` endpoint on a free port in front of `pg`,
/// and the matching secrets file (to be saved as `secrets.yaml` next to the config).
pub fn config_for(pg: &PgServer, opts: &ProxyOptions) -> (String, String) {
    let mut y = String::new();
    let _ = write!(
        y,
        "endpoints:\n  - name: writer\n    listen: 127.0.0.1:{port}\n    target_group: pg\n    \
         role: read_write\ntarget_groups:\n  pg:\n    engine: postgres\n    \
         instances: [{host}:{pg_port}]\n    monitor_user: {monitor}\n    connection_pool:\n      max_connections: {size}\n      \
         connection_borrow_timeout: {borrow}\n",
        port = free_port(),
        host = pg.host(),
        pg_port = pg.port(),
        size = opts.pool_size,
        borrow = opts.borrow_timeout,
        monitor = MONITOR.0,
    );
    if let Some(interval) = &opts.health_interval {
        let _ = writeln!(y, "    health: {{ interval: {interval} }}");
    }
    y.push_str("auth:\n");
    for (user, kind) in [
        (APP.0, opts.client_auth_type.as_str()),
        (MD5USER.0, "postgres_md5"),
        (PLAINUSER.0, "postgres_scram_sha_256"),
        // The probes' own login, so counting the app's server connections leaves them out.
        (MONITOR.0, "postgres_scram_sha_256"),
    ] {
        let _ = write!(
            y,
            "  - username: {user}\n    client_auth: password\n    \
             client_password_auth_type: {kind}\n    secret: file:secrets.yaml#{user}\n"
        );
    }
    if let Some(t) = &opts.idle_client_park_after {
        let _ = writeln!(y, "idle_client_park_after: {t}");
    }
    if let Some(t) = &opts.idle_client_timeout {
        let _ = writeln!(y, "idle_client_timeout: {t}");
    }
    (y, default_secrets())
}

/// A config with one `writer` endpoint on a free port in front of the MariaDB `db` (engine
/// mysql); `opts.client_auth_type` is the `app` entry's (a postgres_* type means the MySQL
/// default, mysql_native_password).
pub fn config_for_mariadb(db: &MariaDb, opts: &ProxyOptions) -> (String, String) {
    let mut y = String::new();
    let _ = write!(
        y,
        "endpoints:\n  - name: writer\n    listen: 127.0.0.1:{port}\n    target_group: maria\n    \
         role: read_write\ntarget_groups:\n  maria:\n    engine: mysql\n    \
         instances: [{host}:{db_port}]\n    monitor_user: {monitor}\n    connection_pool:\n      \
         max_connections: {size}\n      connection_borrow_timeout: {borrow}\nauth:\n  \
         - username: {user}\n    client_auth: password\n    client_password_auth_type: {kind}\n    \
         secret: file:secrets.yaml#{user}\n  - username: {monitor}\n    \
         secret: file:secrets.yaml#{monitor}\n",
        port = free_port(),
        host = db.host(),
        db_port = db.port(),
        size = opts.pool_size,
        borrow = opts.borrow_timeout,
        user = APP.0,
        kind = opts.client_auth_type,
        monitor = MONITOR.0,
    );
    if let Some(interval) = &opts.health_interval {
        y = y.replacen(
            "auth:\n",
            &format!("    health: {{ interval: {interval} }}\nauth:\n"),
            1,
        );
    }
    if let Some(t) = &opts.idle_client_park_after {
        let _ = writeln!(y, "idle_client_park_after: {t}");
    }
    if let Some(t) = &opts.idle_client_timeout {
        let _ = writeln!(y, "idle_client_timeout: {t}");
    }
    (y, default_secrets())
}

/// A running `sluice run --config <dir>/sluice.yaml`; killed (by PID) on drop.
#[derive(Debug)]
pub struct Sluice {
    child: Child,
    dir: tempfile::TempDir,
    listen: Vec<SocketAddr>,
}

impl Sluice {
    /// Starts sluice on `yaml` with [`default_secrets`] saved as `secrets.yaml`.
    pub fn start(yaml: &str) -> Sluice {
        Self::start_with_secrets(yaml, &default_secrets())
    }

    /// Starts sluice in front of `pg` with a config from [`config_for`].
    pub fn start_for(pg: &PgServer, opts: ProxyOptions) -> Sluice {
        let (yaml, secrets) = config_for(pg, &opts);
        Self::start_with_secrets(&yaml, &secrets)
    }

    /// Starts sluice in front of the MariaDB `db` with a config from [`config_for_mariadb`].
    pub fn start_for_mariadb(db: &MariaDb, opts: ProxyOptions) -> Sluice {
        let (yaml, secrets) = config_for_mariadb(db, &opts);
        Self::start_with_secrets(&yaml, &secrets)
    }

    /// Writes `sluice.yaml` and `secrets.yaml` into a temp dir (also the working directory,
    /// so `file:secrets.yaml` resolves either way), starts the binary with RUST_LOG=sluice=debug
    /// and waits up to 20 s until every `listen:` address accepts TCP.
    pub fn start_with_secrets(yaml: &str, secrets: &str) -> Sluice {
        Self::start_with_env(yaml, secrets, &[])
    }

    /// Like [`Sluice::start_with_secrets`], with extra environment variables for the process
    /// (signing keys, `SLUICE_LOG_FORMAT`).
    pub fn start_with_env(yaml: &str, secrets: &str, env: &[(&str, &str)]) -> Sluice {
        let dir = tempfile::Builder::new()
            .prefix("sluice-proxy-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("sluice.yaml");
        std::fs::write(&config, yaml).expect("write config");
        std::fs::write(dir.path().join("secrets.yaml"), secrets).expect("write secrets");
        let log = File::create(dir.path().join("sluice.log")).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "sluice=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice binary");
        let mut sluice = Sluice {
            child,
            dir,
            listen: listen_addrs(yaml),
        };
        sluice.wait_listening(Duration::from_secs(20));
        sluice
    }

    fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut pending = self.listen.clone();
        assert!(!pending.is_empty(), "config has no `listen:` address");
        while !pending.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice exited early ({status}); log:\n{}",
                    self.log_contents()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sluice not listening on {pending:?} after {limit:?}; log:\n{}",
                self.log_contents()
            );
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Port of the first `listen:` address in the config (the first endpoint).
    pub fn port(&self) -> u16 {
        self.listen
            .first()
            .expect("config has no listen address")
            .port()
    }

    /// Every `listen:` address of the config, in order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The child's process id (for signals: SIGHUP reload, SIGTERM drain).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding sluice.yaml, secrets.yaml and sluice.log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the config file (rewrite it, then send SIGHUP, to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.yaml")
    }

    /// Everything sluice wrote to stdout/stderr so far.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// Exit status if the process has exited (does not block).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_contents();
            eprintln!("--- sluice log tail ---\n{}\n---", tail(&log, 8000));
        }
    }
}

/// Every address after a `listen:` key (block or flow style) that parses as a socket address.
pub fn listen_addrs(yaml: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in yaml.lines() {
        let line = line.split(" #").next().unwrap_or(line);
        let mut rest = line;
        while let Some(i) = rest.find("listen:") {
            rest = &rest[i + "listen:".len()..];
            let value = rest
                .trim_start()
                .split(|c: char| c == ',' || c == '}' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'');
            if let Ok(addr) = value.parse() {
                out.push(addr);
            }
        }
    }
    out
}
