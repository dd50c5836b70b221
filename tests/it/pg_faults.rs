//! What must never happen through sluice: bad input harming anyone, dirty or foreign connections
//! handed out, state leaking between sessions; plus cancel and the borrow timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::support::client::{code, connect, scalar};
use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};

/// A raw TCP conversation: sends `bytes`, returns what sluice answers before closing.
fn raw(proxy: &Sluice, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub(crate) fn startup(user: &str, db: &str) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_get_postgres_sqlstates_and_harm_nobody() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let good = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(
        code(&connect(&proxy, ("app", "wrong"), APPDB).await.unwrap_err()),
        "28P01"
    );
    assert_eq!(
        code(&connect(&proxy, ("nobody", "x"), APPDB).await.unwrap_err()),
        "28P01"
    );
    assert_eq!(
        code(
            &connect(&proxy, ("md5user", "wrong"), APPDB)
                .await
                .unwrap_err()
        ),
        "28P01"
    );
    assert_eq!(
        code(&connect(&proxy, APP, "no_such_db").await.unwrap_err()),
        "3D000"
    );
    assert_eq!(
        code(&connect(&proxy, APP, "no_such_db").await.unwrap_err()),
        "3D000",
        "and again"
    );
    // Garbage instead of a startup packet, a bogus protocol version, a lying length.
    let http = raw(&proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(http.is_empty() || http[0] == b'E', "{http:?}");
    let v2 = raw(&proxy, &[0, 0, 0, 8, 0, 2, 0, 0]);
    assert_eq!(v2.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&v2).contains("0A000"));
    // An impossible length is closed without a word, as PostgreSQL does ("invalid length of
    // startup packet" is only logged): the peer may not speak the protocol at all.
    let huge = raw(&proxy, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]);
    assert!(huge.is_empty(), "{huge:?}");
    let no_user = raw(&proxy, &startup("", APPDB));
    assert!(String::from_utf8_lossy(&no_user).contains("28000"));
    // The session opened first never noticed.
    assert_eq!(scalar(&good, "select 41 + 1").await, "42");
    assert_eq!(
        proxy.log_contents().matches("app-secret").count(),
        0,
        "no secret in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_end_only_their_session() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let bystander = connect(&proxy, APP, APPDB).await.unwrap();
    scalar(&bystander, "select 1").await;
    for bad in [
        // A Query declaring 1 GiB: refused before sluice buffers it.
        vec![b'Q', 0x40, 0, 0, 0, b's'],
        // A length shorter than the length word itself.
        vec![b'Q', 0, 0, 0, 2],
        // A Parse whose statement name is not terminated.
        vec![b'P', 0, 0, 0, 7, b'a', b'b', b'c'],
    ] {
        let mut s = login_raw(&proxy);
        s.write_all(&bad).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("54000") || text.contains("08P01"),
            "{bad:?} -> {text}"
        );
    }
    assert_eq!(
        scalar(&bystander, "select 'still here'").await,
        "still here"
    );
    assert!(pg.backend_count("app", APPDB) <= 5);
}

/// Logs in as `app` over a raw socket (SCRAM via tokio-postgres is not raw): uses md5user's
/// MD5 login, which is simple to script.
fn login_raw(proxy: &Sluice) -> TcpStream {
    login_raw_port(proxy.port())
}

/// Answers the MD5 challenge for md5user and reads up to ReadyForQuery; returns what came
/// after the password (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery).
pub(crate) fn finish_md5_login(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 13];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'R');
    let salt = [head[9], head[10], head[11], head[12]];
    let hash = postgres_protocol::authentication::md5_hash(
        MD5USER.0.as_bytes(),
        MD5USER.1.as_bytes(),
        salt,
    );
    let mut msg = vec![b'p'];
    msg.extend(((hash.len() + 5) as u32).to_be_bytes());
    msg.extend(hash.as_bytes());
    msg.push(0);
    s.write_all(&msg).unwrap();
    // Read up to ReadyForQuery.
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(&[b'Z', 0, 0, 0, 5, b'I']) {
        s.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_transaction_leaves_no_dirty_connection() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(1));
    let setup = connect(&proxy, APP, APPDB).await.unwrap();
    setup
        .simple_query("create table ledger (id int)")
        .await
        .unwrap();
    pg.psql_db(APPDB, "grant all on ledger to md5user");
    drop(setup);
    for round in 0..3 {
        let mut s = login_raw(&proxy);
        let q = format!("begin; insert into ledger values ({round}); select pg_sleep(0.01)\0");
        let mut msg = vec![b'Q'];
        msg.extend(((q.len() + 4) as u32).to_be_bytes());
        msg.extend(q.as_bytes());
        s.write_all(&msg).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf); // some of the answer, then vanish with the transaction open
        drop(s);
        let next = connect(&proxy, MD5USER, APPDB).await.unwrap();
        assert_eq!(
            scalar(&next, "select count(*) from ledger").await,
            "0",
            "round {round}"
        );
        assert_eq!(
            scalar(
                &next,
                "select coalesce(txid_current_if_assigned()::text, 'none')"
            )
            .await,
            "none"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_never_reaches_another_session() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let a = connect(&proxy, APP, APPDB).await.unwrap();
    let b = connect(&proxy, APP, APPDB).await.unwrap();
    a.simple_query("set statement_timeout = '1234ms'")
        .await
        .unwrap();
    a.simple_query("create temp table mine (x int)")
        .await
        .unwrap();
    a.prepare("select 1 as from_a").await.unwrap();
    for _ in 0..20 {
        assert_ne!(scalar(&b, "show statement_timeout").await, "1234ms");
        assert_eq!(
            scalar(&b, "select coalesce(to_regclass('mine')::text, 'none')").await,
            "none"
        );
    }
    assert_eq!(
        scalar(&a, "show statement_timeout").await,
        "1234ms",
        "a keeps its own state"
    );
    assert_eq!(scalar(&a, "select to_regclass('mine')::text").await, "mine");
    // An aborted transaction's connection is never handed out still aborted.
    let c = connect(&proxy, APP, APPDB).await.unwrap();
    c.simple_query("begin").await.unwrap();
    assert!(c.simple_query("select 1/0").await.is_err());
    drop(c);
    for _ in 0..5 {
        assert_eq!(scalar(&b, "select 'usable'").await, "usable");
    }
    assert!(proxy.log_contents().contains("session pinned"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query_only() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let busy = connect(&proxy, APP, APPDB).await.unwrap();
    let other = connect(&proxy, APP, APPDB).await.unwrap();
    let token = busy.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = busy.simple_query("select pg_sleep(20)").await;
        (r.map(|_| ()), busy)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.unwrap();
    let (result, busy) = sleeper.await.unwrap();
    assert_eq!(code(&result.unwrap_err()), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(scalar(&busy, "select 'after cancel'").await, "after cancel");
    // Cancelling an idle session is harmless to everyone.
    other.cancel_token().cancel_query(NoTls).await.unwrap();
    assert_eq!(scalar(&other, "select 'fine'").await, "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_cost_no_server_connection_and_borrow_timeout_names_the_pool() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            pool_size: 1,
            borrow_timeout: "1s".into(),
            ..Default::default()
        },
    );
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(connect(&proxy, APP, APPDB).await.unwrap());
    }
    assert!(
        pg.backend_count("app", APPDB) <= 1,
        "30 idle clients, at most the one cached connection"
    );
    idle[0].simple_query("begin").await.unwrap();
    let err = idle[1].simple_query("select 1").await.unwrap_err();
    assert!(format!("{err:?}").contains("53300"), "{err:?}");
    assert!(
        format!("{err:?}").contains(APPDB),
        "names the pool: {err:?}"
    );
    idle[0].simple_query("commit").await.unwrap();
    assert_eq!(scalar(&idle[2], "select 'next'").await, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_timeout_closes_only_idle_sessions() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            idle_client_timeout: Some("1500ms".into()),
            // The idle one parks first: its timeout then comes from the lot.
            idle_client_park_after: Some("1s".into()),
            ..Default::default()
        },
    );
    let idle = connect(&proxy, APP, APPDB).await.unwrap();
    let busy = connect(&proxy, APP, APPDB).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(scalar(&busy, "select 'alive'").await, "alive");
    }
    assert!(
        idle.is_closed() || idle.simple_query("select 1").await.is_err(),
        "the idle session was closed"
    );
    assert!(proxy.log_contents().contains("57P05"));
}

/// Sessions that never park (parking off, as for TLS clients): a slow client whose buffers are
/// dropped between transactions keeps working with spare ones, large answers included, and an
/// idle one is closed by the same timer when its timeout comes, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_sessions_that_never_park_keep_their_limits() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            idle_client_timeout: Some("3s".into()),
            idle_client_park_after: Some("0s".into()),
            ..Default::default()
        },
    );
    let idle = connect(&proxy, APP, APPDB).await.unwrap();
    let slow = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&idle, "select 'once'").await, "once");
    let started = std::time::Instant::now();
    // Every 1.4 s: past the one second after which a session drops its buffers.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1400)).await;
        let sql = format!("select length(repeat('x', 20000) || '{round}')");
        assert_eq!(scalar(&slow, &sql).await, "20001");
        assert_eq!(
            scalar(&slow, &format!("select 'round {round}'")).await,
            format!("round {round}")
        );
        if round == 0 {
            assert!(
                !idle.is_closed(),
                "the idle session is not closed before its timeout ({:?})",
                started.elapsed()
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        idle.is_closed() || idle.simple_query("select 1").await.is_err(),
        "the idle session was closed at its timeout"
    );
    assert!(proxy.log_contents().contains("57P05"));
    assert_eq!(scalar(&slow, "select 'still here'").await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_killed_by_the_server_are_replaced_unseen() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(3));
    let clients = [
        connect(&proxy, APP, APPDB).await.unwrap(),
        connect(&proxy, APP, APPDB).await.unwrap(),
        connect(&proxy, APP, APPDB).await.unwrap(),
    ];
    for c in &clients {
        c.simple_query("begin; select 1").await.unwrap(); // three connections open at once
    }
    for c in &clients {
        c.simple_query("commit").await.unwrap();
    }
    let killed = pg.psql(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'",
    );
    assert_eq!(killed, "3");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for c in &clients {
        assert_eq!(scalar(c, "select 'survived'").await, "survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_in_a_pinned_session_behaves_as_on_postgres() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let dsn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={APPDB} application_name=keepme",
        proxy.port(),
        APP.0,
        APP.1
    );
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.simple_query("create temp table scratch (x int)")
        .await
        .unwrap(); // pins
    let stmt = c.prepare("select 42::int").await.unwrap();
    assert_eq!(c.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 42);
    c.simple_query("DISCARD ALL").await.unwrap();
    assert_eq!(
        scalar(&c, "select coalesce(to_regclass('scratch')::text, 'gone')").await,
        "gone"
    );
    let err = c.query_one(&stmt, &[]).await.unwrap_err();
    assert_eq!(
        code(&err),
        "26000",
        "the statement is gone, as after DISCARD ALL on Postgres"
    );
    assert_eq!(
        scalar(&c, "show application_name").await,
        "keepme",
        "RESET ALL keeps startup values"
    );
    let again = c.prepare("select 43::int").await.unwrap();
    assert_eq!(c.query_one(&again, &[]).await.unwrap().get::<_, i32>(0), 43);
}

/// A client reading a large result slowly keeps sluice's output above its high-water mark; the
/// rest of the result must still arrive once it drains (no lost wake-up), and so must COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_reach_a_slow_reader_and_large_copies_pass() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let reader = tokio::task::spawn_blocking({
        let port = proxy.port();
        move || {
            let mut s = login_raw_port(port);
            let q = "select repeat('x', 2000) from generate_series(1, 10000)\0";
            let mut msg = vec![b'Q'];
            msg.extend(((q.len() + 4) as u32).to_be_bytes());
            msg.extend(q.as_bytes());
            s.write_all(&msg).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut total = 0usize;
            let mut tail = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf).expect("the rest of the result arrives");
                assert!(n > 0, "closed after {total} bytes");
                total += n;
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 16 {
                    tail.drain(..tail.len() - 16);
                }
                if tail.ends_with(&[b'Z', 0, 0, 0, 5, b'I']) {
                    return total;
                }
                std::thread::sleep(Duration::from_millis(2)); // a slow reader
            }
        }
    });
    let total = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(total > 20_000_000, "{total} bytes");

    let psql = |args: &[&str]| {
        let mut cmd = std::process::Command::new(pg.bin("psql"));
        cmd.env("PGPASSWORD", APP.1)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &proxy.port().to_string(),
            ])
            .args(["-U", APP.0, "-d", APPDB])
            .args(args);
        crate::support::tools::command_output(&mut cmd)
    };
    let (status, _, err) = psql(&["-c", "create table big (a int, b text)"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = psql(&[
        "-c",
        "\\copy big from program 'seq -f \"%g\tsome text to make the rows longer\" 1 400000'",
    ]);
    assert!(status.success(), "{err}");
    let (status, out, err) = psql(&["-c", "select count(*), sum(a) from big"]);
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "400000|80000200000");
    let (status, out, err) = psql(&["-c", "\\copy big to program 'wc -l'"]);
    assert!(status.success(), "{err}");
    assert!(out.is_empty() || out.contains("400000"), "{out}");
}

pub(crate) fn login_raw_port(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&startup(MD5USER.0, APPDB)).unwrap();
    finish_md5_login(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_query_fails_that_statement_only() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let victim = connect(&proxy, APP, APPDB).await.unwrap();
    let bystander = connect(&proxy, APP, APPDB).await.unwrap();
    let running = tokio::spawn(async move {
        let r = victim.simple_query("select pg_sleep(30)").await;
        (victim, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = pg.psql(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where query = 'select pg_sleep(30)'",
    );
    assert_eq!(killed, "1");
    let (victim, result) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    // The server's FATAL ends sluice's connection, not the client's session: the statement gets
    // "outcome unknown" and the session goes on, on another server connection.
    assert_eq!(code(&result.unwrap_err()), "08007");
    assert_eq!(scalar(&victim, "select 'still here'").await, "still here");
    assert_eq!(scalar(&bystander, "select 'unharmed'").await, "unharmed");
    let fresh = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&fresh, "select 'new session'").await, "new session");
}
