//! Logins the server refuses, through both engines with real drivers: every client waiting for
//! the pool hears the refusal from the one login refused, as each would at once from a direct
//! connection, and the refusal is not remembered once the server relents.

use crate::my_proxy::{python, run};
use crate::pg_config::until;
use crate::support::client::{code, connect, scalar};
use crate::support::mariadb::{MY_APPDB, MariaDb};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::free_port;

/// Sessions waiting for a server connection now, all pools together.
fn waiters(admin: u16) -> f64 {
    let (_, scrape) = crate::metrics::get(admin, "/metrics");
    scrape
        .lines()
        .filter(|l| l.starts_with("sluice_database_connection_waiters{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How the test makes the server refuse `app`'s logins, and how it stops.
struct Refusal {
    refuse: String,
    relent: String,
    /// What the server logs for each login it refuses.
    logged: &'static str,
    /// What each waiting client gets.
    code: &'static str,
}

/// A server that refuses the pool's login answers every client waiting for that pool, as a
/// direct connection would answer each at once, and as PgBouncer answers its waiting clients
/// with the server's error: with one login at a time, each waiting client otherwise heard the
/// refusal only from a login of its own, one after another. The refusal is not remembered: a
/// client after the server relents is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_answers_every_client_waiting_for_the_pool() {
    refused_burst(Refusal {
        refuse: "ALTER ROLE app CONNECTION LIMIT 0".into(),
        relent: "ALTER ROLE app CONNECTION LIMIT -1".into(),
        logged: "too many connections for role \"app\"",
        code: "53300",
    })
    .await;
}

/// The same when the database's password was changed but not sluice's secret: each waiting
/// client hears that sluice's secret was refused (08006), from one pool login (the secret is
/// read again, and no other version of it is there to try), until the password is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_server_no_longer_takes_answers_every_waiting_client() {
    refused_burst(Refusal {
        refuse: "ALTER ROLE app PASSWORD 'changed-behind-sluice'".into(),
        relent: format!("ALTER ROLE app PASSWORD '{}'", APP.1),
        logged: "password authentication failed for user \"app\"",
        code: "08006",
    })
    .await;
}

async fn refused_burst(r: Refusal) {
    const CLIENTS: usize = 20;
    let pg = PgServer::start();
    let admin = free_port();
    // The first waiter's borrow may wait while the others log in (SCRAM in a debug build).
    let (yaml, secrets) = config_for(
        &pg,
        &ProxyOptions {
            borrow_timeout: "60s".into(),
            ..ProxyOptions::default()
        },
    );
    let yaml = yaml.replace("max_connections: 5", "max_connections: 1")
        + &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    // The pool's one connection, held in a transaction; every client below waits for it.
    let first = connect(&proxy, APP, APPDB).await.unwrap();
    first.simple_query("begin; select 1").await.unwrap();
    pg.psql(&r.refuse);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = connect(&proxy, APP, APPDB).await.unwrap();
        clients.push(tokio::spawn(async move {
            c.simple_query("select 1").await.map(|_| ())
        }));
    }
    assert_eq!(
        until(CLIENTS as f64, || waiters(admin)).await,
        CLIENTS as f64
    );
    // The held connection ends; the pool, now empty, must log in again and is refused.
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND backend_type = 'client backend'",
    );
    assert!(first.simple_query("select 1").await.is_err());
    for c in clients {
        let err = c.await.unwrap().unwrap_err();
        assert_eq!(code(&err), r.code, "{err}");
    }
    let logins = pg.log_contents().matches(r.logged).count();
    assert!(
        (1..=2).contains(&logins),
        "{logins} pool logins refused for {CLIENTS} waiting clients"
    );
    // The metric counts server connections that could not be opened, not the sessions told.
    let (_, scrape) = crate::metrics::get(admin, "/metrics");
    assert_eq!(
        crate::metrics::sample(
            &scrape,
            r#"sluice_database_connections_setup_failed_total{target_group="pg"}"#
        ),
        Some(logins as f64)
    );
    pg.psql(&r.relent);
    let after = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&after, "select 2").await, "2");
}

/// The same with PyMySQL against MariaDB, the account locked: before, 20 waiting clients were
/// refused by 20 logins one after another.
#[test]
fn a_refused_login_answers_every_mysql_client_waiting_for_the_pool() {
    let db = MariaDb::start();
    let admin = free_port();
    let (yaml, secrets) = config_for_mariadb(
        &db,
        &ProxyOptions {
            pool_size: 1,
            borrow_timeout: "60s".into(),
            client_auth_type: "mysql_native_password".into(),
            ..ProxyOptions::default()
        },
    );
    let yaml = format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let socket = db.socket().display().to_string();
    let admin = admin.to_string();
    let args = [MY_APPDB, &socket, &admin, "20"];
    let r = run(&db, python("pymysql_refused.py", proxy.port(), &args), 120);
    let result = r.result();
    let shown = format!("{r}\nsluice log:\n{}", proxy.log_contents());
    assert_eq!(result["waiting"], 20.0, "{shown}");
    // ER_ACCOUNT_HAS_BEEN_LOCKED, the server's own errno, for each.
    assert_eq!(
        result["answers"],
        serde_json::json!({"4151": 20}),
        "{shown}"
    );
    let refused = result["refused"].as_i64().unwrap();
    assert!(
        (1..=4).contains(&refused),
        "{refused} logins refused for 20 waiting clients: {shown}"
    );
    assert_eq!(result["after"], 2, "{shown}");
}
