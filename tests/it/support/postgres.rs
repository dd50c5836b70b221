//! A private PostgreSQL server for one test: initdb + pg_ctl in a temp dir on a free port.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::tools::{
    append_file, children_of, command_output, free_port, is_root, run_ok, stat_fields, tail,
};

/// Test roles created on every server: (name, password).
pub const APP: (&str, &str) = ("app", "app-secret");
pub const MD5USER: (&str, &str) = ("md5user", "md5-secret");
pub const PLAINUSER: (&str, &str) = ("plainuser", "plain-secret");
pub const MONITOR: (&str, &str) = ("monitor", "monitor-secret");
/// The database owned by `app`.
pub const APPDB: &str = "appdb";

const HBA: &str = "local all all trust
host all md5user 127.0.0.1/32 md5
host all plainuser 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
";

/// Server settings for [`PgServer::start_with`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines, appended last (so they win).
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 100,
            extra_conf: Vec::new(),
        }
    }
}

/// A running PostgreSQL server; stopped (`-m immediate`) and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    stopped: bool,
}

/// The newest `/usr/lib/postgresql/<major>/bin`.
pub fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql missing: install postgresql (scripts/test does)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    let newest = versions.pop().map(|(_, bin)| bin);
    newest.expect("no /usr/lib/postgresql/*/bin/initdb")
}

/// A command for `program`, run as the `postgres` OS user when we are root.
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// Starts a server with default options.
    pub fn start() -> PgServer {
        Self::start_with(PgOptions::default())
    }

    /// Starts a server: initdb, config, pg_ctl start, test roles and `appdb`.
    pub fn start_with(opts: PgOptions) -> PgServer {
        Self::start_with_hba(opts, "")
    }

    /// Like [`PgServer::start_with`], with `extra_hba` (whole lines) after the harness's
    /// `pg_hba.conf` lines, in place before the server starts (a reload would race the first
    /// logins).
    pub fn start_with_hba(opts: PgOptions, extra_hba: &str) -> PgServer {
        let mut pg = Self::new_in_temp_dir();
        run_ok(
            pg.cmd("initdb").arg("-D").arg(&pg.data).args(
                "-U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C -N"
                    .split(' '),
            ),
        );
        pg.append_conf(&opts);
        std::fs::write(pg.data.join("pg_hba.conf"), format!("{HBA}{extra_hba}"))
            .expect("write pg_hba.conf");
        pg.pg_ctl_start();

        pg.psql_each(
            "postgres",
            &[
                format!("CREATE ROLE {} LOGIN CREATEDB PASSWORD '{}'", APP.0, APP.1),
                format!(
                    "SET password_encryption = 'md5'; CREATE ROLE {} LOGIN PASSWORD '{}'; \
                     RESET password_encryption",
                    MD5USER.0, MD5USER.1
                ),
                format!(
                    "CREATE ROLE {} LOGIN PASSWORD '{}'",
                    PLAINUSER.0, PLAINUSER.1
                ),
                format!(
                    "CREATE ROLE {} LOGIN PASSWORD '{}' IN ROLE pg_monitor",
                    MONITOR.0, MONITOR.1
                ),
                format!("CREATE DATABASE {APPDB} OWNER {}", APP.0),
                format!("GRANT CONNECT ON DATABASE {APPDB} TO PUBLIC"),
            ],
        );
        pg
    }

    /// Starts a server on a data directory that `fill` creates at [`PgServer::data_dir`] (a
    /// `pg_basebackup`, say; [`PgServer::cmd`] runs it as `postgres` in the temp dir). The
    /// harness settings and `opts` are appended to its `postgresql.conf` again, since a copied
    /// one names the source's socket directory; no roles are created: they come with the data.
    pub fn start_from(opts: PgOptions, fill: impl FnOnce(&PgServer)) -> PgServer {
        let mut pg = Self::new_in_temp_dir();
        fill(&pg);
        pg.append_conf(&opts);
        pg.pg_ctl_start();
        pg
    }

    fn new_in_temp_dir() -> PgServer {
        let base = if is_root() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir_in(base)
            .expect("create temp dir");
        let root = dir.path().to_path_buf();
        if is_root() {
            run_ok(Command::new("chown").arg("postgres:postgres").arg(&root));
        }
        PgServer {
            data: root.join("data"),
            root,
            dir: Some(dir),
            bin_dir: pg_bin_dir(),
            port: 0,
            stopped: true,
        }
    }

    fn append_conf(&self, opts: &PgOptions) {
        let mut conf = format!(
            "\n# sluice test harness\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = {}\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n",
            self.root.display(),
            opts.max_connections
        );
        for line in &opts.extra_conf {
            let _ = writeln!(conf, "{line}");
        }
        append_file(&self.data.join("postgresql.conf"), &conf);
    }

    fn pg_ctl_start(&mut self) {
        // Another process may grab the port between free_port() and the bind: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            self.port = free_port();
            let port_line = format!("port = {}\n", self.port);
            append_file(&self.data.join("postgresql.conf"), &port_line);
            let (status, out, err) = self.pg_ctl(&["-w", "-t", "60", "start"]);
            if status.success() {
                self.stopped = false;
                return;
            }
            last_err = format!("{out}\n{err}\n--- log\n{}", self.log_contents());
        }
        panic!("pg_ctl start failed:\n{last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The unix socket directory (also the temp dir root).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Path of a PostgreSQL binary (`psql`, `pgbench`, `pg_basebackup`, ...) of this version.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A tokio-postgres / libpq key=value connection string for a TCP login.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host={} port={} user={user} password={password} dbname={db} connect_timeout=10",
            self.host(),
            self.port
        )
    }

    /// Runs SQL as superuser `postgres` in database `postgres`; returns trimmed stdout.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// Runs SQL as superuser `postgres` in `db` over the unix socket; panics on error.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.psql_each(db, &[sql])
    }

    /// Runs each SQL string as its own `-c` (own transaction) in one psql session.
    pub fn psql_each(&self, db: &str, sqls: &[impl AsRef<str>]) -> String {
        let mut cmd = self.cmd("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .env("PGCONNECT_TIMEOUT", "10");
        for sql in sqls {
            cmd.args(["-c", sql.as_ref()]);
        }
        let (status, out, err) = command_output(&mut cmd);
        let sqls: Vec<&str> = sqls.iter().map(AsRef::as_ref).collect();
        assert!(
            status.success(),
            "psql -d {db} {sqls:?} failed ({status}):\n{err}"
        );
        out.trim().to_string()
    }

    /// Client backends of `user` connected to `db` right now.
    pub fn backend_count(&self, user: &str, db: &str) -> i64 {
        self.backend_pids(user, db).len() as i64
    }

    /// The PIDs of those backends, in order: the same PIDs later mean the same connections.
    pub fn backend_pids(&self, user: &str, db: &str) -> Vec<i64> {
        let out = self.psql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE usename = {} AND datname = {} \
             AND backend_type = 'client backend' ORDER BY pid",
            literal(user),
            literal(db)
        ));
        out.lines()
            .map(|l| {
                l.parse()
                    .unwrap_or_else(|_| panic!("backend_pids: unexpected psql output {out:?}"))
            })
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The server log, for debugging failures.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (`pg_ctl -m immediate stop`); never panics. Drop also calls this.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.postmaster_pid();
        let stopped = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if let (false, Some(pid)) = (stopped, pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// A restart in place on the same port and data (`pg_ctl -m fast restart`): backends are
    /// ended with 57P01, new logins get 57P03 and then a refused connection until it is back.
    pub fn restart(&self) {
        let (status, out, err) = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "restart"]);
        assert!(status.success(), "pg_ctl restart: {out}\n{err}");
    }

    /// Starts a stopped server again on its data and port.
    pub fn start_again(&mut self) {
        let (status, out, err) = self.pg_ctl(&["-w", "-t", "60", "start"]);
        assert!(status.success(), "pg_ctl start: {out}\n{err}");
        self.stopped = false;
    }

    /// `pg_ctl` on this server's data, logging to its log; status, stdout and stderr.
    fn pg_ctl(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        command_output(
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.log_path())
                .args(args),
        )
    }

    /// True until [`PgServer::stop`] or [`PgServer::kill9`].
    pub fn is_running(&self) -> bool {
        !self.stopped
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        if self.stopped {
            None
        } else {
            self.postmaster_pid()
        }
    }

    /// A crash: SIGKILL to the postmaster and to its children. The children too, because a
    /// backend only notices its postmaster's death when it next waits, so one busy in a query
    /// could still finish (and commit) after the "crash". Waits until they are all gone.
    pub fn kill9(&mut self) {
        if self.stopped {
            return;
        }
        // Marked first: stop() must not later signal a pid that may by then be reused.
        self.stopped = true;
        let Some(pm) = self.postmaster_pid() else {
            return;
        };
        let signal = |sig: &str, pid: u32| {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        };
        // A stopped postmaster cannot fork while its children are listed.
        signal("-STOP", pm);
        let mut pids = children_of(pm);
        pids.insert(0, pm);
        for &pid in &pids {
            signal("-KILL", pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server, SIGSTOP to the postmaster and every backend: TCP connections are
    /// still accepted (by the kernel's backlog) and nothing is answered, a hung server. Returns
    /// the processes [`PgServer::thaw`] resumes.
    pub fn freeze(&self) -> Vec<u32> {
        let Some(pm) = self.pid() else {
            return Vec::new();
        };
        let signal = |pid: u32| {
            let _ = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        };
        signal(pm);
        let mut pids = children_of(pm);
        pids.iter().for_each(|&p| signal(p));
        pids.insert(0, pm);
        pids
    }

    pub fn thaw(pids: &[u32]) {
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }

    /// Ends recovery (`pg_ctl promote`) and waits until the server takes writes.
    pub fn promote(&self) {
        run_ok(
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "promote"]),
        );
        // pg_ctl returns when pg_control says so; the SQL answer is what clients see.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.psql("SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "port {} still in recovery 60 s after pg_ctl promote",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// A command for one of this version's binaries, run as the `postgres` user when root,
    /// in the temp dir (the postgres user cannot enter root's working directory).
    pub fn cmd(&self, name: &str) -> Command {
        let mut cmd = as_postgres(&self.bin(name));
        cmd.current_dir(&self.root);
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.stopped {
            let log = self.log_contents();
            eprintln!(
                "--- PostgreSQL log tail (port {}) ---\n{}\n---",
                self.port,
                tail(&log, 4000)
            );
        }
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// True while `pid` exists and is not a zombie (an orphaned postmaster is reaped by whoever
/// pid 1 is, which may be never).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _)| state != 'Z')
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
