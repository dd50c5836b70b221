//! Endpoints through failovers and replica lag, against real replicated clusters: the writer
//! endpoint follows a promoted replica without dropping idle clients, the reader endpoint
//! spreads over replicas and skips lagging ones.

mod drill;
pub(crate) mod mysql;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::metrics::wait_readyz;
use crate::support::client::{code, scalar};
use crate::support::cluster::PgCluster;
use crate::support::postgres::{APP, APPDB, MONITOR};
use crate::support::sluice::Sluice;
use crate::support::tools::free_port;

/// A config with a `writer` (read_write), a `reader` (read_only) and a `split`
/// (read_write_split) endpoint over `instances`, probing every `interval`.
pub fn cluster_config(engine: &str, instances: &[String], interval: &str, extra: &str) -> String {
    let mut y = String::from("endpoints:\n");
    for (name, role) in [
        ("writer", "read_write"),
        ("reader", "read_only"),
        ("split", "read_write_split"),
    ] {
        let _ = write!(
            y,
            "  - name: {name}\n    listen: 127.0.0.1:{port}\n    target_group: db\n    role: {role}\n",
            port = free_port()
        );
    }
    let _ = write!(
        y,
        "target_groups:\n  db:\n    engine: {engine}\n    instances: [{list}]\n    \
         monitor_user: {monitor}\n    connection_pool:\n      max_connections: 8\n      \
         connection_borrow_timeout: 30s\n      connect_timeout: 2s\n    \
         health: {{ interval: {interval}, timeout: 1s, unhealthy_threshold: 2, \
         healthy_threshold: 2, max_replica_lag: 2s }}\n{extra}auth:\n  - username: {app}\n    \
         secret: file:secrets.yaml#{app}\n  - username: {monitor}\n    \
         secret: file:secrets.yaml#{monitor}\n",
        list = instances.join(", "),
        monitor = MONITOR.0,
        app = APP.0,
    );
    y
}

async fn client(port: u16) -> Client {
    let dsn = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={APPDB} connect_timeout=10",
        APP.0, APP.1
    );
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("client connection ended: {e}");
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_writer_failover_keeps_idle_clients_their_settings_and_their_commits() {
    let mut cluster = PgCluster::start(2);
    cluster.primary().psql_db(
        APPDB,
        "CREATE TABLE t (id int PRIMARY KEY, who text); GRANT ALL ON t TO app;",
    );
    cluster.wait_caught_up();
    // The failover drill in docs/benchmarks.md runs this with SLUICE_PROBE_INTERVAL=1s too.
    let interval = std::env::var("SLUICE_PROBE_INTERVAL").unwrap_or_else(|_| "100ms".into());
    let admin = free_port();
    let yaml = cluster_config("postgres", &cluster.addrs(), &interval, "")
        + &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start(&yaml);
    let (writer, reader) = (
        proxy.listen_addrs()[0].port(),
        proxy.listen_addrs()[1].port(),
    );
    tokio::task::block_in_place(|| wait_readyz(admin, 200, 10));

    // Idle clients with session state: a parameter and a protocol-level prepared statement.
    let mut idle = Vec::new();
    for i in 0..4 {
        let c = client(writer).await;
        c.batch_execute(&format!("SET statement_timeout = '{}ms'", 12_345 + i))
            .await
            .unwrap();
        let insert = c.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
        c.execute(&insert, &[&i, &"before"]).await.unwrap();
        idle.push((c, insert));
    }
    let rc = client(reader).await;
    assert_eq!(scalar(&rc, "SELECT pg_is_in_recovery()").await, "t");
    // A transaction left open across the kill.
    let cut = client(writer).await;
    cut.batch_execute("BEGIN; INSERT INTO t VALUES (100, 'cut')")
        .await
        .unwrap();
    cluster.wait_caught_up();

    tokio::task::block_in_place(|| cluster.kill9(0));
    // Clients asking while there is no writer wait for the next one.
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                let c = client(writer).await;
                let started = Instant::now();
                c.execute("INSERT INTO t VALUES ($1, 'waited')", &[&(200 + i)])
                    .await
                    .map(|_| started.elapsed())
                    .map_err(|e| code(&e))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No writer: not ready (a Kubernetes Service stops sending new clients), until promotion.
    let (_, why) = tokio::task::block_in_place(|| wait_readyz(admin, 503, 10));
    assert!(why.contains("no writer known in db"), "{why}");
    tokio::task::block_in_place(|| cluster.promote(1));
    let promoted = Instant::now();
    let first = idle[0]
        .0
        .execute("INSERT INTO t VALUES (300, 'first')", &[]);
    let first = tokio::time::timeout(Duration::from_secs(30), first).await;
    let to_first_write = promoted.elapsed();
    assert!(matches!(first, Ok(Ok(1))), "first write: {first:?}");
    // The reader endpoint still has the other replica (streaming from the dead writer): asked
    // now, since it counts as lagging `max_replica_lag` (2 s) after the new writer moved past
    // it (asked at the end, a loaded run could be later than that and wait 30 s for a reader).
    assert_eq!(scalar(&rc, "SELECT pg_is_in_recovery()").await, "t");
    tokio::task::block_in_place(|| wait_readyz(admin, 200, 10));
    println!(
        "failover: probe interval {interval}, first write through sluice {to_first_write:?} after promotion"
    );

    for (i, w) in waiting.into_iter().enumerate() {
        let waited = w.await.unwrap();
        assert!(waited.is_ok(), "waiting client {i}: {waited:?}");
    }
    // The transaction that was open gets one error, and its connection goes on.
    let e = cut.batch_execute("INSERT INTO t VALUES (101, 'cut')").await;
    assert_eq!(
        e.map_err(|e| code(&e)),
        Err("40001".to_owned()),
        "log:\n{}",
        proxy.log_contents()
    );
    assert_eq!(
        scalar(&cut, "SELECT count(*) FROM t WHERE id >= 100 AND id < 200").await,
        "0"
    );
    assert_eq!(scalar(&cut, "SELECT pg_is_in_recovery()").await, "f");
    // Idle clients kept their settings and prepared statements on the new writer.
    for (i, (c, insert)) in idle.iter().enumerate() {
        let i = i as i32;
        assert_eq!(
            scalar(c, "SHOW statement_timeout").await,
            format!("{}ms", 12_345 + i)
        );
        c.batch_execute("BEGIN").await.unwrap();
        c.execute(insert, &[&(10 + i), &"after"]).await.unwrap();
        c.batch_execute("COMMIT").await.unwrap();
    }
    let new_primary = cluster.member(1);
    let count = |sql: &str| new_primary.psql_db(APPDB, sql).trim().to_owned();
    assert_eq!(
        count("SELECT count(*) FROM t WHERE who = 'before'"),
        "4",
        "committed before the kill"
    );
    assert_eq!(count("SELECT count(*) FROM t WHERE who = 'after'"), "4");
    assert_eq!(count("SELECT count(*) FROM t WHERE who = 'waited'"), "3");
    let log = proxy.log_contents();
    assert!(log.contains("writer elected"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_reader_endpoint_spreads_and_skips_a_lagging_replica() {
    let mut cluster = PgCluster::start(2);
    cluster.primary().psql_db(
        APPDB,
        "CREATE TABLE w (id serial PRIMARY KEY); GRANT ALL ON w, w_id_seq TO app;",
    );
    cluster.wait_caught_up();
    let yaml = cluster_config("postgres", &cluster.addrs(), "100ms", "");
    let proxy = Sluice::start(&yaml);
    let reader = proxy.listen_addrs()[1].port();
    let replicas = [cluster.member(1).port(), cluster.member(2).port()];
    let ports = |clients: Vec<Client>| async move {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..5 {
            for c in &clients {
                let p: u16 = scalar(c, "SELECT inet_server_port()")
                    .await
                    .parse()
                    .unwrap();
                *seen.entry(p).or_insert(0) += 1;
            }
        }
        seen
    };
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(reader).await);
    }
    let seen = ports(clients).await;
    let mut both = replicas.to_vec();
    both.sort_unstable();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        both,
        "both replicas serve: {seen:?}"
    );

    // Replica 1 stops replaying while the writer keeps writing: beyond max_replica_lag (2s)
    // it is skipped.
    tokio::task::block_in_place(|| cluster.pause_replay(1));
    let w = client(proxy.listen_addrs()[0].port()).await;
    for _ in 0..30 {
        w.batch_execute("INSERT INTO w DEFAULT VALUES")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(reader).await);
    }
    let seen = ports(clients).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![replicas[1]],
        "lagging replica skipped: {seen:?}"
    );

    tokio::task::block_in_place(|| cluster.resume_replay(1));
    cluster.wait_caught_up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = client(reader).await;
        let seen = ports(vec![c]).await;
        if seen.contains_key(&replicas[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica never rejoined: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_split_endpoint_reads_its_own_writes_even_from_a_lagging_replica() {
    let mut cluster = PgCluster::start(1);
    cluster.primary().psql_db(
        APPDB,
        "CREATE TABLE r (id int); CREATE TABLE lit (v text); GRANT ALL ON r, lit TO app;",
    );
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("postgres", &cluster.addrs(), "100ms", ""));
    let (primary, replica) = (cluster.member(0).port(), cluster.member(1).port());
    let c = client(proxy.listen_addrs()[2].port()).await;
    let read = |sql: &'static str| {
        let c = &c;
        async move {
            let rows = c
                .simple_query(&format!("BEGIN READ ONLY; {sql}; COMMIT"))
                .await
                .unwrap();
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap()
        }
    };
    let port = |s: String| s.parse::<u16>().unwrap();
    assert_eq!(
        port(read("SELECT inet_server_port()").await),
        replica,
        "read-only goes to the reader"
    );
    assert_eq!(
        scalar(&c, "SELECT inet_server_port()").await,
        primary.to_string(),
        "the rest to the writer"
    );
    // Words in literals and comments do not make a transaction read-only (a replica would
    // refuse these writes with 25006).
    for sql in [
        "BEGIN; INSERT INTO lit VALUES ('READ ONLY'); COMMIT;",
        "/* read only */ INSERT INTO lit VALUES ('x')",
        "BEGIN /* READ ONLY */; INSERT INTO lit VALUES ($$BEGIN READ ONLY$$); COMMIT",
        "START TRANSACTION ISOLATION LEVEL READ COMMITTED; INSERT INTO lit VALUES (E'\\' READ ONLY'); COMMIT",
    ] {
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(scalar(&c, "SELECT count(*) FROM lit").await, "4");

    // Each read right after a write sees it; the replica serves once it has replayed it.
    let mut by_replica = 0;
    for n in 1..=10 {
        c.batch_execute("INSERT INTO r VALUES (1)").await.unwrap();
        let seen = read("SELECT count(*)::text || ' ' || inet_server_port() FROM r").await;
        let (count, at) = seen.split_once(' ').unwrap();
        assert_eq!(count, n.to_string(), "a read after a write saw stale data");
        by_replica += usize::from(port(at.to_owned()) == replica);
    }
    assert!(
        by_replica > 0,
        "the replica never served a read after a write"
    );

    // A replica that stopped replaying is never used for a read after a write: the writer is.
    tokio::task::block_in_place(|| cluster.pause_replay(1));
    for n in 11..=13 {
        c.batch_execute("INSERT INTO r VALUES (1)").await.unwrap();
        let seen = read("SELECT count(*)::text || ' ' || inet_server_port() FROM r").await;
        assert_eq!(seen, format!("{n} {primary}"));
    }
    tokio::task::block_in_place(|| cluster.resume_replay(1));
    cluster.wait_caught_up();
    // A read-only session default sends plain statements to the reader too.
    c.batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while scalar(&c, "SELECT inet_server_port()").await != replica.to_string() {
        assert!(
            Instant::now() < deadline,
            "a read-only session never reached the reader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
