//! LISTEN without pinning against a real PostgreSQL: a listener that stops reading is closed at
//! its backlog with 54000 while others go on, sluice's server connections name themselves in
//! `pg_stat_activity`, and the listening connection follows the writer through a failover,
//! telling its sessions with a NOTICE. (Drivers' own listening: `drivers::notify`.)

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_postgres::{AsyncMessage, Client};

use crate::failover::cluster_config;
use crate::metrics::{get, sample, wait_readyz};
use crate::support::cluster::PgCluster;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::free_port;

/// A client whose notifications and notices arrive on the receiver.
async fn listener(port: u16) -> (Client, UnboundedReceiver<AsyncMessage>) {
    let dsn = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={APPDB} connect_timeout=10",
        APP.0, APP.1
    );
    let (client, mut conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    (client, rx)
}

/// The first message `pick` takes, skipping the others; None after `limit`.
async fn next<T>(
    rx: &mut UnboundedReceiver<AsyncMessage>,
    limit: Duration,
    pick: impl Fn(AsyncMessage) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => {
                if let Some(t) = pick(m) {
                    return Some(t);
                }
            }
            _ => return None,
        }
    }
}

/// The next notification's (channel, payload, pid), skipping notices; None after `limit`.
async fn next_notification(
    rx: &mut UnboundedReceiver<AsyncMessage>,
    limit: Duration,
) -> Option<(String, String, i32)> {
    next(rx, limit, |m| match m {
        AsyncMessage::Notification(n) => {
            Some((n.channel().into(), n.payload().into(), n.process_id()))
        }
        _ => None,
    })
    .await
}

/// The next notice's message; None after `limit`.
async fn next_notice(rx: &mut UnboundedReceiver<AsyncMessage>, limit: Duration) -> Option<String> {
    next(rx, limit, |m| match m {
        AsyncMessage::Notice(n) => Some(n.message().into()),
        _ => None,
    })
    .await
}

fn by_application(pg: &PgServer) -> String {
    pg.psql_db(
        APPDB,
        "SELECT string_agg(application_name || '=' || n, ',' ORDER BY application_name) FROM \
         (SELECT application_name, count(*) AS n FROM pg_stat_activity \
          WHERE application_name LIKE 'sluice%' GROUP BY 1) s",
    )
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_falls_behind_is_closed_and_the_others_go_on() {
    let pg = PgServer::start();
    let admin = free_port();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(2));
    let yaml = yaml.replace(
        "connection_borrow_timeout:",
        "notification_backlog: 50\n      connection_borrow_timeout:",
    ) + &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let port = proxy.port();

    let (slow, mut slow_rx) = listener(port).await;
    // The first login opened a pooled connection to learn the server's parameters: sluice's
    // name for it shows until a session's own (here the empty one) is replayed on it.
    assert!(
        by_application(&pg).contains("sluice pool=1"),
        "{}",
        by_application(&pg)
    );
    let (quick, mut quick_rx) = listener(port).await;
    for c in [&slow, &quick] {
        c.batch_execute("LISTEN jobs").await.unwrap();
    }
    // In a transaction, the slow one gets nothing until it ends: its inbox fills.
    slow.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // Three transactions of 30 (a backlog bounds what waits, so it must exceed a burst that
    // one read of the listening connection brings).
    for burst in 0..3 {
        pg.psql_db(
            APPDB,
            &format!(
                "SELECT pg_notify('jobs', i::text) FROM generate_series({}, {}) i",
                burst * 30 + 1,
                burst * 30 + 30
            ),
        );
        for i in burst * 30 + 1..=burst * 30 + 30 {
            let got = next_notification(&mut quick_rx, Duration::from_secs(10)).await;
            assert_eq!(
                got.map(|(c, p, _)| (c, p)),
                Some(("jobs".into(), i.to_string()))
            );
        }
    }
    // The slow session was closed with 54000 when it fell 50 behind.
    let e = slow.batch_execute("SELECT 1").await.unwrap_err();
    let code = e.as_db_error().map(|d| d.code().code().to_owned());
    assert!(
        code.as_deref() == Some("54000") || slow.is_closed(),
        "slow listener: {e:?}"
    );
    assert!(slow.is_closed());
    assert!(
        next_notification(&mut slow_rx, Duration::from_millis(200))
            .await
            .is_none()
    );
    // The quick one goes on, and sluice's connections say what they are.
    quick.batch_execute("NOTIFY jobs, 'after'").await.unwrap();
    let got = next_notification(&mut quick_rx, Duration::from_secs(10)).await;
    assert_eq!(got.map(|(_, p, _)| p), Some("after".into()));
    let names = by_application(&pg);
    assert!(names.contains("sluice listener=1"), "{names}");
    assert!(names.contains("sluice probe=1"), "{names}");
    let (_, scrape) = get(admin, "/metrics");
    let m = |s: &str| sample(&scrape, &format!("{s}{{target_group=\"pg\"}}"));
    assert_eq!(
        m("sluice_notification_backlog_closed_sessions_total"),
        Some(1.0)
    );
    assert_eq!(m("sluice_listening_sessions"), Some(1.0));
    assert_eq!(m("sluice_listen_channels"), Some(1.0));
    assert_eq!(m("sluice_listener_connections"), Some(1.0));
    assert!(m("sluice_notifications_delivered_total").unwrap_or(0.0) >= 91.0);
    // The last one out: the listening connection closes.
    quick.batch_execute("UNLISTEN *").await.unwrap();
    let closed = Instant::now();
    while by_application(&pg).contains("sluice listener") {
        assert!(closed.elapsed() < Duration::from_secs(10), "listener stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listening_connection_follows_the_writer_and_says_so() {
    let mut cluster = PgCluster::start(1);
    let admin = free_port();
    let yaml = cluster_config("postgres", &cluster.addrs(), "100ms", "")
        + &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start(&yaml);
    let writer = proxy.listen_addrs()[0].port();
    tokio::task::block_in_place(|| wait_readyz(admin, 200, 10));

    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (c, rx) = listener(writer).await;
        c.batch_execute("LISTEN jobs").await.unwrap();
        sessions.push((c, rx));
    }
    let primary = cluster.primary();
    primary.psql_db(APPDB, "NOTIFY jobs, 'before'");
    for (_, rx) in &mut sessions {
        let got = next_notification(rx, Duration::from_secs(10)).await;
        assert_eq!(got.map(|(_, p, _)| p), Some("before".into()));
    }
    assert!(by_application(primary).contains("sluice listener=1"));

    tokio::task::block_in_place(|| cluster.kill9(0));
    tokio::task::block_in_place(|| cluster.promote(1));
    for (_, rx) in &mut sessions {
        let notice = next_notice(rx, Duration::from_secs(30)).await;
        assert!(
            notice
                .as_deref()
                .is_some_and(|n| n.contains("listens again")),
            "{notice:?}\nlog:\n{}",
            proxy.log_contents()
        );
    }
    let new_primary = cluster.member(1);
    assert!(by_application(new_primary).contains("sluice listener=1"));
    new_primary.psql_db(APPDB, "NOTIFY jobs, 'after'");
    for (c, rx) in &mut sessions {
        let got = next_notification(rx, Duration::from_secs(10)).await;
        assert_eq!(got.map(|(_, p, _)| p), Some("after".into()));
        // And the session itself goes on.
        c.batch_execute("SELECT 1").await.unwrap();
    }
}
