//! TLS on both sides with real clients: psql and pgbench with `sslmode=verify-full`, the
//! mariadb CLI with `--ssl-verify-server-cert`, sluice verifying the databases' certificates,
//! plaintext refused on `require_tls`, and a certificate swapped on SIGHUP.

use std::process::Command;
use std::time::Duration;

use crate::pg_proxy::{client, processed};
use crate::support::certs::{Certs, Leaf};
use crate::support::mariadb::{self, MariaDb, MariaOptions};
use crate::support::postgres::{APP, APPDB, PgOptions, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::command_output;

/// `yaml` with TLS required on its endpoint, sluice's certificate, and `server_tls`.
fn with_tls(yaml: &str, proxy: &Leaf, server_tls: &str) -> String {
    let yaml = yaml
        .replace(
            "    role: read_write\n",
            "    role: read_write\n    require_tls: true\n",
        )
        .replace(
            "    monitor_user:",
            &format!("    server_tls: {server_tls}\n    monitor_user:"),
        );
    format!(
        "{yaml}tls: {{ cert: {}, key: {} }}\n",
        proxy.cert.display(),
        proxy.key.display()
    )
}

/// psql through sluice with `sslmode` and a root CA; (success, stdout, stderr).
fn psql(
    pg: &PgServer,
    proxy: &Sluice,
    host: &str,
    sslmode: &str,
    ca: &std::path::Path,
    sql: &str,
) -> (bool, String, String) {
    let mut cmd = client(pg, proxy, "psql", APP);
    cmd.env("PGHOST", host)
        .env("PGSSLMODE", sslmode)
        .env("PGSSLROOTCERT", ca)
        .args(["-X", "-A", "-t", "-c", sql]);
    let (status, out, err) = command_output(&mut cmd);
    (status.success(), out.trim().to_owned(), err)
}

/// A PostgreSQL server offering TLS with `cert`.
fn pg_with_tls(cert: &Leaf) -> PgServer {
    PgServer::start_with(PgOptions {
        extra_conf: vec![
            "ssl = on".into(),
            format!("ssl_cert_file = '{}'", cert.cert.display()),
            format!("ssl_key_file = '{}'", cert.key.display()),
        ],
        ..Default::default()
    })
}

/// Copies `next` over the files sluice serves (`leaf`) and tells it to re-read them (SIGHUP).
fn swap_in(next: &Leaf, leaf: &Leaf, proxy: &Sluice) {
    std::fs::copy(&next.cert, &leaf.cert).unwrap();
    std::fs::copy(&next.key, &leaf.key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

const SERVER_SIDE_SSL: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

#[test]
fn postgres_verify_full_on_both_sides_plaintext_refused_and_certificate_reloaded() {
    let certs = Certs::new("pg");
    let server = certs.leaf("postgres", &["127.0.0.1", "localhost"], Some("postgres"));
    let leaf = certs.leaf("sluice", &["localhost", "127.0.0.1"], None);
    let pg = pg_with_tls(&server);
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let server_tls = format!("{{ mode: verify-full, ca_file: {} }}", certs.ca().display());
    let mut proxy = Sluice::start_with_secrets(&with_tls(&yaml, &leaf, &server_tls), &secrets);

    // The client checks sluice's certificate; sluice's server connection is TLS too.
    let (ok, out, err) = psql(
        &pg,
        &proxy,
        "localhost",
        "verify-full",
        certs.ca(),
        SERVER_SIDE_SSL,
    );
    assert!(ok, "psql verify-full: {err}\n{}", proxy.log_contents());
    assert_eq!(out, "t", "sluice's server connection is not TLS");

    let (ok, _, err) = psql(&pg, &proxy, "127.0.0.1", "disable", certs.ca(), "select 1");
    assert!(!ok);
    assert!(err.contains("SSL required"), "{err}");

    // A certificate from another CA, swapped in place, is served after SIGHUP.
    let other = Certs::new("rotated");
    let next = other.leaf("sluice", &["localhost"], None);
    swap_in(&next, &leaf, &proxy);
    let mut served = false;
    for _ in 0..50 {
        if psql(
            &pg,
            &proxy,
            "localhost",
            "verify-full",
            other.ca(),
            "select 1",
        )
        .0
        {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        served,
        "new certificate not served:\n{}",
        proxy.log_contents()
    );
    let (ok, _, err) = psql(
        &pg,
        &proxy,
        "localhost",
        "verify-full",
        certs.ca(),
        "select 1",
    );
    assert!(
        !ok && err.contains("certificate"),
        "the old CA still verifies: {err}"
    );
    assert!(proxy.try_wait().is_none(), "SIGHUP ended sluice");

    // pgbench over TLS on both sides: the relay's pumps through rustls.
    let bench = |args: &[&str]| {
        let mut cmd = client(&pg, &proxy, "pgbench", APP);
        cmd.env("PGSSLMODE", "require").args(args);
        command_output(&mut cmd)
    };
    let (status, _, err) = bench(&["-i", "-q", "-s", "1"]);
    assert!(status.success(), "pgbench -i over TLS: {err}");
    for mode in ["simple", "extended", "prepared"] {
        let (status, out, err) = bench(&["-c", "4", "-j", "2", "-T", "2", "-M", mode]);
        assert!(
            status.success() && !err.contains("error"),
            "pgbench -M {mode}: {out}\n{err}"
        );
        assert!(processed(&out) > 20, "pgbench -M {mode}: {out}");
    }
    assert_eq!(
        pg.psql_db(APPDB, "select count(*) > 0 from pgbench_history"),
        "t"
    );
}

#[test]
fn postgres_server_certificate_from_an_unknown_ca_is_refused() {
    let certs = Certs::new("pg");
    let server = certs.leaf("postgres", &["127.0.0.1"], Some("postgres"));
    let pg = pg_with_tls(&server);
    let stranger = Certs::new("stranger");
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let yaml = yaml.replace(
        "    monitor_user:",
        &format!(
            "    server_tls: {{ mode: verify-ca, ca_file: {} }}\n    monitor_user:",
            stranger.ca().display()
        ),
    );
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let mut cmd = client(&pg, &proxy, "psql", APP);
    let (status, _, err) = command_output(cmd.args(["-X", "-c", "select 1"]));
    assert!(!status.success(), "logged in through an unverified server");
    assert!(!err.contains("panicked"), "{err}");
    let log = proxy.log_contents();
    assert!(
        log.contains("UnknownIssuer") || log.contains("certificate"),
        "{log}"
    );
}

#[test]
fn mariadb_tls_on_both_sides_and_plaintext_refused() {
    let certs = Certs::new("maria");
    let server = certs.leaf("mariadb", &["127.0.0.1", "localhost"], Some("mysql"));
    let leaf = certs.leaf("sluice", &["127.0.0.1", "localhost"], None);
    let db = MariaDb::start_with(MariaOptions {
        extra_conf: vec![
            format!("ssl-cert={}", server.cert.display()),
            format!("ssl-key={}", server.key.display()),
            format!("ssl-ca={}", certs.ca().display()),
        ],
        ..Default::default()
    });
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::default());
    let server_tls = format!("{{ mode: verify-full, ca_file: {} }}", certs.ca().display());
    let proxy = Sluice::start_with_secrets(&with_tls(&yaml, &leaf, &server_tls), &secrets);
    let cli = |tls: &[&str], sql: &str| {
        let mut cmd = mariadb::client();
        cmd.args(["-h", "127.0.0.1", "-P", &proxy.port().to_string()])
            .args(["-u", APP.0, &format!("-p{}", APP.1), "appdb"])
            .args(tls)
            .args(["-e", sql]);
        command_output(&mut cmd)
    };
    let ca = format!("--ssl-ca={}", certs.ca().display());
    let verified = ["--ssl", ca.as_str(), "--ssl-verify-server-cert"];
    let (status, out, err) = cli(&verified, "SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert!(
        status.success(),
        "mariadb --ssl-verify-server-cert: {err}\n{}",
        proxy.log_contents()
    );
    assert!(
        out.contains("TLSv1."),
        "sluice's server connection is not TLS: {out}"
    );
    let (status, out, err) = cli(
        &verified,
        "CREATE TABLE IF NOT EXISTS tls_t (id INT PRIMARY KEY, v LONGTEXT); \
         REPLACE INTO tls_t VALUES (1, REPEAT('x', 3000000)); SELECT LENGTH(v) FROM tls_t",
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "3000000", "a 3 MB row through both TLS links");

    let (status, _, err) = cli(&["--skip-ssl"], "SELECT 1");
    assert!(!status.success());
    assert!(
        err.contains("3159") && err.contains("insecure transport"),
        "{err}"
    );
}

/// The certificate swapped and re-read (SIGHUP) five times while pgbench opens a TLS
/// connection per transaction (`-C`, verify-full): every handshake gets one certificate or
/// the other, and no transaction fails.
#[test]
fn a_certificate_reloaded_under_load_fails_no_connection() {
    let certs = Certs::new("reload");
    let leaf = certs.leaf("sluice", &["localhost"], None);
    let spare = [
        certs.leaf("sluice-b", &["localhost"], None),
        certs.leaf("sluice-c", &["localhost"], None),
    ];
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let proxy = Sluice::start_with_secrets(&with_tls(&yaml, &leaf, "{ mode: disable }"), &secrets);
    let bench = |args: &[&str]| {
        let mut cmd = client(&pg, &proxy, "pgbench", APP);
        cmd.env("PGHOST", "localhost")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", certs.ca())
            .args(args);
        cmd
    };
    let (status, _, err) = command_output(&mut bench(&["-i", "-q", "-s", "1"]));
    assert!(status.success(), "pgbench -i over TLS: {err}");
    let run = bench(&["-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..5 {
        std::thread::sleep(Duration::from_secs(2));
        let next = &spare[i % 2];
        swap_in(next, &leaf, &proxy);
    }
    let out = run.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(processed(&stdout) > 200, "{stdout}");
    assert!(
        proxy
            .log_contents()
            .matches("TLS certificate reloaded")
            .count()
            >= 5,
        "each SIGHUP re-read the certificate:\n{}",
        proxy.log_contents()
    );
}
