//! The admin listener on a running sluice: /metrics after real logins (values checked, every
//! family documented in docs/metrics.md and every documented series present, `promtool check
//! metrics` clean), /healthz and /readyz.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::pg_proxy::client;
use crate::support::postgres::{APP, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::{self, command_output, free_port, repo_root};

/// One GET; returns the status code and the body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    get_with(port, path, "")
}

/// A GET with extra header lines (each ending in CRLF). HTTP/1.0, so every server (hyper here,
/// Go's in Prometheus) answers unchunked, with the body up to the close.
pub fn get_with(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Polls /readyz until it answers `status`, for `limit_secs` at most; the last answer.
pub fn wait_readyz(admin: u16, status: u16, limit_secs: u64) -> (u16, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limit_secs);
    loop {
        let answer = get(admin, "/readyz");
        if answer.0 == status || std::time::Instant::now() > deadline {
            assert_eq!(answer.0, status, "/readyz: {}", answer.1);
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of the sample `series` (name and labels exactly as exposed).
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The metric families of an exposition, from its `# TYPE` lines.
pub fn families(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every `sluice_*` name in backticks at the start of a table row of docs/metrics.md.
pub fn documented() -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `sluice_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("sluice_{n}"))
        .collect()
}

#[test]
fn metrics_health_and_readiness_after_real_logins() {
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(4));
    let admin = free_port();
    let yaml = format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);

    let (status, _, err) =
        command_output(client(&pg, &proxy, "psql", APP).args(["-X", "-c", "select pg_sleep(0.1)"]));
    assert!(status.success(), "{err}");
    let (status, _, _) = command_output(
        client(&pg, &proxy, "psql", (APP.0, "wrong")).args(["-X", "-c", "select 1"]),
    );
    assert!(!status.success());
    // The probe elects the writer within its interval.
    let ready = wait_readyz(admin, 200, 5);
    assert_eq!(ready, (200, "ready\n".into()));
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/nope").0, 404);

    let (status, scrape) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let ep = r#"{endpoint="writer",target_group="pg"}"#;
    let at = |s: &str| sample(&scrape, s).unwrap_or_else(|| panic!("no {s} in\n{scrape}"));
    assert_eq!(
        at(&format!(
            "sluice_client_connections_setup_succeeded_total{ep}"
        )),
        1.0
    );
    assert_eq!(
        at(&format!(
            "sluice_client_connections_setup_failed_auth_total{ep}"
        )),
        1.0
    );
    assert!(at(&format!("sluice_client_connections_received_total{ep}")) >= 2.0);
    assert_eq!(at(&format!("sluice_client_connections{ep}")), 0.0);
    let instance = format!(
        r#"{{target_group="pg",instance="{}:{}"}}"#,
        pg.host(),
        pg.port()
    );
    assert!(at(&format!("sluice_database_connections{instance}")) >= 1.0);
    assert_eq!(
        at(&format!(
            "sluice_max_database_connections_allowed{instance}"
        )),
        4.0
    );
    let writer = format!(
        r#"sluice_availability{{target_group="pg",instance="{}:{}",role="writer"}}"#,
        pg.host(),
        pg.port()
    );
    assert_eq!(at(&writer), 1.0);
    assert_eq!(at(r#"sluice_failovers_total{target_group="pg"}"#), 0.0);
    // psql's one query, and what it borrowed for it.
    let group = r#"{target_group="pg"}"#;
    assert!(at(&format!("sluice_query_requests_total{group}")) >= 1.0);
    assert!(at(&format!("sluice_database_connection_requests_total{group}")) >= 1.0);
    assert!(at(&format!("sluice_borrow_latency_seconds_count{group}")) >= 1.0);
    assert_eq!(
        at(&format!(
            "sluice_database_connections_setup_failed_total{group}"
        )),
        0.0
    );
    assert_eq!(at(r#"sluice_session_pins_total{reason="listen"}"#), 0.0);
    assert!(
        at(&format!(
            "sluice_query_response_latency_seconds_count{group}"
        )) >= 1.0
    );
    let database = at(&format!(
        "sluice_query_database_response_latency_seconds_sum{group}"
    ));
    // pg_sleep(0.1) ran on the database: the database response time holds it.
    assert!(database >= 0.1, "database response time {database}");
    let response = at(&format!("sluice_query_response_latency_seconds_sum{group}"));
    assert!(response >= database, "{response} < {database}");
    assert_eq!(
        at(&format!(
            "sluice_database_connections_in_transaction{group}"
        )),
        0.0
    );
    assert_eq!(
        at(&format!("sluice_database_connections_pinned{group}")),
        0.0
    );
    assert_eq!(
        at(r#"sluice_secret_refresh_failures_total{user="app"}"#),
        0.0
    );

    // docs/metrics.md and the exposition name the same families (OpenMetrics names, as
    // Prometheus asks for them).
    let accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
    let (status, open) = get_with(admin, "/metrics", accept);
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "{open}");
    let mut exposed = families(&open);
    // The fleet's families appear only with a fleet budget: `fleet::` checks those.
    let mut doc: Vec<String> = documented()
        .into_iter()
        .filter(|n| !n.starts_with("sluice_fleet_"))
        .collect();
    exposed.sort();
    doc.sort();
    assert_eq!(exposed, doc, "docs/metrics.md and /metrics disagree");

    // Prometheus' own linter accepts the exposition.
    let mut promtool = Command::new(tools::require("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
