//! Config reloads on a running sluice with live clients: SIGHUP adds a user, a second endpoint
//! and connection slots while pgbench runs (no client dropped, no transaction failed); an
//! invalid file is refused and the running config stays; the opt-in file watch removes an
//! endpoint without closing the session on it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lifecycle::signal;
use crate::metrics::get;
use crate::pg_proxy::client;
use crate::support::client::scalar;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::{append_file, command_output, free_port};

const NEWUSER: (&str, &str) = ("newuser", "new-secret");

fn new_user_entry() -> String {
    format!(
        "  - username: {0}\n    client_auth: password\n    secret: file:secrets.yaml#{0}\n",
        NEWUSER.0
    )
}

/// Waits until the log has `needle` `times` times.
fn wait_log(proxy: &Sluice, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.log_contents().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{times}) in the log:\n{}",
            proxy.log_contents()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn psql_at(
    pg: &PgServer,
    port: u16,
    (user, password): (&str, &str),
    sql: &str,
) -> Result<String, String> {
    let (status, out, err) = command_output(
        Command::new(pg.bin("psql"))
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", user, "-d", APPDB, "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5"),
    );
    if status.success() {
        Ok(out.trim().to_owned())
    } else {
        Err(err)
    }
}

/// max_connections of the pool on the first instance, as /v1/pools reports it.
fn pool_cap(admin: u16) -> u64 {
    let (_, body) = get(admin, "/v1/pools");
    let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
    pools[0]["max_connections"].as_u64().unwrap()
}

#[test]
fn sighup_adds_a_user_an_endpoint_and_slots_while_pgbench_runs() {
    let pg = PgServer::start();
    pg.psql(&format!(
        "CREATE ROLE {} LOGIN PASSWORD '{}'",
        NEWUSER.0, NEWUSER.1
    ));
    let (base, secrets) = config_for(&pg, &ProxyOptions::pool(3));
    let admin = free_port();
    let admin_line = format!("admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&format!("{base}{admin_line}"), &secrets);
    let port = proxy.port();
    assert!(
        psql_at(&pg, port, NEWUSER, "SELECT 1").is_err(),
        "not configured yet"
    );
    assert_eq!(pool_cap(admin), 3);

    let (status, _, err) =
        command_output(client(&pg, &proxy, "pgbench", APP).args(["-i", "-q", "-s", "1"]));
    assert!(status.success(), "pgbench -i: {err}");
    let bench = client(&pg, &proxy, "pgbench", APP)
        .args(["-n", "-c", "8", "-j", "2", "-T", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // The new user's secret, a second endpoint and more slots, all in one reload.
    append_file(
        &proxy.dir().join("secrets.yaml"),
        &format!(
            "{0}: {{username: {0}, password: {1}}}\n",
            NEWUSER.0, NEWUSER.1
        ),
    );
    let second = free_port();
    let grown = format!("{base}{}{admin_line}", new_user_entry())
        .replace("max_connections: 3", "max_connections: 5")
        .replacen(
            "target_groups:",
            &format!("  - {{ name: second, listen: 127.0.0.1:{second}, target_group: pg }}\ntarget_groups:"),
            1,
        );
    std::fs::write(proxy.config_path(), &grown).unwrap();
    signal(proxy.pid(), "HUP");
    wait_log(&proxy, "config reloaded", 1);
    assert_eq!(
        psql_at(&pg, port, NEWUSER, "SELECT current_user").unwrap(),
        NEWUSER.0
    );
    assert_eq!(psql_at(&pg, second, APP, "SELECT 2").unwrap(), "2");
    assert_eq!(pool_cap(admin), 5);

    // A broken file is refused with its problem; the running config stays.
    std::fs::write(
        proxy.config_path(),
        grown.replace("role: read_write", "role: sideways"),
    )
    .unwrap();
    signal(proxy.pid(), "HUP");
    wait_log(&proxy, "config reload refused", 1);
    assert!(
        proxy.log_contents().contains("endpoints[0].role"),
        "{}",
        proxy.log_contents()
    );
    assert_eq!(psql_at(&pg, port, NEWUSER, "SELECT 1").unwrap(), "1");

    // A valid file whose new secret cannot be read is refused as a whole: the endpoint it also
    // adds is not bound, and the old secret keeps working.
    let third = free_port();
    let unreadable = grown
        .replace("secrets.yaml#newuser", "secrets.yaml#nobody")
        .replacen(
            "target_groups:",
            &format!(
                "  - {{ name: third, listen: 127.0.0.1:{third}, target_group: pg }}\ntarget_groups:"
            ),
            1,
        );
    std::fs::write(proxy.config_path(), &unreadable).unwrap();
    signal(proxy.pid(), "HUP");
    wait_log(&proxy, "config reload refused", 2);
    assert!(
        psql_at(&pg, third, APP, "SELECT 1").is_err(),
        "a refused reload bound {third}"
    );
    assert_eq!(psql_at(&pg, port, NEWUSER, "SELECT 1").unwrap(), "1");

    let out = bench.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "pgbench: {stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("abort"),
        "a pgbench client was dropped: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watch_removes_an_endpoint_but_not_its_sessions() {
    let pg = PgServer::start();
    let (base, secrets) = config_for(&pg, &ProxyOptions::pool(3));
    let second = free_port();
    let with_second = base.replacen(
        "target_groups:",
        &format!(
            "  - {{ name: second, listen: 127.0.0.1:{second}, target_group: pg }}\ntarget_groups:"
        ),
        1,
    );
    let proxy = Sluice::start_with_env(&with_second, &secrets, &[("SLUICE_WATCH_CONFIG", "true")]);
    let dsn = format!(
        "host=127.0.0.1 port={second} user={} password={} dbname={APPDB}",
        APP.0, APP.1
    );
    let (session, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    session.simple_query("SELECT 1").await.unwrap();

    std::fs::write(proxy.config_path(), &base).unwrap();
    wait_log(&proxy, "config reloaded", 1);
    assert!(proxy.log_contents().contains("file changed"));
    assert!(
        tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .is_err(),
        "the removed endpoint still accepts"
    );
    // The session that came in through it goes on.
    assert_eq!(scalar(&session, "SELECT 41 + 1").await, "42");
    assert_eq!(psql_at(&pg, proxy.port(), APP, "SELECT 3").unwrap(), "3");
}
