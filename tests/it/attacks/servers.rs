//! Malicious servers behind sluice: a fake PostgreSQL that bombs sluice's SCRAM login, and
//! tampering relays in front of real servers that answer with oversized, truncated or unasked
//! messages. Each may end only its own server connection.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::timeout;

use super::with_group;
use crate::my_proxy::{raw_login, read_packet, send_command};
use crate::support::client::{connect, connect_port, scalar};
use crate::support::fake::{
    FakeServer, Tamper, pg_auth, pg_message, pg_read, pg_startup, tampering_relay,
};
use crate::support::mariadb::MariaDb;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};

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
    let (yaml, evil_port) = with_group(&yaml, "postgres", &bomb.addr(), "");
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

/// The config of `opts` for `pg`, its one instance reached through `relay` instead.
fn through(yaml: &str, real: u16, relay: &FakeServer) -> String {
    yaml.replace(&format!(":{real}]"), &format!(":{}]", relay.port()))
}

/// A malicious or broken PostgreSQL: an ErrorResponse declaring 2 GiB, a reply cut in the
/// middle of a message, a ParseComplete nobody asked for, and rows sent unasked after a
/// transaction ended. Each ends that server connection only: its client gets an error or its
/// answer, sluice stays up, and the next session on the pool never sees the strays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_postgres_server_replies_end_only_their_own_connection() {
    let pg = PgServer::start();
    let stray = [
        pg_message(
            b'T',
            b"\0\x01?column?\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
        ),
        pg_message(b'D', b"\0\x01\0\0\0\x04LEAK"),
        pg_message(b'C', b"SELECT 1\0"),
        pg_message(b'Z', b"I"),
    ]
    .concat();
    let relay = tampering_relay(
        pg.port(),
        vec![
            (
                b"evil_big",
                Tamper::Replace(vec![b'E', 0x7f, 0xff, 0xff, 0xf0, b'S']),
            ),
            (
                b"evil_cut",
                Tamper::ReplaceAndClose(b"T\0\0\0\x30\0\x01colu".to_vec()),
            ),
            (
                b"evil_order",
                Tamper::Replace([pg_message(b'1', b""), pg_message(b'Z', b"I")].concat()),
            ),
            (
                b"evil_extra",
                Tamper::Append(stray, Duration::from_millis(300)),
            ),
        ],
    );
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(1));
    let mut proxy = Sluice::start_with_secrets(&through(&yaml, pg.port(), &relay), &secrets);
    let bystander = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&bystander, "select 'before'").await, "before");
    for marker in ["evil_big", "evil_cut", "evil_order"] {
        let c = connect(&proxy, APP, APPDB).await.unwrap();
        let sql = format!("select '{marker}'");
        let answer = timeout(Duration::from_secs(10), c.simple_query(&sql))
            .await
            .unwrap_or_else(|_| panic!("{marker}: no answer and no error"));
        assert!(
            answer.is_err(),
            "{marker}: a broken reply passed as an answer"
        );
        // The attacked session goes on, on a new server connection.
        let again = timeout(Duration::from_secs(10), scalar(&c, "select 'again'")).await;
        assert_eq!(again.as_deref(), Ok("again"), "{marker}");
    }
    let first = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&first, "select 'evil_extra'").await, "evil_extra");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let next = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(
        scalar(&next, "select 'clean'").await,
        "clean",
        "a stray reached the next session"
    );
    assert_eq!(scalar(&bystander, "select 'after'").await, "after");
    assert!(proxy.try_wait().is_none(), "sluice exited");
}

/// MySQL BACKRONYM (CVE-2015-3152) and PostgreSQL's `sslmode=require` downgrade: a server (or
/// a man in the middle) that refuses TLS while `server_tls` requires it gets nothing more, not
/// even the user name, and the client gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2015_3152_backronym_a_server_refusing_tls_gets_no_credentials() {
    let pg = PgServer::start();
    let refuses = FakeServer::start(|mut s: TcpStream, received: &Mutex<Vec<u8>>| {
        // pg_startup answers N to the SSLRequest; whatever follows is recorded.
        if let Some(startup) = pg_startup(&mut s) {
            received.lock().unwrap().extend(startup);
        }
    });
    let no_ssl = FakeServer::start(|mut s: TcpStream, received: &Mutex<Vec<u8>>| {
        let greeting = sluice::mysql::wire::Greeting {
            version: "5.5.5-10.11.0-MariaDB".into(),
            connection_id: 7,
            nonce: b"abcdefghijklmnopqrst".to_vec(),
            caps: sluice::mysql::wire::caps::PROTOCOL_41
                | sluice::mysql::wire::caps::SECURE_CONNECTION
                | sluice::mysql::wire::caps::PLUGIN_AUTH,
            charset: 45,
            status: 2,
            plugin: "mysql_native_password".into(),
        };
        let mut out = Vec::new();
        greeting.write(&mut out);
        let _ = s.write_all(&out);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        received.lock().unwrap().extend(rest);
    });
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let (yaml, pg_port) = with_group(
        &yaml,
        "postgres",
        &refuses.addr(),
        "    server_tls: { mode: require }\n",
    );
    let yaml = yaml.replacen("- name: evil", "- name: evil2", 1);
    let (yaml, my_port) = with_group(
        &yaml.replacen("  evil:\n", "  evil2:\n", 1).replacen(
            "target_group: evil\n",
            "target_group: evil2\n",
            1,
        ),
        "mysql",
        &no_ssl.addr(),
        "    server_tls: { mode: require }\n",
    );
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let login = timeout(Duration::from_secs(20), connect_port(pg_port, APP, APPDB)).await;
    assert!(
        matches!(login, Ok(Err(_))),
        "a login behind a TLS-refusing server must fail"
    );
    let my_login = timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            crate::support::mariadb::cli_at(my_port, APP.0, APP.1, "appdb", "SELECT 1")
        }),
    )
    .await;
    assert!(matches!(my_login, Ok(Ok(Err(_)))), "{my_login:?}");
    assert!(
        refuses.accepted() > 0 && no_ssl.accepted() > 0,
        "never asked"
    );
    for text in [refuses.received_text(), no_ssl.received_text()] {
        assert!(text.is_empty(), "sent after TLS was refused: {text:?}");
    }
    let good = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&good, "select 1").await, "1");
}

/// Runs `sql` on a raw MySQL session (no DEPRECATE_EOF): the rows' packets, or the ERR code.
fn my_query(s: &mut TcpStream, sql: &str) -> Result<Vec<Vec<u8>>, u16> {
    let mut payload = vec![3u8];
    payload.extend(sql.as_bytes());
    send_command(s, &payload);
    let first = read_packet(s);
    match first[0] {
        0xff => return Err(u16::from_le_bytes([first[1], first[2]])),
        0x00 => return Ok(Vec::new()),
        _ => {}
    }
    while read_packet(s)[0] != 0xfe {}
    let mut rows = Vec::new();
    loop {
        let p = read_packet(s);
        match p[0] {
            0xfe if p.len() < 9 => return Ok(rows),
            0xff => return Err(u16::from_le_bytes([p[1], p[2]])),
            _ => rows.push(p),
        }
    }
}

/// A malicious or broken MariaDB: a reply cut inside a packet, an OK with a sequence id out of
/// order, and an OK sent unasked after a reply. Each ends that server connection only; the
/// attacked session gets an ERR and goes on, the next session never reads the stray.
#[test]
fn malicious_mysql_server_replies_end_only_their_own_connection() {
    let db = MariaDb::start();
    let relay = tampering_relay(
        db.port(),
        vec![
            (b"evil_cut", Tamper::ReplaceAndClose(vec![9, 0, 0, 1, 1, 0])),
            (
                b"evil_order",
                Tamper::Replace(vec![7, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0]),
            ),
            (
                b"evil_extra",
                Tamper::Append(
                    vec![7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0],
                    Duration::from_millis(300),
                ),
            ),
        ],
    );
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::pool(1));
    let mut sluice = Sluice::start_with_secrets(&through(&yaml, db.port(), &relay), &secrets);
    let port = sluice.port();
    let mut bystander = raw_login(port, 0);
    assert!(my_query(&mut bystander, "SELECT 'before'").is_ok());
    for marker in ["evil_cut", "evil_order"] {
        let mut s = raw_login(port, 0);
        let answer = my_query(&mut s, &format!("SELECT '{marker}'"));
        assert!(
            answer.is_err(),
            "{marker}: a broken reply passed as an answer"
        );
        let again = my_query(&mut s, "SELECT 'again'").expect(marker);
        assert_eq!(again.len(), 1, "{marker}");
    }
    let mut first = raw_login(port, 0);
    assert_eq!(
        my_query(&mut first, "SELECT 'evil_extra'").unwrap().len(),
        1
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut next = raw_login(port, 0);
    let rows = my_query(&mut next, "SELECT 'clean'").expect("the next session");
    assert_eq!(rows.len(), 1, "a stray OK reached the next session");
    assert!(String::from_utf8_lossy(&rows[0]).contains("clean"));
    assert!(my_query(&mut bystander, "SELECT 'after'").is_ok());
    assert!(sluice.try_wait().is_none(), "sluice exited");
}
