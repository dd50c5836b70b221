//! Malicious servers behind sluice: a fake PostgreSQL that bombs sluice's SCRAM login, and
//! tampering relays in front of real servers that answer with oversized, truncated or unasked
//! messages. Each may end only its own server connection.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::timeout;

use super::with_group;
use crate::support::client::{connect, connect_port, scalar};
use crate::support::fake::{FakeServer, pg_auth, pg_read, pg_startup};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};

/// A fake PostgreSQL that offers SCRAM-SHA-256 and answers the client-first with
/// `server_first(client_nonce)`, then records whatever the client sends next.
fn scram_server(server_first: impl Fn(&str) -> String + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |mut s: TcpStream, received: &Mutex<Vec<u8>>| {
        if pg_startup(&mut s).is_none() {
            return;
        }
        let _ = s.write_all(&pg_auth(10, b"SCRAM-SHA-256\0\0"));
        let Some((b'p', body)) = pg_read(&mut s) else {
            return;
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        let Some(nonce) = text.split("r=").nth(1) else {
            return;
        };
        let _ = s.write_all(&pg_auth(11, server_first(nonce).as_bytes()));
        if let Some((_, answer)) = pg_read(&mut s) {
            received.lock().unwrap().extend(answer);
        }
    })
}

/// PgBouncer CVE-2026-6666 (and 6665, 6669): a server asking for 2^31 PBKDF2 iterations, with
/// a megabyte of nonce. sluice runs on one worker thread by default on this machine, so a
/// derivation on it would stall every session of every pool for hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_6666_a_servers_scram_iteration_bomb_stalls_no_other_pool() {
    let pg = PgServer::start();
    let bomb = scram_server(|nonce| {
        format!(
            "r={nonce}{},s=c2FsdHNhbHQ=,i=2147483647",
            "A".repeat(1 << 20)
        )
    });
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let (yaml, evil_port) = with_group(&yaml, "postgres", &bomb.addr());
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let good = timeout(Duration::from_secs(10), connect(&proxy, APP, APPDB))
        .await
        .expect("the healthy pool's login stalled")
        .unwrap();
    // Clients of the bombing group: each needs a server login of its own.
    let victims: Vec<_> = (0..3)
        .map(|_| tokio::spawn(connect_port(evil_port, APP, APPDB)))
        .collect();
    for i in 0..30 {
        let answer = timeout(Duration::from_secs(5), scalar(&good, "select 1")).await;
        assert_eq!(
            answer.as_deref(),
            Ok("1"),
            "query {i} of the healthy pool stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for v in victims {
        let login = timeout(Duration::from_secs(20), v).await;
        assert!(
            matches!(login, Ok(Ok(Err(_)))),
            "a login behind the bombing server must fail, and soon"
        );
    }
    assert!(bomb.accepted() > 0, "the fake server was never asked");
    assert!(
        bomb.received_text().is_empty(),
        "sluice answered an unbounded iteration count: {}",
        bomb.received_text().len()
    );
    assert!(
        proxy.log_contents().contains("iteration"),
        "the refusal is logged"
    );
}
