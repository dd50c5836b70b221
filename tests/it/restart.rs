//! A database server restarted in place (a minor-version upgrade, a setting that needs a
//! restart) while clients sit idle and others run statements. A direct connection is ended by
//! it; through sluice, a session that was not inside a transaction keeps its client connection,
//! and its statements wait for the server to come back instead of failing, as RDS Proxy and
//! PgBouncer hold their clients' statements while a server starts. Logins wait the same way for
//! a server not up yet (sluice started first, as a sidecar may be).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::timeout;

use crate::failover::mysql::drive;
use crate::my_proxy::python;
use crate::support::client::{code, connect, connect_port};
use crate::support::mariadb::{MY_APPDB, MariaDb, cli_at, client};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::open_sockets;

fn options() -> ProxyOptions {
    ProxyOptions {
        pool_size: 4,
        borrow_timeout: "60s".into(),
        health_interval: Some("200ms".into()),
        ..ProxyOptions::default()
    }
}

/// What one client that kept running statements saw: statements answered, and each error by
/// SQLSTATE ("closed": the connection ended; "hung": no answer within a minute).
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    errors: BTreeMap<String, usize>,
}

/// Runs `select 1` every 5 ms on its own session through `port` until `stop`.
async fn busy(port: u16, stop: Arc<AtomicBool>) -> Tally {
    let c = connect_port(port, APP, APPDB).await.unwrap();
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        let what = match timeout(Duration::from_secs(60), c.simple_query("select 1")).await {
            Ok(Ok(_)) => {
                tally.ok += 1;
                None
            }
            Ok(Err(e)) if c.is_closed() => Some(format!("closed: {e}")),
            Ok(Err(e)) => Some(code(&e)),
            Err(_) => Some("hung".to_owned()),
        };
        if let Some(what) = what {
            let end = what.starts_with("closed") || what == "hung";
            *tally.errors.entry(what).or_default() += 1;
            if end {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tally
}

/// `pg_ctl -m fast restart`: the backends are ended with 57P01, then logins get 57P03 ("shutting
/// down"), a refused connection, and 57P03 again ("starting up") until the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_in_place_keeps_every_session_outside_a_transaction() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, options());
    let mut idle = Vec::new();
    for _ in 0..20 {
        let c = connect(&proxy, APP, APPDB).await.unwrap();
        c.simple_query("select 1").await.unwrap();
        idle.push(c);
    }
    let direct = connect_port(pg.port(), APP, APPDB).await.unwrap();
    direct.simple_query("select 1").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(busy(proxy.port(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| pg.restart());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }
    let mut failed = Vec::new();
    for (i, c) in idle.iter().enumerate() {
        if let Err(e) = c.simple_query("select 1").await {
            failed.push(format!("idle session {i}: {}", code(&e)));
        }
    }
    assert!(
        direct.simple_query("select 1").await.is_err(),
        "the restart did not end a direct connection: nothing was tested"
    );
    println!("busy sessions through the restart: {tallies:?}");
    let report = format!("{tallies:?}\n{failed:?}\n{}", proxy.log_contents());
    assert!(failed.is_empty(), "idle sessions failed: {report}");
    for t in &tallies {
        assert!(t.ok > 20, "a busy session made no progress: {report}");
        // A statement on the server at the moment its backend was ended cannot be answered;
        // every other one must wait for the server to be back.
        let errors: usize = t.errors.values().sum();
        assert!(errors <= 1, "statements failed by the restart: {report}");
        assert!(
            !t.errors
                .keys()
                .any(|k| k.starts_with("closed") || k == "hung"),
            "{report}"
        );
    }
}

/// MariaDB shut down (SIGTERM) and started again on its data and port, with PyMySQL clients:
/// idle sessions keep their settings, statements sent while it is down wait for it, and a
/// transaction it cut gets 1213 once.
#[test]
fn mariadb_restarted_in_place_keeps_every_session_outside_a_transaction() {
    let mut db = MariaDb::start();
    let proxy = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            client_auth_type: "mysql_native_password".into(),
            ..options()
        },
    );
    let direct = db.port().to_string();
    let all = drive(
        python("pymysql_restart.py", proxy.port(), &[MY_APPDB, &direct]),
        &proxy,
        |line| {
            (line == "READY").then(|| {
                db.restart();
                "RESTARTED"
            })
        },
    );
    println!("{all}");
}

/// Longer than sluice's 15 s login timeout for the client's own part of a login: the server
/// starts after a login began waiting for it.
const LATE_START: Duration = Duration::from_secs(17);

/// sluice started before its database (a sidecar beside a database still starting): a client
/// logging in waits for the server up to `connection_borrow_timeout`, as a statement does, and
/// is served when it comes; when it does not, the client is told so (FATAL 57P03).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logins_wait_for_a_server_not_up_yet() {
    let mut pg = PgServer::start();
    pg.stop();
    let brief = Sluice::start_for(
        &pg,
        ProxyOptions {
            borrow_timeout: "2s".into(),
            ..options()
        },
    );
    let err = connect(&brief, APP, APPDB).await.unwrap_err();
    assert_eq!(code(&err), "57P03", "told why: {err}");
    let proxy = Sluice::start_for(&pg, options());
    served_once_started(&proxy, &mut pg, LATE_START).await;
}

/// Logs in through `proxy` and runs a statement while `pg` is down; `pg` starts `late` later,
/// and the login, unanswered until then, is served.
async fn served_once_started(proxy: &Sluice, pg: &mut PgServer, late: Duration) {
    let port = proxy.port();
    let login = tokio::spawn(async move {
        let c = connect_port(port, APP, APPDB).await?;
        c.simple_query("select 1").await.map(|_| ())
    });
    tokio::time::sleep(late).await;
    assert!(!login.is_finished(), "answered with the server down");
    tokio::task::block_in_place(|| pg.start_again());
    let got = timeout(Duration::from_secs(30), login)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_ok(), "{got:?}\n{}", proxy.log_contents());
}

/// The same for MySQL, where sluice greets first: the greeting waits for the server.
#[test]
fn mariadb_logins_wait_for_a_server_not_up_yet() {
    let mut db = MariaDb::start();
    db.stop();
    let opts = |borrow: &str| ProxyOptions {
        borrow_timeout: borrow.into(),
        client_auth_type: "mysql_native_password".into(),
        ..options()
    };
    let brief = Sluice::start_for_mariadb(&db, opts("2s"));
    let err = cli_at(brief.port(), APP.0, APP.1, MY_APPDB, "SELECT 1").unwrap_err();
    assert!(err.contains("9501"), "told why: {err}");
    let proxy = Sluice::start_for_mariadb(&db, opts("60s"));
    let port = proxy.port();
    // The CLI's own connect timeout would end the wait first: the harness sets 10 s.
    let mut cli = client();
    cli.arg("--connect-timeout=60")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", APP.0])
        .arg(format!("-p{}", APP.1))
        .args([MY_APPDB, "-e", "SELECT 1"]);
    let login = std::thread::spawn(move || cli.output().unwrap());
    std::thread::sleep(LATE_START);
    db.start_again();
    let got = login.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "1",
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        proxy.log_contents()
    );
}

/// Clients that give up on a login while it waits for the database (a Lambda function's own
/// connect timeout, then its retry) are let go at once: their places under
/// `max_client_connections` are free for the logins after them, which wait and are served when
/// the server comes, rather than being refused with 53300 for up to `connection_borrow_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logins_given_up_while_the_server_is_down_leave_at_once() {
    let mut pg = PgServer::start();
    pg.stop();
    let (yaml, secrets) = config_for(&pg, &options());
    let yaml = yaml.replace(
        "  - username: app\n    client_auth: password\n",
        "  - username: app\n    client_auth: password\n    max_client_connections: 2\n",
    );
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let port = proxy.port();
    for attempt in 0..4 {
        // The client's connect timeout: the dropped future closes its socket.
        match timeout(Duration::from_millis(700), connect_port(port, APP, APPDB)).await {
            Err(_) => {}
            Ok(Err(e)) => panic!(
                "attempt {attempt} refused: {}\n{}",
                code(&e),
                proxy.log_contents()
            ),
            Ok(Ok(_)) => panic!("attempt {attempt} served with the server down"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served_once_started(&proxy, &mut pg, Duration::from_secs(1)).await;
}

/// MySQL clients wait for sluice's greeting, which waits for the server: one that gives up
/// meanwhile has its socket closed at once, not held in CLOSE_WAIT until the borrow timeout (a
/// fleet retrying through an outage would run sluice out of descriptors).
#[test]
fn mariadb_clients_that_give_up_on_the_greeting_leave_at_once() {
    let mut db = MariaDb::start();
    db.stop();
    let proxy = Sluice::start_for_mariadb(&db, options());
    let before = open_sockets(proxy.pid());
    let waiting: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap())
        .collect();
    // Give or take the probes' own sockets (the server is down: each is refused at once).
    let held = sockets_until(proxy.pid(), |n| n >= before + 20);
    assert!(held >= before + 18, "{before} sockets, then {held}");
    drop(waiting);
    let now = sockets_until(proxy.pid(), |n| n <= before + 2);
    assert!(
        now <= before + 2,
        "{before} sockets, {held} while waiting, {now} after the clients left"
    );
    db.start_again();
    let got = cli_at(proxy.port(), APP.0, APP.1, MY_APPDB, "SELECT 1").unwrap();
    assert_eq!(got.trim(), "1");
}

/// The count of sockets `pid` holds once `settled` holds of it, or after 10 s.
fn sockets_until(pid: u32, settled: impl Fn(usize) -> bool) -> usize {
    let mut n = open_sockets(pid);
    for _ in 0..100 {
        if settled(n) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        n = open_sockets(pid);
    }
    n
}
