//! LISTEN/NOTIFY without pinning: listening sessions from psycopg 3, asyncpg, node-postgres and
//! pgjdbc, far more of them than the pool of 4 holds, keep running queries while sluice fans
//! notifications out to them from one listening server connection per (database, user).
//!
//! Each client program checks delivery itself (every notification to every subscriber once, in
//! commit order, with the sending backend's pid and its payload intact; LISTEN and UNLISTEN
//! applied at commit; nothing delivered inside a transaction; DISCARD ALL and leaving drop
//! subscriptions) and passes run straight against PostgreSQL too. Here the tests add what only
//! the outside sees: the server never has more than the pool plus one listening connection
//! (`sluice listener` in pg_stat_activity) of `app`, that one closes once the last listener
//! left, no session was ever pinned, and sluice counted as delivered what the clients received.
//!
//! The programs also notify from a connection of their own straight to PostgreSQL (a commit
//! sluice never saw); it logs in with application_name `notify-direct` and is left out of the
//! count of sluice's server connections.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{POOL_SIZE, Run, run_sampling_with, script};
use crate::metrics::{get, sample};
use crate::support::postgres::{APP, APPDB, PgServer, literal};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::{self, free_port};

/// The application_name of the programs' direct (not through sluice) connections.
const DIRECT_APP: &str = "notify-direct";

/// sluice with a pool of [`POOL_SIZE`] and its admin listener; idle sessions park after
/// `park_after` when given. Returns the proxy and the admin port.
fn proxy(pg: &PgServer, park_after: Option<&str>) -> (Sluice, u16) {
    let opts = ProxyOptions {
        pool_size: POOL_SIZE,
        borrow_timeout: "60s".into(),
        idle_client_park_after: park_after.map(Into::into),
        ..ProxyOptions::default()
    };
    let (yaml, secrets) = config_for(pg, &opts);
    let admin = free_port();
    let yaml = format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n");
    (Sluice::start_with_secrets(&yaml, &secrets), admin)
}

/// `app`'s backends on `appdb` but the programs' direct sender (sluice's server connections),
/// and how many of them are its listening connection.
fn sluice_backends(pg: &PgServer) -> (i64, i64) {
    let out = pg.psql(&format!(
        "SELECT count(*), count(*) FILTER (WHERE application_name = 'sluice listener') \
         FROM pg_stat_activity WHERE usename = {} AND datname = {} \
         AND backend_type = 'client backend' AND application_name IS DISTINCT FROM {}",
        literal(APP.0),
        literal(APPDB),
        literal(DIRECT_APP)
    ));
    let parsed = out
        .split_once('|')
        .and_then(|(all, listening)| Some((all.parse().ok()?, listening.parse().ok()?)));
    parsed.unwrap_or_else(|| panic!("unexpected psql output {out:?}"))
}

/// The program's arguments after its name: HOST PORT USER PASSWORD DB DIRECT_PORT, then `more`.
fn args(pg: &PgServer, sluice: &Sluice, more: &[i64]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "127.0.0.1".into(),
        sluice.port().to_string(),
        APP.0.into(),
        APP.1.into(),
        APPDB.into(),
        pg.port().to_string(),
    ];
    args.extend(more.iter().map(i64::to_string));
    args
}

/// Runs `cmd` sampling sluice's server connections and asserts that it passed, that the server
/// saw at most the pool plus one listening connection (and exactly one of those), and that the
/// listening connection closed once every session left. Then checks the metrics with
/// [`assert_metrics`].
fn run_listeners(pg: &PgServer, admin: u16, cmd: Command) -> Run {
    let mut listening = 0;
    let run = run_sampling_with(cmd, Duration::from_secs(240), || {
        let (all, listener) = sluice_backends(pg);
        listening = listening.max(listener);
        all
    });
    assert!(run.ok, "{run}");
    eprintln!("RESULT {}", run.result());
    assert!(run.samples >= 3, "too few samples to judge:\n{run}");
    let bound = i64::from(POOL_SIZE) + 1;
    assert!(
        run.max_backends <= bound,
        "{} server connections of app: more than the pool of {POOL_SIZE} and one listening \
         connection:\n{run}",
        run.max_backends
    );
    assert_eq!(
        listening, 1,
        "listening connections (`sluice listener`) seen at once; one per database and user"
    );

    // The last session out: the listening connection UNLISTENs and closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (all, listener) = sluice_backends(pg);
        assert!(
            all <= bound,
            "{all} server connections of app after the run"
        );
        if listener == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listening connection is still open 10 s after the last listener left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_metrics(admin, run.result().int("received_total"));
    run
}

/// No session was pinned, for LISTEN or for anything else, since sluice started; nobody listens
/// any more; nobody was closed for falling behind; and sluice handed the sessions exactly the
/// `received` notifications they read (a client library may drop some silently: asyncpg does
/// for a channel it has no callback for).
fn assert_metrics(admin: u16, received: i64) {
    let (status, scrape) = get(admin, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    let at = |series: &str| {
        sample(&scrape, series).unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
    };
    let group = r#"{target_group="pg"}"#;
    for gauge in [
        "sluice_listening_sessions",
        "sluice_listen_channels",
        "sluice_listener_connections",
    ] {
        assert_eq!(at(&format!("{gauge}{group}")), 0.0, "{gauge} after the run");
    }
    let closed = "sluice_notification_backlog_closed_sessions_total";
    assert_eq!(at(&format!("{closed}{group}")), 0.0, "{closed}");
    let delivered = at(&format!("sluice_notifications_delivered_total{group}"));
    assert_eq!(
        delivered, received as f64,
        "notifications sluice delivered, against what the clients received"
    );

    let listen = r#"sluice_session_pins_total{reason="listen"}"#;
    assert_eq!(at(listen), 0.0, "{listen}");
    let pinned: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("sluice_session_pins_total{"))
        .filter(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .is_none_or(|v| v != 0.0)
        })
        .collect();
    assert!(pinned.is_empty(), "sessions pinned: {pinned:#?}");
}

/// The issue's case: 200 psycopg sessions listening over a pool of 4 while running queries and
/// small transactions; notifications from NOTIFY and from pg_notify() in a transaction through
/// sluice, and from a commit on the database directly; the group channels are notified by
/// listeners themselves. Plus the sessions whose subscriptions change half-way (UNLISTEN,
/// UNLISTEN *, DISCARD ALL, leaving), the ones inside a transaction meanwhile, one that never
/// sends a query, and one that connects later and must inherit nothing.
#[test]
fn psycopg_listeners_share_one_listening_connection() {
    let pg = PgServer::start();
    let (sluice, admin) = proxy(&pg, None);
    let (listeners, notifications) = (200, 50);
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("psycopg_notify.py"))
        .args(args(&pg, &sluice, &[listeners, notifications]));
    let run = run_listeners(&pg, admin, cmd);
    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("listeners_ok"), listeners, "{run}");
    assert_eq!(num("jobs_received"), listeners * notifications, "{result}");
    // 20 groups of 10, each group's first listener sending 5 that all ten hear.
    assert_eq!(num("group_sent"), listeners / 10 * 5, "{result}");
    assert_eq!(num("group_received"), num("group_sent") * 10, "{result}");
    assert_eq!(num("never_received"), 0, "{result}");
    assert_eq!(num("specials_ok"), num("specials"), "{run}");
    for how in ["sluice_simple", "sluice_txn", "direct", "direct_txn"] {
        let sent = result["sent"][how].as_i64().unwrap_or(0);
        assert!(sent >= notifications / 5, "few {how} sends: {result}");
    }
    for mode in ["simple", "quoted", "transaction", "extended"] {
        assert_eq!(
            result["modes"][mode].as_i64(),
            Some(listeners / 4),
            "{result}"
        );
    }
    // The pool was busy: each listener ran queries the whole time, not just its LISTEN.
    assert!(num("queries") >= 2 * listeners, "{result}");
    drop(sluice);
}

/// asyncpg's add_listener / remove_listener (quoted channel names) on 20 connections that keep
/// running cached statements; half of them remove one listener half-way.
#[test]
fn asyncpg_listeners_on_a_small_pool() {
    let pg = PgServer::start();
    let (sluice, admin) = proxy(&pg, None);
    let (conns, notifications) = (20, 40);
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("asyncpg_notify.py"))
        .args(args(&pg, &sluice, &[conns, notifications]));
    let run = run_listeners(&pg, admin, cmd);
    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("connections_ok"), conns, "{run}");
    assert_eq!(num("events_received"), conns * notifications, "{result}");
    // Odd connections keep `second` to the end, even ones only until they removed it.
    let second = conns / 2 * (num("second_sent") + num("second_before_remove"));
    assert_eq!(num("second_received"), second, "{result}");
    assert!(num("second_before_remove") >= 1, "{result}");
    assert!(num("second_sent") > num("second_before_remove"), "{result}");
    drop(sluice);
}

/// node-postgres clients listening (plain, quoted in a transaction, extended protocol) sit idle
/// for longer than sluice's idle_client_park_after before the first notifications (sluice keeps
/// a listening session's task, which its inbox needs; the idle sender parks): each must still
/// reach every client at once, without the client sending anything. Then the clients get busy.
#[test]
fn node_pg_listeners_idle_past_parking_then_busy() {
    let pg = PgServer::start();
    let (sluice, admin) = proxy(&pg, Some("1s"));
    let (node, node_path) = tools::node();
    let (clients, notifications, idle_seconds) = (20, 40, 3);
    let mut cmd = Command::new(node);
    cmd.env("NODE_PATH", node_path)
        .arg(script("node_pg_notify.js"))
        .args(args(&pg, &sluice, &[clients, notifications, idle_seconds]));
    let run = run_listeners(&pg, admin, cmd);
    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("clients_ok"), clients, "{run}");
    assert_eq!(num("idle_sends"), notifications / 4, "{result}");
    assert_eq!(num("jobs_received"), clients * notifications, "{result}");
    // Four channels, each with a quarter of the clients.
    assert!(num("channel_sent") >= 4, "{result}");
    assert_eq!(
        num("channel_received"),
        clients / 4 * num("channel_sent"),
        "{result}"
    );
    drop(sluice);
}

/// pgjdbc: LISTEN by the extended protocol (autocommit, committed JDBC transaction,
/// PreparedStatement), notifications polled with getNotifications(timeout) between queries.
#[test]
fn pgjdbc_listeners_poll_notifications() {
    let pg = PgServer::start();
    let (sluice, admin) = proxy(&pg, None);
    let (conns, notifications) = (10, 30);
    let mut cmd = Command::new(tools::java());
    cmd.arg("-cp")
        .arg(tools::pgjdbc_jar())
        .arg(script("JdbcNotify.java"))
        .args(args(&pg, &sluice, &[conns, notifications]));
    let run = run_listeners(&pg, admin, cmd);
    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("connections_ok"), conns, "{run}");
    assert_eq!(num("received"), conns * notifications, "{result}");
    for how in ["sluice", "sluice_txn", "direct", "direct_txn"] {
        assert!(
            result["sent"][how].as_i64() >= Some(1),
            "no {how} send: {result}"
        );
    }
    drop(sluice);
}
