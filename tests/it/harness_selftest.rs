//! Proves the harness itself works: servers start, roles log in, everything is torn down.

use std::time::{Duration, Instant};

use crate::support::postgres::{APP, APPDB, MD5USER, MONITOR, PLAINUSER, PgOptions, PgServer};
use crate::support::sluice::{self, ProxyOptions, Sluice};
use crate::support::tools;

async fn connect(
    pg: &PgServer,
    (user, password): (&str, &str),
    db: &str,
) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&pg.conn_str(user, password, db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in to {db}: {e}"));
    tokio::spawn(conn);
    client
}

#[test]
fn psql_runs_as_superuser() {
    let began = Instant::now();
    let pg = PgServer::start();
    eprintln!("PgServer::start took {:?}", began.elapsed());
    assert_eq!(pg.psql("select 1"), "1");
    assert_eq!(pg.psql("show fsync"), "off");
    assert_eq!(pg.psql("show listen_addresses"), "127.0.0.1");
    assert_eq!(pg.psql("show port"), pg.port().to_string());
    assert_eq!(pg.psql_db(APPDB, "select current_database()"), APPDB);
    assert!(pg.bin("pgbench").is_file());
    assert!(pg.log_contents().contains("ready to accept connections"));
}

#[test]
fn options_reach_postgresql_conf() {
    let pg = PgServer::start_with(PgOptions {
        max_connections: 20,
        extra_conf: vec!["work_mem = '7MB'".into()],
    });
    assert_eq!(pg.psql("show max_connections"), "20");
    assert_eq!(pg.psql("show work_mem"), "7MB");
}

#[tokio::test]
async fn roles_log_in_over_tcp() {
    let pg = PgServer::start();
    let stored = pg.psql(
        "select rolname || ':' || split_part(rolpassword, '$', 1) from pg_authid \
         where rolname in ('app', 'md5user', 'plainuser') order by 1",
    );
    assert!(stored.contains("app:SCRAM-SHA-256"), "{stored}");
    assert!(stored.contains("plainuser:SCRAM-SHA-256"), "{stored}");
    assert!(
        stored.lines().any(|l| l.starts_with("md5user:md5")),
        "{stored}"
    );

    for (role, db) in [
        (APP, APPDB),
        (MD5USER, APPDB),
        (PLAINUSER, "postgres"),
        (MONITOR, "postgres"),
    ] {
        let client = connect(&pg, role, db).await;
        let row = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role.0);
    }
    let monitor = connect(&pg, MONITOR, "postgres").await;
    let row = monitor
        .query_one("select pg_has_role('monitor', 'pg_monitor', 'member')", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    let wrong =
        tokio_postgres::connect(&pg.conn_str(APP.0, "nope", APPDB), tokio_postgres::NoTls).await;
    let err = wrong.err().expect("wrong password must be rejected");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("password authentication failed"),
        "{err:?}"
    );
}

#[tokio::test]
async fn backend_count_sees_client_connections() {
    let pg = PgServer::start();
    assert_eq!(pg.backend_count(APP.0, APPDB), 0);
    let a = connect(&pg, APP, APPDB).await;
    let b = connect(&pg, APP, APPDB).await;
    assert_eq!(pg.backend_count(APP.0, APPDB), 2);
    drop((a, b));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg.backend_count(APP.0, APPDB) != 0 {
        assert!(Instant::now() < deadline, "backends did not go away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn drop_stops_server_and_removes_dir() {
    let pg = PgServer::start();
    let dir = pg.socket_dir().to_path_buf();
    let port = pg.port();
    assert!(dir.join("data/postmaster.pid").is_file());
    drop(pg);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

#[test]
fn drop_during_panic_cleans_up() {
    let dir = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let pg = PgServer::start();
        *dir.lock().unwrap() = Some(pg.socket_dir().to_path_buf());
        panic!("test failure while a server runs");
    });
    assert!(result.is_err());
    let dir = dir.lock().unwrap().take().unwrap();
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn proxy_config_follows_the_contract() {
    let pg = PgServer::start();
    let opts = ProxyOptions {
        idle_client_timeout: Some("2s".into()),
        ..ProxyOptions::default()
    };
    let (yaml, secrets) = sluice::config_for(&pg, &opts);
    for needle in [
        "name: writer",
        "role: read_write",
        "engine: postgres",
        &format!("instances: [127.0.0.1:{}]", pg.port()),
        "max_connections: 5",
        "connection_borrow_timeout: 10s",
        "client_password_auth_type: postgres_scram_sha_256",
        "client_password_auth_type: postgres_md5",
        "secret: file:secrets.yaml#plainuser",
        "idle_client_timeout: 2s",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    assert!(
        secrets.contains("app: {username: app, password: app-secret}"),
        "{secrets}"
    );
    let addrs = sluice::listen_addrs(&yaml);
    assert_eq!(addrs.len(), 1);
    assert_eq!(
        sluice::listen_addrs("admin: { listen: 127.0.0.1:9930 }")[0].port(),
        9930
    );
}

#[test]
#[should_panic(expected = "sluice exited early")]
fn sluice_start_reports_early_exit() {
    // An unknown key: a real sluice rejects the config and exits non-zero.
    let port = tools::free_port();
    Sluice::start(&format!(
        "endpoints:\n  - name: writer\n    listen: 127.0.0.1:{port}\nnot_a_key: true\n"
    ));
}

#[test]
fn tools_are_found() {
    assert!(tools::pgjdbc_jar().is_file());
    assert!(tools::java().is_file());
    assert_ne!(tools::free_port(), tools::free_port());
}

#[test]
fn python_has_psycopg() {
    let python = tools::python();
    let out = tools::run_ok(
        std::process::Command::new(python)
            .args(["-c", "import psycopg; print(psycopg.__version__)"]),
    );
    assert!(out.trim().starts_with('3'), "{out}");
}

/// The generated test config and the demo template pass `sluice check-config`.
#[test]
fn generated_configs_pass_check_config() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, yaml: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, yaml).unwrap();
        let (status, out, err) = tools::command_output(
            std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("check-config")
                .arg(&file),
        );
        assert!(
            status.success(),
            "check-config {name}:\n{yaml}\n{out}\n{err}"
        );
    };
    let opts = ProxyOptions {
        idle_client_timeout: Some("2s".into()),
        health_interval: Some("100ms".into()),
        ..ProxyOptions::default()
    };
    let (yaml, secrets) = sluice::config_for(&pg, &opts);
    std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
    check("proxy.yaml", &yaml);

    let root = tools::repo_root().join("config");
    std::fs::copy(
        root.join("secrets.demo.yaml"),
        dir.path().join("secrets.demo.yaml"),
    )
    .unwrap();
    let demo = std::fs::read_to_string(root.join("demo.yaml.in")).unwrap();
    check(
        "demo.yaml",
        &demo
            .replace("${PG_PORT}", "5432")
            .replace("${PG_REPLICA_PORT}", "5433")
            .replace("${SLUICE_PORT}", "6432")
            .replace("${SLUICE_READER_PORT}", "6433")
            .replace("${MARIADB_PORT}", "3306")
            .replace("${SLUICE_MYSQL_PORT}", "3307"),
    );
}
