//! The process lifecycle with live clients: SIGTERM drains (readiness off at once, accepting
//! through the grace, sessions closed at transaction boundaries, open transactions allowed to
//! commit, exit 0), for both engines.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::drivers::script;
use crate::metrics::{get, wait_readyz};
use crate::support::client::{code, connect, scalar};
use crate::support::mariadb::{APP as MY_APP, MariaDb};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::{self, command_output, free_port};

/// Sends `signal` (e.g. "TERM", "HUP") to the process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let (status, _, err) = command_output(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    );
    assert!(status.success(), "kill -{signal} {pid}: {err}");
}

/// Polls until sluice exits; its status, or a panic after `limit`.
fn wait_exit(proxy: &mut Sluice, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = proxy.try_wait() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "sluice still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const DRAIN: &str = "shutdown_grace: 2s\nshutdown_timeout: 20s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_postgres_sessions_at_transaction_boundaries() {
    let pg = PgServer::start();
    pg.psql_db(
        APPDB,
        "CREATE TABLE drained (id int); GRANT ALL ON drained TO app",
    );
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(4));
    let admin = free_port();
    // The idle session parks before the drain reaches it: the lot hands it back to be closed.
    let yaml = format!(
        "{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n{DRAIN}idle_client_park_after: 1s\n"
    );
    let mut proxy = Sluice::start_with_secrets(&yaml, &secrets);
    wait_readyz(admin, 200, 10);

    let idle = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&idle, "SELECT 1").await, "1");
    let recent = connect(&proxy, APP, APPDB).await.unwrap();
    let busy = connect(&proxy, APP, APPDB).await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .unwrap();

    signal(proxy.pid(), "TERM");
    let signalled = Instant::now();
    assert_eq!(
        get(admin, "/readyz").0,
        503,
        "readiness must turn off at once"
    );
    // Within the grace a client that was routed here before readiness changed still gets in.
    let late = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&late, "SELECT 2").await, "2");

    // A session busy half a second before the drain begins: its wait does not watch the drain
    // for its first idle second, so it closes then, not at shutdown_timeout.
    tokio::time::sleep_until((signalled + Duration::from_millis(1500)).into()).await;
    assert_eq!(scalar(&recent, "SELECT 3").await, "3");
    tokio::time::sleep_until((signalled + Duration::from_millis(3000)).into()).await;
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(idle.is_closed(), "the idle session was not closed: {err}");
    let deadline = signalled + Duration::from_millis(4000);
    while !recent.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recent.is_closed(),
        "a session busy just before the drain was still open 2 s into it"
    );
    let refused = connect(&proxy, APP, APPDB).await;
    assert!(refused.is_err(), "a new client got in after the grace");
    // The transaction that was open at SIGTERM is allowed to finish and commit.
    busy.batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .map_err(|e| code(&e))
        .unwrap();
    let status = wait_exit(&mut proxy, Duration::from_secs(10));
    assert!(status.success(), "sluice exited with {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "sluice waited for shutdown_timeout although every session had ended"
    );
    assert_eq!(
        pg.psql_db(APPDB, "SELECT count(*) FROM drained").trim(),
        "2"
    );
    let log = proxy.log_contents();
    assert!(
        log.contains("57P01"),
        "idle sessions get admin_shutdown: {log}"
    );
    assert!(log.contains("all sessions ended"), "{log}");
}

#[test]
fn sigterm_drains_mysql_sessions_and_cuts_off_at_shutdown_timeout() {
    let db = MariaDb::start();
    db.sql("CREATE TABLE appdb.drained (id int) ENGINE=InnoDB");
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::pool(4));
    let yaml = format!("{yaml}{DRAIN}");
    let mut proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let (status, out, err) = command_output(
        Command::new(tools::python())
            .arg(script("pymysql_drain.py"))
            .args(["127.0.0.1", &proxy.port().to_string(), MY_APP.0, MY_APP.1])
            .args([&proxy.pid().to_string(), "2"]),
    );
    assert!(status.success(), "{out}{err}");
    // 2013: lost connection, as when a MySQL server shuts down; 2003: cannot connect.
    assert!(out.contains("idle session closed 2013"), "{out}");
    // Its last command half a second before the drain, checked 1.5 s after: closed within its
    // busy second, not left to shutdown_timeout.
    assert!(out.contains("recent session closed 2013"), "{out}");
    assert!(out.contains("new client refused 2003"), "{out}");
    assert!(out.contains("transaction committed"), "{out}");
    let status = wait_exit(&mut proxy, Duration::from_secs(10));
    assert!(status.success(), "sluice exited with {status}");
    assert_eq!(db.sql("SELECT count(*) FROM appdb.drained").trim(), "2");

    // A transaction that never ends is cut off at shutdown_timeout; sluice still exits 0, and
    // what it had not committed is rolled back by the server.
    let yaml = yaml.replace("shutdown_timeout: 20s", "shutdown_timeout: 4s");
    let mut proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let mut stuck = Command::new(tools::python())
        .arg("-c")
        .arg(
            "import sys, time, pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port=int(sys.argv[1]), user=sys.argv[2], \
             password=sys.argv[3], database='appdb')\n\
             c.cursor().execute('BEGIN')\n\
             c.cursor().execute('INSERT INTO drained VALUES (3)')\n\
             print('open', flush=True)\n\
             time.sleep(30)\n",
        )
        .args([&proxy.port().to_string(), MY_APP.0, MY_APP.1])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stuck.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open");
    signal(proxy.pid(), "TERM");
    let signalled = Instant::now();
    let status = wait_exit(&mut proxy, Duration::from_secs(15));
    let _ = stuck.kill();
    let _ = stuck.wait();
    assert!(status.success(), "sluice exited with {status}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(3500),
        "the open transaction was not given shutdown_timeout"
    );
    assert!(proxy.log_contents().contains("shutdown_timeout reached"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(db.sql("SELECT count(*) FROM appdb.drained").trim(), "2");
}
