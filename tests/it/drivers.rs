//! Real drivers through sluice: psycopg 3 and pgjdbc under concurrent load on a small pool, and
//! two users that must never share a server connection.
//!
//! The client programs live in `tests/it/drivers/`; each checks every result it gets and prints a
//! summary line that the tests compare with what PostgreSQL (asked directly) holds. While a load
//! runs, the tests sample the server's backends to prove sluice stays within its pool size.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools::{self, tail};

const POOL_SIZE: u32 = 4;

fn script(name: &str) -> PathBuf {
    tools::repo_root().join("tests/it/drivers").join(name)
}

fn proxy(pg: &PgServer) -> Sluice {
    Sluice::start_for(
        pg,
        ProxyOptions {
            pool_size: POOL_SIZE,
            borrow_timeout: "60s".into(),
            ..ProxyOptions::default()
        },
    )
}

/// What a client program did, and the most `app` backends seen on `appdb` while it ran.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    max_backends: i64,
    samples: usize,
}

impl Run {
    /// The rest of the stdout line starting with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        let found = self.stdout.lines().find_map(|l| l.strip_prefix(prefix));
        found.unwrap_or_else(|| panic!("no {prefix:?} line in output:\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} max_backends={} samples={}\n--- stdout\n{}\n--- stderr\n{}",
            self.ok,
            self.max_backends,
            self.samples,
            tail(&self.stdout, 8000),
            tail(&self.stderr, 16000)
        )
    }
}

/// Runs `cmd` to completion (killed after `limit`) while sampling `backend_count(app, appdb)`.
fn run_sampling(pg: &PgServer, mut cmd: Command, limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let started = Instant::now();
    let (mut max_backends, mut samples) = (0, 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        max_backends = max_backends.max(pg.backend_count(APP.0, APPDB));
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_backends,
        samples,
    };
    assert!(
        status.is_some(),
        "{cmd:?} did not finish within {limit:?}:\n{run}"
    );
    eprintln!(
        "{:?} took {:?}; max app backends {} over {} samples",
        cmd.get_program(),
        started.elapsed(),
        run.max_backends,
        run.samples
    );
    run
}

fn assert_pool_bounded(run: &Run) {
    assert!(run.samples >= 3, "too few samples to judge:\n{run}");
    assert!(
        run.max_backends <= i64::from(POOL_SIZE),
        "{} app backends exceed pool size {POOL_SIZE}:\n{run}",
        run.max_backends
    );
    assert!(run.max_backends >= 1, "no backend ever seen:\n{run}");
}

/// `select` through psql straight to PostgreSQL (not through sluice), as one `a|b|c` line.
fn direct(pg: &PgServer, sql: &str) -> String {
    pg.psql_db(APPDB, sql)
}

#[test]
fn psycopg_mixed_load_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let (threads, txns) = (30, 30);
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("psycopg_load.py"))
        .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1])
        .args([threads.to_string(), txns.to_string()]);
    let run = run_sampling(&pg, cmd, Duration::from_secs(240));
    assert!(run.ok, "psycopg load failed:\n{run}");
    assert_pool_bounded(&run);

    let result: serde_json::Value = serde_json::from_str(run.line("RESULT ")).unwrap();
    let num = |key: &str| {
        result[key]
            .as_i64()
            .unwrap_or_else(|| panic!("{key} in {result}"))
    };
    assert_eq!(num("threads_ok"), threads, "{run}");
    let ops = result["ops"].as_object().unwrap();
    let op = |name: &str| ops.get(name).and_then(|v| v.as_i64()).unwrap_or(0);
    assert_eq!(
        ops.values().filter_map(|v| v.as_i64()).sum::<i64>(),
        threads * txns
    );
    for name in [
        "simple", "prepared", "commit", "rollback", "error", "copy", "pipeline",
    ] {
        assert!(
            op(&format!("op_{name}")) >= threads,
            "op_{name} ran too rarely: {result}"
        );
    }
    assert_eq!(
        num("notices"),
        op("op_notice"),
        "one NOTICE per DO block: {result}"
    );
    assert_eq!(num("errors_caught"), op("op_error"), "{result}");

    let expected = format!("{}|{}|{}", num("rows"), num("sum"), num("rows"));
    let kv = direct(
        &pg,
        "select count(*), sum(val), count(distinct ukey) from load_kv",
    );
    assert_eq!(kv, expected, "load_kv totals (rows|sum|unique keys)");
    let per_thread = direct(&pg, "select count(distinct thread) from load_kv");
    assert_eq!(per_thread, threads.to_string());
    let copy = direct(&pg, "select count(*), sum(val) from load_copy");
    assert_eq!(copy, format!("{}|{}", num("copy_rows"), num("copy_sum")));
    assert!(num("copy_rows") >= 25 * threads, "{result}");
    drop(sluice);
}

/// Runs JdbcLoad.java as `user`; `args` are MODE THREADS ITERS THRESHOLD TABLE.
fn jdbc(pg: &PgServer, sluice: &Sluice, (user, password): (&str, &str), args: &[&str]) -> Run {
    let mut cmd = Command::new(tools::java());
    cmd.arg("-cp")
        .arg(tools::pgjdbc_jar())
        .arg(script("JdbcLoad.java"))
        .args([
            "127.0.0.1",
            &sluice.port().to_string(),
            APPDB,
            user,
            password,
        ])
        .args(args);
    run_sampling(pg, cmd, Duration::from_secs(240))
}

#[test]
fn pgjdbc_prepared_batches_and_transactions_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let threads = 20;
    for (threshold, table) in [("5", "jdbc_kv_t5"), ("1", "jdbc_kv_t1")] {
        let run = jdbc(&pg, &sluice, APP, &["load", "20", "25", threshold, table]);
        assert!(
            run.ok,
            "pgjdbc load (prepareThreshold={threshold}) failed:\n{run}"
        );
        assert_pool_bounded(&run);
        let fields: HashMap<&str, i64> = run
            .line("RESULT ")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        assert_eq!(fields["threads_ok"], threads, "{run}");
        assert_eq!(
            fields["server_prepared"], threads,
            "named statements in use: {run}"
        );
        // 3 batches of 20 plus 5 committed rows per thread.
        assert_eq!(fields["rows"], threads * 65, "{run}");
        let db = direct(&pg, &format!("select count(*), sum(val) from {table}"));
        assert_eq!(
            db,
            format!("{}|{}", fields["rows"], fields["sum"]),
            "{table}"
        );
        let updated = direct(&pg, &format!("select count(*) from {table} where val = 2"));
        assert_eq!(
            updated,
            (threads * 5).to_string(),
            "committed update of {table}"
        );
    }

    // MD5 client authentication, and a PreparedStatement past the threshold, as md5user.
    let run = jdbc(&pg, &sluice, MD5USER, &["whoami", "1", "12", "3", "-"]);
    assert!(run.ok, "pgjdbc as md5user failed:\n{run}");
    assert_eq!(
        run.line("WHOAMI "),
        format!("md5user {}", (1..=12).sum::<i64>())
    );
}

/// One client session of `user`: runs `rounds` times `current_user, backend identity` (an extended
/// query with named statements, then a simple query) and returns the identities seen.
async fn identities(
    port: u16,
    (user, password): (&'static str, &'static str),
    rounds: usize,
) -> HashSet<String> {
    let conn_str = format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={APPDB} \
         connect_timeout=10"
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in through sluice: {e}"));
    tokio::spawn(conn);
    // pid plus backend start time: a pid the OS reuses is not mistaken for the same backend.
    let sql = "select current_user::text, pg_backend_pid() || '@' || \
               (select backend_start::text from pg_stat_activity where pid = pg_backend_pid())";
    let mut seen = HashSet::new();
    for round in 0..rounds {
        let (who, backend) = if round % 2 == 0 {
            let row = client.query_one(sql, &[]).await.unwrap();
            (row.get::<_, String>(0), row.get::<_, String>(1))
        } else {
            let rows = client.simple_query(sql).await.unwrap();
            let row = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            });
            let row = row.expect("a row");
            (
                row.get(0).unwrap().to_owned(),
                row.get(1).unwrap().to_owned(),
            )
        };
        assert_eq!(who, user, "session of {user} ran on a connection of {who}");
        seen.insert(backend);
        if round % 5 == 4 {
            tokio::task::yield_now().await;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_users_never_share_a_server_connection() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let port = sluice.port();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let role = if i % 2 == 0 { APP } else { MD5USER };
        tasks.push(tokio::spawn(async move {
            (role.0, identities(port, role, 60).await)
        }));
    }
    let mut seen: HashMap<&str, HashSet<String>> = HashMap::new();
    for task in tasks {
        let (user, ids) = task.await.unwrap();
        seen.entry(user).or_default().extend(ids);
    }
    // Then strictly alternating single transactions, so each user borrows right after the other.
    for _ in 0..20 {
        for role in [APP, MD5USER] {
            seen.entry(role.0)
                .or_default()
                .extend(identities(port, role, 2).await);
        }
    }
    let (app, md5) = (&seen[APP.0], &seen[MD5USER.0]);
    let shared: Vec<_> = app.intersection(md5).collect();
    assert!(shared.is_empty(), "backends used by both users: {shared:?}");
    assert!(!app.is_empty() && !md5.is_empty(), "{seen:?}");
    eprintln!("app used {} backends, md5user {}", app.len(), md5.len());
    drop(sluice);
}
