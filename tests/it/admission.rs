//! Who gets in and how fast: `allowed_cidrs` closes other addresses before any protocol byte,
//! `max_client_connections` caps a user's sessions (53300), and `max_handshakes_per_second`
//! paces a connection storm instead of refusing it.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::support::client::{code, connect, scalar};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};

fn start(pg: &PgServer, endpoint_extra: &str, app_extra: &str) -> Sluice {
    let (yaml, secrets) = config_for(pg, &ProxyOptions::default());
    let yaml = yaml
        .replace(
            "    role: read_write\n",
            &format!("    role: read_write\n{endpoint_extra}"),
        )
        .replace(
            "  - username: app\n    client_auth: password\n",
            &format!("  - username: app\n    client_auth: password\n{app_extra}"),
        );
    Sluice::start_with_secrets(&yaml, &secrets)
}

#[test]
fn an_address_outside_allowed_cidrs_is_closed_before_any_byte() {
    let pg = PgServer::start();
    let proxy = start(&pg, "    allowed_cidrs: [10.0.0.0/8, \"fd00::/8\"]\n", "");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    // Closed by sluice without a word: EOF (or a reset), never protocol bytes.
    let _ = tcp.read_to_end(&mut got);
    assert!(got.is_empty(), "sluice sent {got:?}");
    let log = proxy.log_contents();
    assert!(log.contains("not in allowed_cidrs"), "{log}");

    let open = start(&pg, "    allowed_cidrs: [10.0.0.0/8, 127.0.0.1/32]\n", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(&open, APP, APPDB).await.unwrap();
        assert_eq!(scalar(&c, "select 1").await, "1");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_max_client_connections_is_refused_until_one_leaves() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", "    max_client_connections: 2\n");
    let first = connect(&proxy, APP, APPDB).await.unwrap();
    let second = connect(&proxy, APP, APPDB).await.unwrap();
    let third = connect(&proxy, APP, APPDB).await.unwrap_err();
    assert_eq!(code(&third), "53300", "{third}");
    assert_eq!(scalar(&second, "select 2").await, "2");
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = connect(&proxy, APP, APPDB).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = again.expect("the freed place was never given back");
    assert_eq!(scalar(&again, "select 3").await, "3");
    // Other users are not counted against app.
    let monitor = connect(&proxy, crate::support::postgres::MONITOR, "postgres").await;
    assert!(monitor.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_is_paced_not_refused() {
    let pg = PgServer::start();
    let proxy = start(&pg, "    max_handshakes_per_second: 5\n", "");
    let started = Instant::now();
    let mut logins = Vec::new();
    for _ in 0..15 {
        let proxy_port = proxy.port();
        logins.push(tokio::spawn(async move {
            let conn = format!(
                "host=127.0.0.1 port={proxy_port} user={} password={} dbname={APPDB} connect_timeout=20",
                APP.0, APP.1
            );
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.simple_query("select 1").await.map(|_| ())
        }));
    }
    for login in logins {
        login.await.unwrap().unwrap();
    }
    // A burst of 5, then 10 more at 5 a second.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "15 logins at 5/s took {took:?}"
    );
}
