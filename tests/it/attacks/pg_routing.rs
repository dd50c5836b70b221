//! Attacks through what a Postgres session may set or send: a startup `search_path` that
//! shadows the functions and types sluice's own queries use, and writes dressed as reads for
//! the reader and split endpoints.

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::failover::cluster_config;
use crate::support::client::code;
use crate::support::cluster::PgCluster;
use crate::support::postgres::{APP, APPDB};
use crate::support::sluice::Sluice;

async fn client_with(port: u16, options: &str) -> Client {
    let dsn = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={APPDB} connect_timeout=10 \
         options='{options}'",
        APP.0, APP.1
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn first(c: &Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

/// Functions and a type in schema `evil` named like the catalog's, each recording its call.
const SHADOWS: &str = "
CREATE SCHEMA evil; GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (fn pg_catalog.text); GRANT ALL ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.spy(f pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO evil.calls VALUES (f); RETURN true; END$$;
CREATE FUNCTION evil.current_setting(pg_catalog.text, boolean) RETURNS pg_catalog.text
  LANGUAGE sql AS $$SELECT 'evil' WHERE evil.spy('current_setting')$$;
CREATE FUNCTION evil.current_setting(pg_catalog.text) RETURNS pg_catalog.text
  LANGUAGE sql AS $$SELECT 'evil' WHERE evil.spy('current_setting')$$;
CREATE FUNCTION evil.set_config(pg_catalog.text, pg_catalog.text, boolean)
  RETURNS pg_catalog.text LANGUAGE sql AS $$SELECT 'evil' WHERE evil.spy('set_config')$$;
CREATE FUNCTION evil.pg_current_wal_insert_lsn() RETURNS pg_lsn
  LANGUAGE sql AS $$SELECT '0/1'::pg_catalog.pg_lsn WHERE evil.spy('lsn')$$;
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS
  $$SELECT x FROM pg_catalog.unnest($1) AS x WHERE evil.spy('unnest')$$;
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.spy('text'));
CREATE TABLE t (id int); GRANT ALL ON t TO app;
";

/// PgBouncer CVE-2025-12819: a startup `search_path` put objects ahead of `pg_catalog` that
/// PgBouncer's own query then ran. sluice's queries on a session's connection (reading back
/// settings, replaying them, the split endpoint's WAL position) name `pg_catalog` themselves,
/// so nothing the client defined runs in them or fools what they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2025_12819_a_startup_search_path_never_reaches_sluices_own_queries() {
    let cluster = PgCluster::start(1);
    cluster.primary().psql_db(APPDB, SHADOWS);
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("postgres", &cluster.addrs(), "100ms", ""));
    let options = "-c search_path=evil,pg_catalog -c work_mem=3MB";
    for port in [
        proxy.listen_addrs()[0].port(),
        proxy.listen_addrs()[2].port(),
    ] {
        let c = client_with(port, options).await;
        c.batch_execute("SET statement_timeout = '7s'")
            .await
            .unwrap();
        for i in 0..3 {
            c.batch_execute(&format!("INSERT INTO public.t VALUES ({i})"))
                .await
                .unwrap();
            assert_eq!(
                first(&c, "BEGIN READ ONLY; SHOW statement_timeout; COMMIT").await,
                "7s"
            );
            assert_eq!(first(&c, "SHOW work_mem").await, "3MB");
        }
        assert_eq!(first(&c, "SHOW search_path").await, "evil,pg_catalog");
    }
    assert_eq!(
        cluster
            .primary()
            .psql_db(APPDB, "SELECT pg_catalog.count(*) FROM evil.calls"),
        "0",
        "sluice's queries ran the client's functions: {}",
        cluster
            .primary()
            .psql_db(APPDB, "SELECT fn FROM evil.calls")
    );
}

/// ProxySQL CVE-2026-48774: a write behind a read (`SELECT 1; DELETE ...`, a data-modifying
/// CTE) was taken for a read and sent to a replica. sluice's split endpoint sends only
/// transactions that are read-only by the server's own rules to readers, so these run on the
/// writer; a read-only transaction with a write fails as it would on a direct connection, and
/// the reader endpoint's replicas refuse writes themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_48774_writes_dressed_as_reads_never_run_as_reads() {
    let cluster = PgCluster::start(1);
    cluster.primary().psql_db(
        APPDB,
        "CREATE TABLE t (id int); GRANT ALL ON t TO app; INSERT INTO t SELECT pg_catalog.generate_series(1, 5);",
    );
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("postgres", &cluster.addrs(), "100ms", ""));
    let split = client_with(proxy.listen_addrs()[2].port(), "").await;
    split
        .batch_execute("SELECT 1; DELETE FROM t WHERE id = 1")
        .await
        .unwrap();
    split
        .batch_execute("/* read only */ WITH d AS (DELETE FROM t WHERE id = 2 RETURNING *) SELECT count(*) FROM d")
        .await
        .unwrap();
    let refused = split
        .batch_execute("BEGIN READ ONLY; DELETE FROM t WHERE id = 3; COMMIT")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "25006");
    split.batch_execute("ROLLBACK").await.unwrap();
    let reader = client_with(proxy.listen_addrs()[1].port(), "").await;
    let refused = reader
        .batch_execute("SELECT 1; DELETE FROM t WHERE id = 4")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "25006");
    assert_eq!(
        cluster
            .primary()
            .psql_db(APPDB, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "3,4,5"
    );
}
