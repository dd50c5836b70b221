//! The MySQL engine end to end: the mariadb CLI, PyMySQL, mysql-connector-python (both auth
//! plugins) and sysbench through sluice in front of a private MariaDB, over small pools whose
//! size the server's processlist must never exceed; tracked state, pins and KILL QUERY per
//! session; wrong passwords, missing schemas and garbage bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::drivers::{Run, run_sampling_with, script};
use crate::support::mariadb::{APP, MY_APPDB, MY_OTHERDB, MariaDb, cli_at, sysbench};
use crate::support::sluice::{ProxyOptions, Sluice, config_for_mariadb};
use crate::support::tools::{self, command_output, free_port};

pub(crate) fn proxy(db: &MariaDb, pool: u32, auth: &str) -> Sluice {
    Sluice::start_for_mariadb(db, options(pool, auth))
}

fn options(pool: u32, auth: &str) -> ProxyOptions {
    ProxyOptions {
        pool_size: pool,
        borrow_timeout: "60s".into(),
        client_auth_type: auth.into(),
        ..ProxyOptions::default()
    }
}

pub fn python(name: &str, port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(tools::python());
    cmd.arg(script(name))
        .args(["127.0.0.1", &port.to_string(), APP.0, APP.1])
        .args(extra);
    cmd
}

/// Runs a client program while sampling `app`'s server connections; panics unless it passed.
pub(crate) fn run(db: &MariaDb, cmd: Command, limit_secs: u64) -> Run {
    let run = run_sampling_with(cmd, Duration::from_secs(limit_secs), || {
        db.connection_count(APP.0)
    });
    assert!(run.ok, "{run}");
    run
}

#[test]
fn cli_logins_errors_and_the_schema() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let port = sluice.port();
    let out = cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT DATABASE(), 1 + 1").unwrap();
    assert_eq!(out, "appdb\t2");
    let err = cli_at(port, APP.0, "wrong", MY_APPDB, "SELECT 1").unwrap_err();
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    let err = cli_at(port, "nobody", APP.1, "", "SELECT 1").unwrap_err();
    assert!(
        err.contains("ERROR 1045 (28000)"),
        "unknown users look like wrong passwords: {err}"
    );
    db.sql(&format!("DROP DATABASE {MY_OTHERDB}"));
    let err = cli_at(port, APP.0, APP.1, MY_OTHERDB, "SELECT 1").unwrap_err();
    assert!(err.contains("ERROR 1049 (42000)"), "{err}");
    // No schema at login, then USE: the session's schema, replayed wherever it runs.
    let out = cli_at(
        port,
        APP.0,
        APP.1,
        "",
        "SELECT DATABASE(); USE appdb; SELECT DATABASE()",
    )
    .unwrap();
    assert_eq!(out, "NULL\nappdb");
    let err = cli_at(port, APP.0, APP.1, MY_APPDB, "KILL QUERY 4000000").unwrap_err();
    assert!(err.contains("ERROR 1094"), "{err}");
    let err = cli_at(port, APP.0, APP.1, MY_APPDB, "KILL 1").unwrap_err();
    assert!(
        err.contains("ERROR 1235"),
        "a raw thread id never reaches the server: {err}"
    );
    // LOAD DATA LOCAL works as on the server itself (the CLI sends files by default);
    // tests/it/my_statements.rs has the details.
    let loaded = cli_at(
        port,
        APP.0,
        APP.1,
        MY_APPDB,
        "CREATE TABLE t_infile (v TEXT); LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t_infile; \
         SELECT count(*) > 0 FROM t_infile",
    );
    assert_eq!(loaded.as_deref(), Ok("1"), "{loaded:?}");
    assert_eq!(
        cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 7").unwrap(),
        "7"
    );
}

#[test]
fn pymysql_and_connector_over_a_small_pool() {
    let db = MariaDb::start();
    let pool = 4;
    let sluice = proxy(&db, pool, "mysql_native_password");
    let port = sluice.port();
    let load = run(
        &db,
        python("pymysql_load.py", port, &[MY_APPDB, "16", "30"]),
        240,
    );
    let r = load.result();
    assert_eq!(
        (r.int("threads_ok"), r.int("mismatches")),
        (16, 0),
        "{load}"
    );
    assert!(load.max_backends <= i64::from(pool), "{load}");
    let counted: i64 = db
        .sql("SELECT COUNT(*) FROM appdb.t_load WHERE thread < 100000")
        .parse()
        .unwrap();
    assert_eq!(
        counted,
        r.int("committed"),
        "every committed row is in the table"
    );

    let ps = run(
        &db,
        python(
            "myconnector_load.py",
            port,
            &[MY_APPDB, "8", "30", "mysql_native_password"],
        ),
        240,
    );
    let r = ps.result();
    assert_eq!((r.int("threads_ok"), r.int("mismatches")), (8, 0), "{ps}");
    assert!(r.int("executes") > r.int("prepares"), "{ps}");
    assert!(ps.max_backends <= i64::from(pool), "{ps}");
}

#[test]
fn caching_sha2_password_clients() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_caching_sha2_password");
    let port = sluice.port();
    assert_eq!(
        cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 3").unwrap(),
        "3"
    );
    let err = cli_at(port, APP.0, "wrong", MY_APPDB, "SELECT 1").unwrap_err();
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    for plugin in ["caching_sha2_password", "mysql_native_password"] {
        let r = run(
            &db,
            python("myconnector_load.py", port, &[MY_APPDB, "4", "10", plugin]),
            120,
        );
        assert_eq!(r.result().int("mismatches"), 0, "{r}");
    }
    let r = run(
        &db,
        python("pymysql_load.py", port, &[MY_APPDB, "4", "10"]),
        120,
    );
    assert_eq!(r.result().int("mismatches"), 0, "{r}");
}

#[test]
fn tracked_state_follows_its_session() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let r = run(
        &db,
        python("pymysql_state.py", sluice.port(), &[MY_APPDB, MY_OTHERDB]),
        120,
    );
    assert!(r.result().int("checks") >= 30, "{r}");
    assert!(r.max_backends <= 2, "{r}");
}

/// Temporary tables, user variables, named locks and HANDLERs pin and lift; so do the same pins
/// among look-alike texts (PyMySQL interpolates numbers of every length), which sluice's scan
/// memo answers without scanning.
#[test]
fn pins_keep_their_connection_and_lift() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let r = run(
        &db,
        python("pymysql_pins.py", sluice.port(), &[MY_APPDB]),
        120,
    );
    assert!(r.result().int("checks") >= 120, "{r}");
    let log = sluice.log_contents();
    for reason in [
        "temp_object",
        "user_variable",
        "advisory_lock",
        "server_cursor",
    ] {
        assert!(
            log.contains(&format!("reason={reason}")),
            "no {reason} pin logged:\n{log}"
        );
    }
}

#[test]
fn kill_query_stops_only_that_sessions_statement() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 3, "mysql_native_password");
    let r = run(
        &db,
        python("pymysql_kill.py", sluice.port(), &[MY_APPDB]),
        120,
    );
    assert_eq!(r.result().int("unknown_errno"), 1094, "{r}");
}

#[test]
fn sysbench_over_a_small_pool() {
    let db = MariaDb::start();
    let pool = 4;
    let sluice = proxy(&db, pool, "mysql_native_password");
    let common = |port: u16| sysbench(port, 1000);
    let (status, out, err) =
        command_output(common(db.port()).arg("oltp_read_write").arg("prepare"));
    assert!(status.success(), "sysbench prepare: {out}\n{err}");
    for (workload, mode) in [("oltp_read_write", "auto"), ("oltp_read_only", "disable")] {
        let mut cmd = common(sluice.port());
        cmd.args(["--threads=24", "--time=6", "--report-interval=0"])
            .arg(format!("--db-ps-mode={mode}"))
            .args([workload, "run"]);
        let r = run(&db, cmd, 120);
        let transactions: i64 = r
            .line("    transactions:")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(transactions > 100, "{workload}: {r}");
        assert!(r.max_backends <= i64::from(pool), "{workload}: {r}");
    }
}

/// Reads one packet (header + payload) from a raw socket.
pub(crate) fn read_packet(s: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn garbage_and_out_of_order_packets_end_only_their_session() {
    use sluice::mysql::wire::Greeting;
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let port = sluice.port();
    let addr = format!("127.0.0.1:{port}");

    // Garbage instead of a handshake response: an ERR packet, then the connection closes.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let greeting = Greeting::parse(&read_packet(&mut s)).unwrap();
    s.write_all(&[7, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(read_packet(&mut s)[0], 0xff, "an ERR packet");
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "then closed");
    drop(greeting);

    // A logged-in client that sends a command with a wrong sequence id.
    let mut s = raw_login(port, 0);
    s.write_all(&[
        9, 0, 0, 3, 3, b's', b'e', b'l', b'e', b'c', b't', b' ', b'1',
    ])
    .unwrap();
    let err = read_packet(&mut s);
    assert_eq!(
        (err[0], u16::from_le_bytes([err[1], err[2]])),
        (0xff, 1156),
        "{err:?}"
    );
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "then closed");

    // A half-sent packet followed by a hang-up, and random bytes from the start.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[200, 0, 0, 1, 1, 2]).unwrap();
    drop(s);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    drop(s);

    // sluice and other sessions are unaffected.
    assert_eq!(
        cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 11").unwrap(),
        "11"
    );
}

#[test]
fn borrow_and_idle_timeouts_fail_clearly() {
    borrow_and_idle_timeouts_with_parking("1s");
}

/// Parking off (as for TLS clients): the idle timeout comes from the session's own timer, kept
/// across the wait that gives its buffers back and moved to the long wait's end.
#[test]
fn borrow_and_idle_timeouts_fail_clearly_without_parking() {
    borrow_and_idle_timeouts_with_parking("0s");
}

fn borrow_and_idle_timeouts_with_parking(park_after: &str) {
    let db = MariaDb::start();
    let sluice = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            pool_size: 1,
            borrow_timeout: "1s".into(),
            client_auth_type: "mysql_native_password".into(),
            idle_client_timeout: Some("2s".into()),
            idle_client_park_after: Some(park_after.into()),
            ..ProxyOptions::default()
        },
    );
    let r = run(
        &db,
        python("pymysql_timeouts.py", sluice.port(), &[MY_APPDB, "2"]),
        60,
    );
    let s = r.result();
    assert_eq!(
        s.int("borrow"),
        9501,
        "RDS Proxy's borrow-timeout error: {r}"
    );
    let waited = s["waited"].as_f64().unwrap();
    assert!(
        (0.9..5.0).contains(&waited),
        "waited {waited}s for a 1s borrow timeout"
    );
    assert_eq!(
        s.int("after"),
        3,
        "the session outlives its failed borrow: {r}"
    );
    assert!(
        [4031, 2013, 2006].contains(&s.int("idle")),
        "idle clients are disconnected: {r}"
    );
    assert!(r.max_backends <= 1, "{r}");
}

/// Sessions that idle past the buffer shrink between commands, parking off (as for TLS
/// clients): replies and rewritten executes go through spare buffers handed from session to
/// session, each answer whole and the session's own.
#[test]
fn slow_sessions_get_whole_answers_on_spare_buffers() {
    let db = MariaDb::start();
    let sluice = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            pool_size: 1,
            client_auth_type: "mysql_native_password".into(),
            idle_client_park_after: Some("0s".into()),
            ..ProxyOptions::default()
        },
    );
    let r = run(
        &db,
        python("myconnector_slow.py", sluice.port(), &[MY_APPDB]),
        60,
    );
    assert_eq!(r.result().int("checks"), 24, "{r}");
    assert_eq!(r.result().int("failures"), 0, "{r}");
}

#[test]
fn change_user_starts_the_session_over() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let r = run(
        &db,
        python(
            "myconnector_change_user.py",
            sluice.port(),
            &[MY_APPDB, MY_OTHERDB],
        ),
        60,
    );
    assert_eq!(r.result().int("wrong_errno"), 1045, "{r}");
}

#[test]
fn multi_statements_and_multi_results_per_capability() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let r = run(
        &db,
        python("pymysql_multi.py", sluice.port(), &[MY_APPDB]),
        60,
    );
    assert!(r.result().int("checks") >= 7, "{r}");
}

#[test]
fn binary_statements_belong_to_their_schema_and_pin_like_text() {
    let db = MariaDb::start();
    // Two connections, reused most-recent-first: the sessions alternate on one of them, and the
    // one that pins does not block the other.
    let sluice = proxy(&db, 2, "mysql_native_password");
    let r = run(
        &db,
        python(
            "myconnector_schema.py",
            sluice.port(),
            &[MY_APPDB, MY_OTHERDB],
        ),
        120,
    );
    assert!(r.result().int("checks") >= 12, "{r}");
}

/// A client logged in to sluice by hand (mysql_native_password, schema appdb) with the base
/// capabilities plus `extra`.
pub(crate) fn raw_login(port: u16, extra: u32) -> TcpStream {
    use sluice::auth::mysql::MysqlKeys;
    use sluice::mysql::wire::{Greeting, HandshakeResponse, caps};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let greeting = Greeting::parse(&read_packet(&mut s)).unwrap();
    let response = HandshakeResponse {
        caps: caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::CONNECT_WITH_DB
            | extra,
        max_packet: 1 << 24,
        charset: 45,
        user: APP.0.into(),
        auth: MysqlKeys::derive(APP.1).native(&greeting.nonce),
        database: Some(MY_APPDB.into()),
        plugin: Some("mysql_native_password".into()),
        ..HandshakeResponse::default()
    };
    let mut out = Vec::new();
    response.write(&mut out, 1);
    s.write_all(&out).unwrap();
    assert_eq!(read_packet(&mut s)[0], 0x00, "logged in");
    s
}

/// Sends one command packet (sequence 0).
pub(crate) fn send_command(s: &mut TcpStream, payload: &[u8]) {
    let mut out = Vec::new();
    sluice::mysql::wire::write_packet(&mut out, 0, payload);
    s.write_all(&out).unwrap();
}

#[test]
fn a_client_gone_mid_reply_leaves_nothing_for_the_next_session() {
    use sluice::mysql::wire::caps;
    let db = MariaDb::start();
    let sluice = proxy(&db, 1, "mysql_native_password");
    let port = sluice.port();
    for _ in 0..3 {
        // A reply far larger than the socket buffers, then more results still to come: the
        // client leaves without reading any of it. (Whatever part of the reply is still on the
        // wire when sluice notices must never reach the next session.)
        let mut s = raw_login(port, caps::MULTI_STATEMENTS | caps::MULTI_RESULTS);
        send_command(
            &mut s,
            b"\x03SELECT REPEAT('x', 8000000); SELECT SLEEP(0.5); SELECT 'late'",
        );
        std::thread::sleep(Duration::from_millis(200));
        drop(s);
        // The only server connection: whoever gets it next must see its own reply only.
        let out = cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 42").unwrap();
        assert_eq!(out, "42");
    }
}

#[test]
fn execute_of_the_last_prepared_after_a_failed_prepare_runs_nothing() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let mut s = raw_login(sluice.port(), 0);
    send_command(&mut s, b"\x16SELECT 'previous'");
    assert_eq!(read_packet(&mut s)[0], 0x00, "prepared");
    // Its definitions: one column, then an EOF (no DEPRECATE_EOF asked for).
    read_packet(&mut s);
    read_packet(&mut s);
    send_command(&mut s, b"\x16SELEC broken");
    assert_eq!(read_packet(&mut s)[0], 0xff, "the prepare fails");
    // MariaDB's "the statement just prepared" id, as its connectors pipeline it.
    send_command(&mut s, b"\x17\xff\xff\xff\xff\x00\x01\x00\x00\x00");
    let reply = read_packet(&mut s);
    assert_eq!(
        reply[0], 0xff,
        "an error, not the previous statement's rows: {reply:?}"
    );
}

#[test]
fn tracked_state_matches_a_direct_connection_statement_by_statement() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 1, "mysql_native_password");
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("pymysql_equivalence.py"))
        .args([
            "127.0.0.1",
            &db.port().to_string(),
            &sluice.port().to_string(),
        ])
        .args([APP.0, APP.1, MY_APPDB, MY_OTHERDB]);
    let r = run_sampling_with(cmd, Duration::from_secs(60), || 0);
    assert!(r.ok, "{r}");
    assert!(r.result().int("checks") >= 30, "{r}");
}

#[test]
fn a_prepared_cursor_pins_until_its_statement_is_closed() {
    let db = MariaDb::start();
    let sluice = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            pool_size: 1,
            borrow_timeout: "2s".into(),
            client_auth_type: "mysql_native_password".into(),
            ..ProxyOptions::default()
        },
    );
    let port = sluice.port();
    let mut s = raw_login(port, 0);
    send_command(&mut s, b"\x16SELECT seq FROM seq_1_to_5");
    let ok = read_packet(&mut s);
    assert_eq!(ok[0], 0x00, "prepared");
    let id = [ok[1], ok[2], ok[3], ok[4]];
    read_packet(&mut s); // the column
    read_packet(&mut s); // EOF
    // Execute with CURSOR_TYPE_READ_ONLY: column definitions, then an EOF saying a cursor is open.
    let mut execute = vec![0x17];
    execute.extend_from_slice(&id);
    execute.extend_from_slice(&[0x01, 1, 0, 0, 0]);
    send_command(&mut s, &execute);
    assert_eq!(read_packet(&mut s), vec![1], "one column");
    read_packet(&mut s);
    let eof = read_packet(&mut s);
    assert_eq!(eof[0], 0xfe);
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & 0x40,
        0,
        "CURSOR_EXISTS"
    );
    let mut fetch = vec![0x1c];
    fetch.extend_from_slice(&id);
    fetch.extend_from_slice(&2u32.to_le_bytes());
    send_command(&mut s, &fetch);
    assert_eq!(read_packet(&mut s)[0], 0x00, "a binary row");
    assert_eq!(read_packet(&mut s)[0], 0x00, "a binary row");
    assert_eq!(read_packet(&mut s)[0], 0xfe, "then EOF");
    // The cursor lives on the only server connection: nobody else gets it meanwhile.
    let err = cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 1").unwrap_err();
    assert!(err.contains("ERROR 9501"), "{err}");
    // Closing the statement closes the cursor and gives the connection back.
    let mut close = vec![0x19];
    close.extend_from_slice(&id);
    send_command(&mut s, &close);
    assert_eq!(
        cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 1").unwrap(),
        "1"
    );
    assert!(sluice.log_contents().contains("reason=prepared_cursor"));
}

#[test]
fn a_killed_server_gives_every_client_an_error_and_sluice_survives() {
    let mut db = MariaDb::start();
    let mut sluice = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            pool_size: 2,
            borrow_timeout: "5s".into(),
            client_auth_type: "mysql_native_password".into(),
            ..ProxyOptions::default()
        },
    );
    let port = sluice.port();
    let dir = tempfile::tempdir().unwrap();
    let kill_file = dir.path().join("kill-now");
    let child = python(
        "pymysql_server_killed.py",
        port,
        &[MY_APPDB, kill_file.to_str().unwrap()],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !kill_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never asked for the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    db.kill9();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RESULT "), "{stdout}");
    eprintln!("{stdout}");
    assert!(sluice.try_wait().is_none(), "sluice is still running");
}

#[test]
fn a_session_parked_while_idle_comes_back_with_its_state() {
    let db = MariaDb::start();
    let (yaml, secrets) = config_for_mariadb(&db, &options(2, "mysql_native_password"));
    let admin = free_port();
    let yaml =
        format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\nidle_client_park_after: 1s\n");
    let sluice = Sluice::start_with_secrets(&yaml, &secrets);
    let admin = admin.to_string();
    let r = run(
        &db,
        python(
            "myconnector_parked.py",
            sluice.port(),
            &[MY_APPDB, admin.as_str()],
        ),
        60,
    );
    let s = r.result();
    assert!(s.int("checks") >= 4, "{r}");
    assert_eq!(s["before"].as_f64(), Some(0.0), "{r}");
    assert_eq!(
        s["during"].as_f64(),
        Some(2.0),
        "both idle sessions parked: {r}"
    );
    assert_eq!(s["after"].as_f64(), Some(0.0), "{r}");
}

/// The sidecar case: the instance is MariaDB's Unix-domain socket; the server sees sluice's
/// connections as `localhost` (a socket), never a TCP peer.
#[test]
fn an_instance_on_a_unix_socket_pools() {
    let db = MariaDb::start();
    let (yaml, secrets) = config_for_mariadb(&db, &options(2, "mysql_native_password"));
    let tcp = format!("{}:{}", db.host(), db.port());
    let socket = format!("unix:{}", db.socket().display());
    assert!(yaml.contains(&tcp));
    let sluice = Sluice::start_with_secrets(&yaml.replace(&tcp, &socket), &secrets);
    for i in 0..4 {
        assert_eq!(
            cli_at(
                sluice.port(),
                APP.0,
                APP.1,
                MY_APPDB,
                &format!("SELECT {i} + 40")
            )
            .unwrap(),
            (i + 40).to_string()
        );
    }
    let hosts =
        db.sql("SELECT DISTINCT host FROM information_schema.processlist WHERE user = 'app'");
    assert_eq!(
        hosts, "localhost",
        "sluice's pooled connections come over the socket"
    );
}
