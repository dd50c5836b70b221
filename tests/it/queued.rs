//! A request queued for a server connection (the pool busy, or the database away) that its client
//! gives up on: cancelled (a CancelRequest, `KILL QUERY`: a driver's query timeout) or abandoned
//! (the client hangs up). On a direct connection it would have been running and been stopped;
//! through sluice it is answered at once and never runs when a connection frees up. A client
//! that timed out and retried must not have its first attempt run too.

use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::NoTls;

use crate::my_proxy::{proxy, python, run};
use crate::support::client::{code, connect, scalar};
use crate::support::mariadb::{MY_APPDB, MariaDb};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_requests_cancelled_or_abandoned_while_queued_never_run() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            borrow_timeout: "60s".into(),
            ..ProxyOptions::pool(1)
        },
    );
    let holder = connect(&proxy, APP, APPDB).await.unwrap();
    holder
        .batch_execute("drop table if exists queued_t; create table queued_t (id int)")
        .await
        .unwrap();
    // The pool's only connection stays with this transaction.
    holder.batch_execute("begin; select 1").await.unwrap();

    // Cancelled: a driver's query timeout sends a CancelRequest for the waiting statement.
    let victim = connect(&proxy, APP, APPDB).await.unwrap();
    let token = victim.cancel_token();
    let waiting = tokio::spawn(async move {
        let got = victim.simple_query("insert into queued_t values (1)").await;
        (victim, got)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.unwrap();
    let (victim, got) = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the cancelled statement still waits 5 s after its cancel")
        .unwrap();
    let err = got.expect_err("the cancelled statement was answered");
    assert_eq!(code(&err), "57014", "{err}");

    // Abandoned: the client's socket closes while its statement waits.
    let dsn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={APPDB}",
        proxy.port(),
        APP.0,
        APP.1
    );
    let (leaver, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let left =
        tokio::spawn(async move { leaver.simple_query("insert into queued_t values (2)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.abort();
    left.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;

    holder.batch_execute("commit").await.unwrap();
    // Had either statement stayed queued, the freed connection would run it now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        scalar(&holder, "select count(*) from queued_t").await,
        "0",
        "{}",
        proxy.log_contents()
    );
    // The cancelled session goes on.
    assert_eq!(scalar(&victim, "select 5").await, "5");
}

#[test]
fn mariadb_commands_killed_or_abandoned_while_queued_never_run() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 1, "mysql_native_password");
    run(
        &db,
        python("pymysql_queued.py", sluice.port(), &[MY_APPDB]),
        120,
    );
}
