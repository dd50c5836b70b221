//! Session state through transaction pooling: parameters follow their session onto whatever
//! connection it borrows and behave as on a direct connection, pins come and go with the state
//! that caused them, and no session ever sees another's.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::metrics::{get, sample};
use crate::support::client::{code, connect, scalar};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::free_port;

/// Every row value (or the SQLSTATE) a simple query returns, as one string.
async fn outcome(c: &Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => format!("error {}", code(&e)),
    }
}

/// With a pool of one held by a pinned session, a new session's query fails with the borrow
/// timeout's SQLSTATE. A borrow timeout ends the waiting session (as PgBouncer's
/// query_wait_timeout does), so each probe is a fresh session.
async fn blocked(proxy: &Sluice) -> String {
    let b = connect(proxy, APP, APPDB).await.unwrap();
    code(&b.simple_query("select 1").await.unwrap_err())
}

/// A new session's query runs: the pool's one connection is free.
async fn free(proxy: &Sluice) -> String {
    let b = connect(proxy, APP, APPDB).await.unwrap();
    scalar(&b, "select 'free'").await
}

async fn direct(pg: &PgServer) -> Client {
    let dsn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={APPDB}",
        pg.port(),
        APP.0,
        APP.1
    );
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Statements whose outcome depends on parameters set, rolled back, reset and discarded.
const SCRIPT: &[&str] = &[
    "show statement_timeout",
    "set statement_timeout = '1234ms'",
    "show statement_timeout",
    "begin",
    "set statement_timeout = '5s'",
    "rollback",
    "show statement_timeout",
    "begin",
    "set local work_mem = '1MB'",
    "show work_mem",
    "commit",
    "show work_mem",
    "begin; set statement_timeout = '2s'; savepoint s; set statement_timeout = '3s'; \
     rollback to s; commit",
    "show statement_timeout",
    "set statement_timeout = 'bogus'",
    "show statement_timeout",
    "select set_config('app.tenant', 'x', false)",
    "select current_setting('app.tenant')",
    "begin",
    "select set_config('app.tenant', 'y', true)",
    "commit",
    "select current_setting('app.tenant')",
    "set search_path to \"My Schema\", public",
    "show search_path",
    "set time zone 'Asia/Tokyo'",
    "select extract(timezone_hour from now())::text",
    "set datestyle = 'German'",
    "select '2024-01-02'::date::text",
    "set session characteristics as transaction isolation level repeatable read",
    "show transaction_isolation",
    "reset statement_timeout",
    "show statement_timeout",
    "set application_name = 'changed'",
    "show application_name",
    "reset all",
    "show search_path",
    "select current_setting('app.tenant', true)",
    "show application_name",
    "show transaction_isolation",
    "set statement_timeout = '4321ms'",
    "set app.tenant = 'z'",
    "discard all",
    "show statement_timeout",
    "select coalesce(current_setting('app.tenant', true), 'unset')",
];

/// The script through sluice, on one shared server connection that another session keeps
/// using with its own parameters in between, gives exactly what a direct connection gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_behave_as_on_a_direct_connection_while_the_connection_is_shared() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(1));
    let plain = direct(&pg).await;
    let a = connect(&proxy, APP, APPDB).await.unwrap();
    let b = connect(&proxy, APP, APPDB).await.unwrap();
    b.simple_query("set statement_timeout = '777ms'; set app.tenant = 'b'")
        .await
        .unwrap();
    let mut in_transaction = false;
    for sql in SCRIPT {
        let want = outcome(&plain, sql).await;
        let got = outcome(&a, sql).await;
        assert_eq!(got, want, "{sql}");
        match *sql {
            "begin" => in_transaction = true,
            "commit" | "rollback" => in_transaction = false,
            _ => {}
        }
        if in_transaction {
            continue; // a holds the one connection until its transaction ends
        }
        // The other session on the same connection keeps its own values throughout.
        assert_eq!(
            outcome(
                &b,
                "select current_setting('statement_timeout') || current_setting('app.tenant')"
            )
            .await,
            "777msb",
            "after {sql}"
        );
    }
    assert_eq!(
        pg.backend_count(APP.0, APPDB),
        2,
        "the direct connection and sluice's one"
    );
    let log = proxy.log_contents();
    assert!(!log.contains("session pinned"), "{log}");
}

/// Many sessions with their own parameters on a pool of 2: every read sees the session's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_see_each_others_parameters() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = connect(&proxy, APP, APPDB).await.unwrap();
        tasks.push(tokio::spawn(async move {
            c.simple_query(&format!(
                "set statement_timeout = '{}ms'; select set_config('app.who', '{i}', false)",
                1001 + i
            ))
            .await
            .unwrap();
            for _ in 0..40 {
                let seen = scalar(
                    &c,
                    "select current_setting('app.who') || '/' || current_setting('statement_timeout')",
                )
                .await;
                assert_eq!(seen, format!("{i}/{}ms", 1001 + i));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fresh = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&fresh, "show statement_timeout").await, "0");
    assert_eq!(
        scalar(
            &fresh,
            "select coalesce(current_setting('app.who', true), '')"
        )
        .await,
        ""
    );
    assert!(pg.backend_count(APP.0, APPDB) <= 2);
}

/// With a pool of one, a pinned session holds the only connection: another session's query
/// times out until the state is gone and the pin lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_lift_when_the_state_that_caused_them_is_gone() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            pool_size: 1,
            borrow_timeout: "1s".into(),
            ..ProxyOptions::default()
        },
    );
    let a = connect(&proxy, APP, APPDB).await.unwrap();
    let cases = [
        ("create temp table t (x int)", "drop table t"),
        (
            "select pg_advisory_lock(42)",
            "select pg_advisory_unlock(42)",
        ),
        // A lone LISTEN does not pin (below); one among other statements runs on the server.
        ("select 1; listen chan", "unlisten *"),
        (
            "begin; declare c cursor with hold for select 1; commit",
            "close c",
        ),
        ("prepare q as select 1", "deallocate q"),
        (
            "create temp table u (x int); select pg_advisory_lock(7)",
            "drop table u; select pg_advisory_unlock_all()",
        ),
    ];
    for (pin, unpin) in cases {
        a.simple_query(pin).await.unwrap();
        assert_eq!(blocked(&proxy).await, "53300", "{pin} pins");
        a.simple_query(unpin).await.unwrap();
        assert_eq!(free(&proxy).await, "free", "{unpin} unpins");
    }
    a.simple_query("listen lone").await.unwrap();
    assert_eq!(free(&proxy).await, "free", "a lone LISTEN does not pin");
    a.simple_query("unlisten lone").await.unwrap();
    // Half the state gone is not enough.
    a.simple_query("create temp table v (x int); listen other")
        .await
        .unwrap();
    a.simple_query("drop table v").await.unwrap();
    assert_eq!(blocked(&proxy).await, "53300");
    a.simple_query("unlisten other").await.unwrap();
    assert_eq!(free(&proxy).await, "free");
    // Gone by the end of its own transaction: never held past it.
    a.simple_query("begin; create temp table w (x int) on commit drop; commit")
        .await
        .unwrap();
    assert_eq!(free(&proxy).await, "free");
    // a's temp tables are really gone.
    let b = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(
        scalar(
            &b,
            "select count(*) from pg_class where relpersistence = 't'"
        )
        .await,
        "0"
    );
    let log = proxy.log_contents();
    for reason in [
        "temp_object",
        "advisory_lock",
        "listen",
        "cursor_with_hold",
        "sql_prepare",
    ] {
        assert!(
            log.contains(&format!("reason=\"{reason}\""))
                || log.contains(&format!("reason={reason}")),
            "{reason} logged:\n{log}"
        );
    }
    assert!(log.contains("session unpinned"), "{log}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A session idle for over a second parks (no task; its socket watched by the lot) and comes
/// back with everything it had: tracked parameters, prepared statements, its cancel key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_parked_while_idle_comes_back_with_its_state() {
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(2));
    let admin = free_port();
    let yaml =
        format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\nidle_client_park_after: 1s\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let parked = |scrape: &str| sample(scrape, "sluice_client_sessions_parked");
    let c = connect(&proxy, APP, APPDB).await.unwrap();
    c.batch_execute("SET search_path = parked_schema, public; SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let statement = c.prepare("SELECT $1::int + 1").await.unwrap();
    let other = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(parked(&get(admin, "/metrics").1), Some(0.0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        parked(&get(admin, "/metrics").1),
        Some(2.0),
        "both idle sessions parked"
    );
    let row = c.query_one(&statement, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(
        outcome(&c, "SHOW search_path").await,
        "parked_schema, public"
    );
    assert_eq!(outcome(&c, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(
        outcome(&other, "SHOW TimeZone").await,
        outcome(&direct(&pg).await, "SHOW TimeZone").await
    );
    assert_eq!(parked(&get(admin, "/metrics").1), Some(0.0));
    // A parked session's long query can still be cancelled by its key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cancel = c.cancel_token();
    let slow = tokio::spawn(async move { outcome(&c, "SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "error 57014");
}

/// A driver's unnamed statements (tokio-postgres `query_typed`: Parse of the unnamed statement,
/// Bind, Execute, Sync, as psycopg and node-postgres send their parameterized queries): the
/// same text executed again and again, then an advisory lock through the same path, pins, and
/// the unlock, repeated, lifts the pin. sluice remembers the last Parse's scan; a remembered
/// answer for another text would let the lock's connection go to the next session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_repeating_unnamed_statements_still_pins_on_an_advisory_lock() {
    use tokio_postgres::types::Type;
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            pool_size: 1,
            borrow_timeout: "1s".into(),
            ..ProxyOptions::default()
        },
    );
    let a = connect(&proxy, APP, APPDB).await.unwrap();
    let typed = async |sql: &str| {
        let rows = a.query_typed(sql, &[(&42i64, Type::INT8)]).await.unwrap();
        rows.len()
    };
    for _ in 0..3 {
        assert_eq!(typed("select $1::int8 + 1").await, 1);
    }
    assert_eq!(free(&proxy).await, "free", "plain selects do not pin");
    assert_eq!(typed("select pg_advisory_lock($1)").await, 1);
    assert_eq!(blocked(&proxy).await, "53300", "the lock pins its session");
    for _ in 0..2 {
        assert_eq!(typed("select pg_advisory_unlock($1)").await, 1);
    }
    assert_eq!(free(&proxy).await, "free", "the unlock lifts the pin");
    assert_eq!(typed("select $1::int8 + 1").await, 1);
    // The lock is gone from the server, not left on a connection another session borrows.
    let b = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(
        scalar(
            &b,
            "select count(*) from pg_locks where locktype = 'advisory'"
        )
        .await,
        "0"
    );
}
