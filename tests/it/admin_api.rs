//! The admin listener's read-only JSON API and its bearer token: /v1/endpoints,
//! /v1/target-groups, /v1/pools and /v1/sessions on a live session, no secret in any of them;
//! /healthz and /readyz open to probes; `ready_without_writer`.

use std::time::Duration;

use serde_json::Value;

use crate::metrics::{get, get_with, sample, wait_readyz};
use crate::support::client::{connect, scalar};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, default_secrets};
use crate::support::tools::free_port;

const TOKEN: &str = "admin-token-7f3a";

fn json(admin: u16, path: &str) -> Value {
    let (status, body) = get_with(admin, path, &format!("Authorization: Bearer {TOKEN}\r\n"));
    assert_eq!(status, 200, "{path}: {body}");
    assert!(!body.contains(APP.1), "{path} shows a password: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Scrapes (with the token) and checks the target group `pg`'s sample of `gauge`.
fn assert_gauge(admin: u16, gauge: &str, value: i64) {
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (_, scrape) = get_with(admin, "/metrics", &auth);
    let line = format!("{gauge}{{target_group=\"pg\"}} {value}\n");
    assert!(scrape.contains(&line), "no {line:?} in\n{scrape}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_routes_describe_live_sessions_behind_a_bearer_token() {
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(3));
    let admin = free_port();
    let yaml = format!(
        "{yaml}admin: {{ listen: 127.0.0.1:{admin}, bearer_token_env: SLUICE_ADMIN_TOKEN }}\n"
    );
    let proxy = Sluice::start_with_env(&yaml, &secrets, &[("SLUICE_ADMIN_TOKEN", TOKEN)]);
    wait_readyz(admin, 200, 10);

    // Probes need no token; everything else does, and a wrong one is refused.
    assert_eq!(get(admin, "/healthz").0, 200);
    for path in ["/metrics", "/v1/sessions"] {
        assert_eq!(get(admin, path).0, 401, "{path} without a token");
        let wrong = get_with(admin, path, "Authorization: Bearer admin-token-7f3b\r\n");
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
    }
    let (status, scrape) = get_with(
        admin,
        "/metrics",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(status, 200);
    assert!(scrape.contains("sluice_client_connections"), "{scrape}");

    let client = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&client, "SELECT 1").await, "1");
    let instance = format!("{}:{}", pg.host(), pg.port());

    let endpoints = json(admin, "/v1/endpoints");
    let writer = &endpoints[0];
    assert_eq!(writer["name"], "writer");
    assert_eq!(writer["target_group"], "pg");
    assert_eq!(writer["engine"], "postgres");
    assert_eq!(writer["role"], "read_write");
    assert_eq!(writer["listen"], format!("127.0.0.1:{}", proxy.port()));
    assert_eq!(writer["client_connections"], 1);

    let groups = json(admin, "/v1/target-groups");
    assert_eq!(groups[0]["name"], "pg");
    assert_eq!(groups[0]["writer"], instance.as_str());
    assert_eq!(groups[0]["instances"][0]["role"], "writer");
    assert_eq!(groups[0]["instances"][0]["healthy"], true);

    let pools = json(admin, "/v1/pools");
    assert_eq!(pools[0]["instance"], instance.as_str());
    assert_eq!(pools[0]["max_connections"], 3);
    assert!(pools[0]["open"].as_u64().unwrap() >= 1, "{pools}");

    let sessions = json(admin, "/v1/sessions");
    let rows = sessions.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{sessions}");
    assert_eq!(rows[0]["user"], APP.0);
    assert_eq!(rows[0]["database"], APPDB);
    assert_eq!(rows[0]["endpoint"], "writer");
    assert_eq!(rows[0]["tls"], false);
    assert_eq!(
        rows[0]["server"],
        Value::Null,
        "an idle session holds no server"
    );

    assert_eq!(rows[0]["target_group"], "pg");
    assert_eq!(rows[0]["in_transaction"], false);

    // While a transaction is open the session holds the instance's connection, and the gauge
    // counts it.
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let sessions = json(admin, "/v1/sessions");
    assert_eq!(sessions[0]["server"], instance.as_str(), "{sessions}");
    assert_eq!(sessions[0]["in_transaction"], true, "{sessions}");
    assert_gauge(admin, "sluice_database_connections_in_transaction", 1);
    // A session-level advisory lock pins the session (kept after COMMIT).
    client
        .batch_execute("SELECT pg_advisory_lock(42); COMMIT")
        .await
        .unwrap();
    let sessions = json(admin, "/v1/sessions");
    assert_eq!(sessions[0]["pinned"], true, "{sessions}");
    assert_eq!(sessions[0]["in_transaction"], false, "{sessions}");
    assert_gauge(admin, "sluice_database_connections_pinned", 1);
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(json(admin, "/v1/sessions").as_array().unwrap().len(), 0);
}

#[test]
fn readiness_waits_for_a_writer_unless_told_not_to() {
    // An instance nobody listens on: the probes never find a writer.
    let dead = free_port();
    let base = format!(
        "endpoints:\n  - {{ name: writer, listen: 127.0.0.1:{port}, target_group: pg }}\n\
         target_groups:\n  pg:\n    engine: postgres\n    instances: [127.0.0.1:{dead}]\n\
         auth:\n  - {{ username: app, secret: file:secrets.yaml#app }}\n",
        port = free_port(),
    );
    let admin = free_port();
    let yaml = format!("{base}admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &default_secrets());
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = get(admin, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("no writer known in pg"), "{body}");
    drop(proxy);

    let admin = free_port();
    let yaml =
        format!("{base}admin: {{ listen: 127.0.0.1:{admin}, ready_without_writer: true }}\n");
    let _proxy = Sluice::start_with_secrets(&yaml, &default_secrets());
    assert_eq!(get(admin, "/readyz").0, 200);
}

#[test]
fn mysql_requests_are_counted_and_timed() {
    use crate::support::mariadb::{APP as MY_APP, MY_APPDB, MariaDb, cli_at};
    use crate::support::sluice::config_for_mariadb;
    let db = MariaDb::start();
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::pool(2));
    let admin = free_port();
    let proxy = Sluice::start_with_secrets(
        &format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n"),
        &secrets,
    );
    let out = cli_at(
        proxy.port(),
        MY_APP.0,
        MY_APP.1,
        MY_APPDB,
        "SELECT SLEEP(0.2), 7",
    )
    .unwrap();
    assert!(out.ends_with("7"), "{out}");
    let (_, scrape) = get(admin, "/metrics");
    let value = |series: &str| {
        sample(&scrape, series).unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
    };
    let group = r#"{target_group="maria"}"#;
    assert!(value(&format!("sluice_query_requests_total{group}")) >= 1.0);
    let database = value(&format!(
        "sluice_query_database_response_latency_seconds_sum{group}"
    ));
    assert!(
        database >= 0.2,
        "SLEEP(0.2) ran on the database: {database}"
    );
    let response = value(&format!("sluice_query_response_latency_seconds_sum{group}"));
    assert!(response >= database, "{response} < {database}");
}
