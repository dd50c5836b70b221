//! A real Prometheus (Debian's package) scraping sluice on loopback while pgbench runs through
//! it; the series are read back through Prometheus' HTTP query API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::metrics::get;
use crate::pg_proxy::client;
use crate::support::postgres::{APP, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::{self, command_output, free_port};

/// The Prometheus server under test; stopped (by its PID) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn scraping(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\n\
                 scrape_configs:\n  - job_name: sluice\n    \
                 static_configs: [{{ targets: ['127.0.0.1:{target}'] }}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tools::require("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The instant-query result vector for `query` (URL-encoded by the caller).
    fn query(&self, encoded: &str) -> Vec<Value> {
        let (status, body) = get(self.port, &format!("/api/v1/query?query={encoded}"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `query` until its first sample satisfies `ok`, for up to 20 s.
    fn wait_for(&self, encoded: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self
                .query(encoded)
                .first()
                .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()));
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "{encoded}: last value {value:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn prometheus_scrapes_sluice_under_load() {
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(4));
    let admin = free_port();
    let yaml = format!("{yaml}admin: {{ listen: 127.0.0.1:{admin} }}\n");
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let prometheus = Prometheus::scraping(admin);

    let (status, _, err) =
        command_output(client(&pg, &proxy, "pgbench", APP).args(["-i", "-q", "-s", "1"]));
    assert!(status.success(), "pgbench -i: {err}");
    let (status, out, err) = command_output(
        client(&pg, &proxy, "pgbench", APP).args(["-n", "-C", "-c", "6", "-j", "2", "-T", "4"]),
    );
    assert!(status.success(), "pgbench: {out}{err}");

    // up{job="sluice"} == 1: Prometheus scraped the target without error.
    prometheus.wait_for("up%7Bjob%3D%22sluice%22%7D", |v| v == 1.0);
    // pgbench -C logs in for every transaction: hundreds of logins, all counted.
    let logins = prometheus.wait_for("sluice_client_connections_setup_succeeded_total", |v| {
        v >= 50.0
    });
    assert!(logins >= 50.0);
    let cap = prometheus.wait_for("sluice_max_database_connections_allowed", |v| v > 0.0);
    assert_eq!(cap, 4.0);
    prometheus.wait_for("sluice_availability%7Brole%3D%22writer%22%7D", |v| v == 1.0);
    // Every sluice series Prometheus holds is one docs/metrics.md lists (checked both ways
    // against the exposition in tests/it/metrics.rs); here: that it stored them at all.
    let names = prometheus.query("count%20by%20(__name__)(%7B__name__%3D~%22sluice_.*%22%7D)");
    assert!(
        names.len() >= 10,
        "only {} sluice series stored",
        names.len()
    );
}
