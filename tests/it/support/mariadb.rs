//! A private MariaDB server for one test: mariadb-install-db + mariadbd in a temp dir, free port.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::tools::{command_output, free_port, is_root, run_ok, tail, which};

/// Test users created on every server: (name, password), both `mysql_native_password`.
pub const APP: (&str, &str) = ("app", "app-secret");
pub const MONITOR: (&str, &str) = ("monitor", "monitor-secret");
/// `app` has ALL on both; `otherdb` exists too, and `app` may drop and re-create it.
pub const MY_APPDB: &str = "appdb";
pub const MY_OTHERDB: &str = "otherdb";

/// Server settings for [`MariaDb::start_with`].
#[derive(Debug, Clone)]
pub struct MariaOptions {
    /// MariaDB raises values below 10 to 10.
    pub max_connections: u32,
    /// Extra `[mariadbd]` option-file lines such as `log-bin=mysql-bin`, appended last (so
    /// they win).
    pub extra_conf: Vec<String>,
}

impl Default for MariaOptions {
    fn default() -> Self {
        Self {
            max_connections: 100,
            extra_conf: Vec::new(),
        }
    }
}

/// A running MariaDB server, a child process of the test; stopped and deleted on drop.
#[derive(Debug)]
pub struct MariaDb {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Path of a MariaDB binary; panics naming the Debian package when it is missing.
pub fn mariadb_bin(name: &str) -> PathBuf {
    let package = if name == "mariadb" || name == "mariadb-admin" {
        "mariadb-client"
    } else {
        "mariadb-server"
    };
    which(name).unwrap_or_else(|| {
        panic!("`{name}` not found: install the Debian package {package} (scripts/test does)")
    })
}

/// A command for `program`, run as the `mysql` OS user when we are root: mariadbd refuses to
/// run as root. Setting the uid in the child (rather than `runuser`, which forks and stays
/// the parent) keeps the child's pid the server's pid, so SIGTERM and SIGKILL reach it.
pub fn as_mysql(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if is_root() {
        let id = |flag| {
            run_ok(Command::new("id").args([flag, "mysql"]))
                .trim()
                .parse::<u32>()
        };
        cmd.uid(id("-u").expect("uid")).gid(id("-g").expect("gid"));
    }
    cmd
}

/// The output of `mariadb-install-db`, made once per machine and MariaDB version (under an
/// flock, in /tmp where the `mysql` user may write) and copied for every server.
fn template() -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let version = run_ok(Command::new(mariadb_bin("mariadbd")).arg("--version"));
            let tag: String = version
                .split_whitespace()
                .nth(2)
                .unwrap_or("unknown")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            let path = PathBuf::from(format!("/tmp/sluice-mariadb-template-{tag}"));
            // The sizes match the option file, so the first start need not resize the redo
            // log; --skip-name-resolve keeps install-db from looking up this host's name.
            let script = r#"set -e
dir="$1" install="$2"
[ -f "$dir/.complete" ] && exit 0
rm -rf "$dir" "$dir.tmp"
mkdir -p "$dir.tmp"
if [ "$(id -u)" -eq 0 ]; then chown mysql:mysql "$dir.tmp"; as=(runuser -u mysql --); else as=(); fi
cd "$dir.tmp"
for attempt in 1 2 3; do
    rm -rf "$dir.tmp/data"
    if "${as[@]}" "$install" --no-defaults --datadir="$dir.tmp/data"         --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve         --innodb-log-file-size=8M --innodb-buffer-pool-size=32M >"$dir.tmp/install.log" 2>&1; then
        mv "$dir.tmp/data" "$dir"
        rm -rf "$dir.tmp"
        touch "$dir/.complete"
        exit 0
    fi
done
cat "$dir.tmp/install.log" >&2
exit 1"#;
            run_ok(
                Command::new("flock")
                    .arg(path.with_extension("lock"))
                    .args(["bash", "-c", script, "make-template"])
                    .arg(&path)
                    .arg(mariadb_bin("mariadb-install-db")),
            );
            path
        })
        .clone()
}

impl MariaDb {
    /// Starts a server with default options.
    pub fn start() -> MariaDb {
        Self::start_with(MariaOptions::default())
    }

    /// Starts a server: install-db, option file, mariadbd, test users and databases.
    pub fn start_with(opts: MariaOptions) -> MariaDb {
        let db = Self::start_bare(opts);
        let (app, app_pw) = (literal(APP.0), literal(APP.1));
        let (mon, mon_pw) = (literal(MONITOR.0), literal(MONITOR.1));
        db.sql(&format!(
            "CREATE DATABASE {MY_APPDB}; CREATE DATABASE {MY_OTHERDB};
             CREATE USER {app}@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD({app_pw});
             GRANT ALL ON {MY_APPDB}.* TO {app}@'%'; GRANT ALL ON {MY_OTHERDB}.* TO {app}@'%';
             CREATE USER {mon}@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD({mon_pw});
             GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO {mon}@'%';"
        ));
        db
    }

    /// Starts a server with the pristine system tables of the template and nothing else: no
    /// test users or databases (a replica gets those from its primary's binlog).
    pub fn start_bare(opts: MariaOptions) -> MariaDb {
        let base = if is_root() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir_in(base)
            .expect("create temp dir");
        let root = dir.path().to_path_buf();
        if is_root() {
            run_ok(Command::new("chown").arg("mysql:mysql").arg(&root));
        }
        let mut db = MariaDb {
            root,
            dir: Some(dir),
            port: 0,
            child: None,
        };
        // A copy of one pristine data directory, not an install-db per server: install-db
        // takes a second or more, and several at once on two busy cores failed now and then.
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(template())
                .arg(db.root.join("data")),
        );
        let r = db.root.display();
        // An option file rather than flags, so extra_conf lines can override any setting. No
        // log-error: stderr goes to mariadb.log, which then also holds what is printed before
        // an error log would open. utf8mb4 as in Debian's packaged config (built in: latin1).
        let mut conf = format!(
            "[mariadbd]\ndatadir={r}/data\nsocket={r}/mysqld.sock\npid-file={r}/mariadbd.pid\n\
             bind-address=127.0.0.1\nskip-name-resolve\n\
             max-connections={}\ninnodb-buffer-pool-size=32M\ninnodb-log-file-size=8M\n\
             innodb-flush-log-at-trx-commit=0\ninnodb-doublewrite=0\nperformance-schema=0\n\
             character-set-server=utf8mb4\ncollation-server=utf8mb4_general_ci\n",
            opts.max_connections
        );
        for line in &opts.extra_conf {
            let _ = writeln!(conf, "{line}");
        }
        std::fs::write(db.root.join("my.cnf"), conf).expect("write my.cnf");

        // Another process may grab the port between free_port() and the bind: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            db.port = free_port();
            let Err((port_taken, err)) = db.spawn_and_wait() else {
                break;
            };
            last_err = err;
            if !port_taken {
                break;
            }
        }
        assert!(db.child.is_some(), "mariadbd did not start:\n{last_err}");
        db
    }

    /// One attempt: spawns mariadbd on `self.port` and waits until `SELECT 1` answers. On
    /// failure the server is gone; the error holds the log and whether this attempt (the log
    /// also has earlier ones) found the port taken.
    fn spawn_and_wait(&mut self) -> Result<(), (bool, String)> {
        let log_before = self.log_contents().len();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open mariadb.log");
        let err = out.try_clone().expect("clone mariadb.log handle");
        let mut child = self
            .cmd("mariadbd")
            .arg(format!("--defaults-file={}/my.cnf", self.root.display()))
            .arg(format!("--port={}", self.port))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mariadbd: {e}"));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.log_contents();
                let port_taken = log
                    .get(log_before..)
                    .is_some_and(|new| new.contains("Address already in use"));
                return Err((port_taken, format!("mariadbd exited with {status}\n{log}")));
            }
            if self.try_sql("SELECT 1").is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = self.log_contents();
        Err((false, format!("no answer within 60 s\n{log}")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The unix socket, where root logs in without a password.
    pub fn socket(&self) -> PathBuf {
        self.root.join("mysqld.sock")
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs SQL (`;`-separated statements allowed) as root over the unix socket; returns
    /// trimmed stdout, tab-separated columns without headers. Panics on error.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb -e {sql:?} as root failed: {e}"))
    }

    /// Like [`MariaDb::sql`] but returns the client's stderr on failure.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = client();
        cmd.args(["-u", "root"])
            .arg(format!("--socket={}", self.socket().display()));
        run_client(cmd, sql)
    }

    /// Runs SQL as `user` in `db` (`""`: none) over TCP; panics on error.
    pub fn sql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        self.try_sql_as(user, password, db, sql)
            .unwrap_or_else(|e| panic!("mariadb -e {sql:?} as {user} in {db} failed: {e}"))
    }

    /// Like [`MariaDb::sql_as`] but returns the client's stderr (e.g. `ERROR 1045`) on failure.
    pub fn try_sql_as(&self, user: &str, pw: &str, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = client();
        cmd.args(["--protocol=TCP", "--host=127.0.0.1"]).args([
            format!("--port={}", self.port),
            format!("--user={user}"),
            format!("--password={pw}"),
            format!("--database={db}"),
        ]);
        run_client(cmd, sql)
    }

    /// Client connections of `user` right now, the querying one and server threads excluded.
    pub fn connection_count(&self, user: &str) -> i64 {
        // A sampler on a loaded machine may lose a CLI connection now and then: retry.
        let mut last = String::new();
        for _ in 0..3 {
            match self.try_connection_count(user) {
                Ok(n) => return n,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "cannot count {user}'s connections: {last}\n--- server log\n{}",
            tail(&self.log_contents(), 3000)
        )
    }

    /// `SHOW PROCESSLIST` rather than a query on `information_schema.PROCESSLIST`: sampled every
    /// few milliseconds under load, the latter crashed MariaDB 10.11 (SIGSEGV in
    /// `ha_maria::drop_table` freeing the query's internal temporary table), failing
    /// `my_proxy::sysbench_over_a_small_pool` with nothing of sluice's involved.
    fn try_connection_count(&self, user: &str) -> Result<i64, String> {
        let out = self.try_sql("SHOW PROCESSLIST")?;
        // Id, User, Host, db, Command, Time, State, Info: the sampler's own row is the one
        // running SHOW PROCESSLIST.
        let rows = out.lines().map(|l| l.split('\t').collect::<Vec<_>>());
        let mine = rows.filter(|f| {
            f.get(1) == Some(&user)
                && f.get(4) != Some(&"Daemon")
                && f.get(7) != Some(&"SHOW PROCESSLIST")
        });
        Ok(i64::try_from(mine.count()).unwrap_or(i64::MAX))
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("mariadb.log")
    }

    /// The server log (mariadbd's stderr), for debugging failures.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s. Never panics; Drop also calls it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        for _ in 0..500 {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A restart in place: a normal shutdown (SIGTERM) and the same data on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped server again on its data and port.
    pub fn start_again(&mut self) {
        if let Err((_, e)) = self.spawn_and_wait() {
            panic!("mariadbd did not start again:\n{e}");
        }
    }

    /// Kills the server with SIGKILL (a crash: no shutdown, connections just drop).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A command for a MariaDB server binary, as `mysql` when root, in the temp dir (the
    /// `mysql` user cannot enter root's working directory).
    pub fn cmd(&self, name: &str) -> Command {
        let mut cmd = as_mysql(&mariadb_bin(name));
        cmd.current_dir(&self.root);
        cmd
    }
}

/// Runs `sql` with the `mariadb` CLI against any MySQL endpoint on loopback (sluice's, say);
/// `db` empty means none. The error text on failure includes the CLI's `ERROR nnnn (state)`.
pub fn cli_at(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> Result<String, String> {
    let mut cmd = client();
    cmd.args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", user])
        .arg(format!("-p{password}"));
    if !db.is_empty() {
        cmd.arg(db);
    }
    run_client(cmd, sql)
}

/// sysbench's MySQL driver pointed at `port` as `app` in `appdb`, over 2 tables of
/// `table_size` rows; the caller adds the workload and `prepare` / `run`.
pub fn sysbench(port: u16, table_size: u32) -> Command {
    let mut cmd = Command::new(super::tools::require("sysbench"));
    cmd.args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={}", APP.0))
        .arg(format!("--mysql-password={}", APP.1))
        .arg(format!("--mysql-db={MY_APPDB}"))
        .arg("--tables=2")
        .arg(format!("--table-size={table_size}"));
    cmd
}

/// The `mariadb` CLI without option files (so ~/.my.cnf cannot interfere), batch mode.
pub fn client() -> Command {
    let mut cmd = Command::new(mariadb_bin("mariadb"));
    cmd.args(["--no-defaults", "-N", "-B", "--connect-timeout=10"]);
    cmd
}

fn run_client(mut cmd: Command, sql: &str) -> Result<String, String> {
    let (status, out, err) = command_output(cmd.args(["-e", sql]));
    if status.success() {
        Ok(out.trim().to_string())
    } else {
        Err(format!("{status}: {}", err.trim()))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            let log = self.log_contents();
            eprintln!(
                "--- MariaDB log tail (port {}) ---\n{}\n---",
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

/// A SQL string literal (backslashes are escapes in MariaDB strings, too).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
