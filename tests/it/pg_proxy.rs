//! Real clients through sluice: psql (also its Ctrl-C), pgbench in every query mode, connect
//! storms; the server never sees more connections than the pool allows and nothing committed is
//! lost.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools::{command_output, require};

/// A libpq client command aimed at sluice as `user`.
pub(crate) fn client(pg: &PgServer, proxy: &Sluice, program: &str, user: (&str, &str)) -> Command {
    let mut cmd = Command::new(pg.bin(program));
    libpq_env(&mut cmd, proxy, user);
    cmd
}

/// Points the libpq clients that `cmd` runs at sluice as `user`.
fn libpq_env(cmd: &mut Command, proxy: &Sluice, (user, password): (&str, &str)) {
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", proxy.port().to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", APPDB)
        .env("PGCONNECT_TIMEOUT", "10");
}

/// Samples the server's connection count for `user` until stopped; returns the maximum seen.
fn sample_backends(
    pg: &PgServer,
    user: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<i64> {
    let max = Arc::new(AtomicI64::new(0));
    let (port, dir) = (pg.port(), pg.socket_dir().to_owned());
    let psql = pg.bin("psql");
    std::thread::spawn(move || {
        let sql = format!(
            "select count(*) from pg_stat_activity where usename = '{user}' and backend_type = 'client backend'"
        );
        while !stop.load(Ordering::Relaxed) {
            let out = Command::new(&psql)
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-p",
                    &port.to_string(),
                    "-h",
                ])
                .arg(&dir)
                .args(["-c", &sql])
                .output();
            if let Ok(out) = out
                && let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>()
            {
                max.fetch_max(n, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        max.load(Ordering::Relaxed)
    })
}

#[test]
fn psql_scripts_copy_and_errors_work_through_sluice() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let script = "\
create table t (id int primary key, note text);
\\copy t (id) from program 'seq 1 1000'
select count(*), sum(id) from t;
begin;
insert into t values (5000, 'x');
select 1/0;
rollback;
select count(*) from t where id = 5000;
copy (select id from t where id <= 3 order by id) to stdout;
do $$ begin raise notice 'hello from %', current_user; end $$;
select current_setting('application_name');
";
    let file = proxy.dir().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let (status, out, err) = command_output(
        client(&pg, &proxy, "psql", APP)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=0", "-f"])
            .arg(&file)
            .env("PGAPPNAME", "psql-test"),
    );
    assert!(
        status.success(),
        "psql failed: {err}\n{}",
        proxy.log_contents()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["1000|500500", "0", "1", "2", "3", "psql-test"],
        "stderr: {err}"
    );
    assert!(err.contains("division by zero"), "{err}");
    assert!(err.contains("hello from app"), "notice forwarded: {err}");
}

/// Ctrl-C in psql while a query runs: psql sends a CancelRequest to sluice, which must reach the
/// server connection running that query; psql prints the error and the session goes on.
///
/// psql reading a pipe is a script to it: SIGINT cancels the query and then psql exits (status 3).
/// It stays only when stdin and stdout are terminals, so it runs under `script`, which gives it a
/// pty; a ^C byte written into the pty makes the terminal send SIGINT to psql, as a keyboard
/// Ctrl-C does. The pty also carries psql's stderr, so errors are read from stdout.
#[test]
fn psql_ctrl_c_cancels_the_query_and_the_session_goes_on() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let mut cmd = Command::new(require("script"));
    libpq_env(&mut cmd, &proxy, APP);
    // `exec`: no shell between the pty and psql that a SIGINT could kill.
    let psql = format!("exec {} -X -n -P pager=off", pg.bin("psql").display());
    cmd.args(["-q", "-e", "-c", &psql, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sleeping = |n: i64| {
        let sql = "select count(*) from pg_stat_activity where usename = 'app' \
                   and state = 'active' and query like 'select pg_sleep(30)%'";
        (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            pg.psql(sql) == n.to_string()
        })
    };
    stdin.write_all(b"select pg_sleep(30);\n").unwrap();
    let ran = sleeping(1);
    stdin.write_all(b"\x03").unwrap();
    let cancelled = ran && sleeping(0);
    if cancelled {
        stdin
            .write_all(b"select upper('still ' || 'alive');\n\\q\n")
            .unwrap();
    } else {
        let _ = child.kill();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let all = format!("{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(ran, "pg_sleep never ran on the server: {all}");
    assert!(cancelled, "pg_sleep still running after ^C: {all}");
    assert!(out.status.success(), "{all}");
    assert!(
        stdout.contains("canceling statement due to user request"),
        "{all}"
    );
    assert!(stdout.contains("STILL ALIVE"), "the session went on: {all}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {all}");
}

/// pgbench's tpcb-like script in all three query modes, 64 clients over a pool of 8.
#[test]
fn pgbench_all_modes_multiplex_64_clients_over_8_connections() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(
        &pg,
        ProxyOptions {
            pool_size: 8,
            borrow_timeout: "60s".into(),
            ..Default::default()
        },
    );
    let (status, _, err) =
        command_output(client(&pg, &proxy, "pgbench", APP).args(["-i", "-q", "-s", "1"]));
    assert!(status.success(), "pgbench -i through sluice: {err}");

    let mut processed_total = 0i64;
    for mode in ["simple", "extended", "prepared"] {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_backends(&pg, APP.0, stop.clone());
        let (status, out, err) = command_output(
            client(&pg, &proxy, "pgbench", APP)
                .args(["-n", "-M", mode, "-c", "64", "-j", "2", "-T", "4"]),
        );
        stop.store(true, Ordering::Relaxed);
        let max_backends = sampler.join().unwrap();
        assert!(
            status.success(),
            "pgbench -M {mode}: {out}\n{err}\n{}",
            proxy.log_contents()
        );
        assert!(
            !err.contains("abort") && !err.contains("error"),
            "pgbench -M {mode}: {err}"
        );
        let processed = processed(&out);
        assert!(
            processed > 64,
            "pgbench -M {mode} ran only {processed} transactions:\n{out}"
        );
        assert!(
            max_backends <= 8,
            "-M {mode}: {max_backends} server connections for a pool of 8"
        );
        assert!(
            max_backends >= 1,
            "-M {mode}: the sampler never saw a connection"
        );
        processed_total += processed;
    }
    // Every tpcb-like transaction inserts one history row: nothing committed was lost.
    let history: i64 = pg
        .psql_db(APPDB, "select count(*) from pgbench_history")
        .parse()
        .unwrap();
    assert_eq!(history, processed_total);
}

/// `-C`: a new client connection per transaction (the Lambda pattern), with MD5 and SCRAM.
#[test]
fn connect_storm_with_md5_and_scram() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let (status, _, err) =
        command_output(client(&pg, &proxy, "pgbench", APP).args(["-i", "-q", "-s", "1"]));
    assert!(status.success(), "{err}");
    pg.psql_db(
        APPDB,
        "grant select on all tables in schema public to md5user",
    );
    for user in [APP, MD5USER] {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_backends(&pg, user.0, stop.clone());
        let (status, out, err) = command_output(
            client(&pg, &proxy, "pgbench", user)
                .args(["-n", "-S", "-C", "-c", "16", "-j", "2", "-T", "3"]),
        );
        stop.store(true, Ordering::Relaxed);
        let max_backends = sampler.join().unwrap();
        assert!(status.success(), "{}: {out}\n{err}", user.0);
        assert!(processed(&out) > 100, "{}: {out}", user.0);
        assert!(
            max_backends <= 5,
            "{}: {max_backends} server connections",
            user.0
        );
    }
}

pub(crate) fn processed(pgbench_out: &str) -> i64 {
    pgbench_out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The sidecar case: the instance is PostgreSQL's Unix-domain socket. Sessions pool over it,
/// the server sees socket connections (no client address), and a cancel reaches the backend
/// through the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_a_unix_socket_pools_and_cancels() {
    let pg = PgServer::start();
    let (yaml, secrets) = crate::support::sluice::config_for(&pg, &ProxyOptions::pool(2));
    let tcp = format!("{}:{}", pg.host(), pg.port());
    let socket = format!("unix:{}/.s.PGSQL.{}", pg.socket_dir().display(), pg.port());
    assert!(yaml.contains(&tcp));
    let proxy = Sluice::start_with_secrets(&yaml.replace(&tcp, &socket), &secrets);
    let c = crate::support::client::connect(&proxy, APP, APPDB)
        .await
        .unwrap();
    let other = crate::support::client::connect(&proxy, APP, APPDB)
        .await
        .unwrap();
    c.batch_execute("SET application_name = 'over-the-socket'")
        .await
        .unwrap();
    assert_eq!(
        crate::support::client::scalar(&c, "SELECT current_setting('application_name')").await,
        "over-the-socket"
    );
    assert_eq!(
        crate::support::client::scalar(&other, "SELECT 'pooled'").await,
        "pooled"
    );
    let by_socket = pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND client_addr IS NULL",
    );
    let by_tcp = pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND client_addr IS NOT NULL",
    );
    assert!(by_socket.trim().parse::<u32>().unwrap() >= 1, "{by_socket}");
    assert_eq!(by_tcp.trim(), "0");

    let cancel = c.cancel_token();
    let slow = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the cancel reached the backend over the socket")
        .unwrap()
        .unwrap_err();
    assert_eq!(crate::support::client::code(&err), "57014");
}
