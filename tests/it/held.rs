//! Server connections the server ends while their session holds them idle in a transaction
//! (an idle-in-transaction timeout, a DBA's kill): the pool's slot comes free at once, as
//! PgBouncer's does, so other clients do not wait on a connection that is already gone; the
//! idle session learns of it at its next statement.

use std::time::Duration;

use crate::my_proxy::{python, run};
use crate::support::client::{code, connect};
use crate::support::mariadb::{MY_APPDB, MariaDb};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};

fn options(borrow_timeout: &str) -> ProxyOptions {
    ProxyOptions {
        pool_size: 1,
        borrow_timeout: borrow_timeout.into(),
        client_auth_type: "mysql_native_password".into(),
        ..ProxyOptions::default()
    }
}

/// MariaDB's `idle_transaction_timeout` ends A's server connection while A idles in its
/// transaction; B, asking after that, gets the pool's one slot although A never speaks again
/// until B is done.
#[test]
fn mariadb_ending_an_idle_transaction_frees_its_pool_slot() {
    let db = MariaDb::start();
    db.sql("SET GLOBAL idle_transaction_timeout = 1");
    let proxy = Sluice::start_for_mariadb(&db, options("5s"));
    let r = run(
        &db,
        python("pymysql_idle_cut.py", proxy.port(), &[MY_APPDB, "2.5"]),
        60,
    );
    let result = r.result();
    assert_eq!(
        result["b"], 0,
        "B waited for a connection already gone: {r}"
    );
    assert_eq!(result["cut"], 1213, "A's transaction rolled back: {r}");
}

/// The same with PostgreSQL's `idle_in_transaction_session_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ending_an_idle_transaction_frees_its_pool_slot() {
    let pg = PgServer::start();
    pg.psql("ALTER ROLE app SET idle_in_transaction_session_timeout = '1s'");
    let proxy = Sluice::start_for(&pg, options("5s"));
    let a = connect(&proxy, APP, APPDB).await.unwrap();
    a.simple_query("begin; select 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = connect(&proxy, APP, APPDB).await.unwrap();
    let got = b.simple_query("select 2").await;
    assert!(
        got.is_ok(),
        "B waited for a connection already gone: {got:?}\n{}",
        proxy.log_contents()
    );
    let err = a.simple_query("select 3").await.unwrap_err();
    assert_eq!(code(&err), "40001", "rolled back, retryable: {err}");
}
