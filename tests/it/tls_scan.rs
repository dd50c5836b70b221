//! The client-facing TLS as scanners see it: testssl.sh against both engines' STARTTLS and
//! sslyze's Mozilla "intermediate" check against the Postgres endpoint. TLS 1.2 and 1.3 only,
//! no weak suites, no known TLS flaw; any new finding of MEDIUM or worse fails the suite.

use std::fmt::Write as _;
use std::process::Command;

use crate::support::certs::Certs;
use crate::support::mariadb::MariaDb;
use crate::support::postgres::{APP, MONITOR, PgServer};
use crate::support::sluice::{Sluice, default_secrets};
use crate::support::tools::{self, command_output, free_port};

/// Findings that are about the test's own certificate or a stance taken on purpose, not about
/// sluice's TLS: the test CA is in no public trust store and publishes no CRL or OCSP, and
/// Mozilla's intermediate profile lets the client pick among strong suites (testssl 3.0 calls
/// a server that does so HIGH; sluice, like Mozilla's nginx template, does not override it).
const ACCEPTED: &[&str] = &[
    "cert_chain_of_trust",
    "cert_revocation",
    "cert_caIssuers",
    "cipher_order",
];

/// (id, severity, finding) of every entry of a testssl JSON report.
fn findings(json: &str) -> Vec<(String, String, String)> {
    let script = "import json,sys\nfor f in json.load(open(sys.argv[1])):\n    \
                  print(f['id'], f['severity'], f['finding'].replace('\\n', ' '), sep='\\t')";
    let (status, out, err) =
        command_output(Command::new(tools::python()).args(["-c", script, json]));
    assert!(status.success(), "{err}");
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

/// Runs testssl.sh with `--starttls proto` against `port`; its findings.
fn testssl(dir: &std::path::Path, proto: &str, port: u16) -> Vec<(String, String, String)> {
    let json = dir.join(format!("testssl-{proto}.json"));
    let (status, out, err) = command_output(
        Command::new(tools::require("testssl"))
            .args(["--quiet", "--color", "0", "--warnings", "off", "--jsonfile"])
            .arg(&json)
            .args(["--starttls", proto, &format!("127.0.0.1:{port}")]),
    );
    assert!(json.exists(), "testssl {proto} ({status}): {out}\n{err}");
    findings(json.to_str().unwrap())
}

#[test]
fn testssl_and_sslyze_find_nothing_in_either_engines_starttls() {
    let certs = Certs::new("scan");
    let leaf = certs.leaf("sluice", &["127.0.0.1", "localhost"], None);
    let pg = PgServer::start();
    let db = MariaDb::start();
    let (pg_port, my_port) = (free_port(), free_port());
    let mut yaml = String::from("endpoints:\n");
    for (name, port, group) in [("pg", pg_port, "pg"), ("my", my_port, "my")] {
        let _ = write!(
            yaml,
            "  - name: {name}\n    listen: 127.0.0.1:{port}\n    target_group: {group}\n    \
             role: read_write\n"
        );
    }
    let _ = write!(
        yaml,
        "target_groups:\n  pg:\n    engine: postgres\n    instances: [127.0.0.1:{}]\n    \
         monitor_user: {mon}\n  my:\n    engine: mysql\n    instances: [127.0.0.1:{}]\n    \
         monitor_user: {mon}\nauth:\n  - username: {app}\n    secret: file:secrets.yaml#{app}\n  \
         - username: {mon}\n    secret: file:secrets.yaml#{mon}\n\
         tls: {{ cert: {}, key: {} }}\n",
        pg.port(),
        db.port(),
        leaf.cert.display(),
        leaf.key.display(),
        app = APP.0,
        mon = MONITOR.0,
    );
    let proxy = Sluice::start_with_secrets(&yaml, &default_secrets());
    let dir = proxy.dir().to_owned();

    // sslyze has no MySQL STARTTLS; testssl covers both.
    let (status, out, err) = command_output(
        Command::new(tools::python())
            .args(["-m", "sslyze", "--starttls", "postgres"])
            .arg(format!("127.0.0.1:{pg_port}"))
            .args(["--mozilla_config=intermediate", "--certinfo_ca_file"])
            .arg(certs.ca()),
    );
    assert!(
        status.success(),
        "not Mozilla intermediate compliant:\n{}\n{err}",
        out.split("COMPLIANCE").last().unwrap_or(&out)
    );

    // The two scans take about 40 s each; they run side by side.
    let (d, p) = (dir.clone(), pg_port);
    let pg_scan = std::thread::spawn(move || testssl(&d, "postgres", p));
    let my_findings = testssl(&dir, "mysql", my_port);
    let pg_findings = pg_scan.join().unwrap();
    for (proto, found) in [("postgres", &pg_findings), ("mysql", &my_findings)] {
        let offered = |id: &str| {
            let f = found.iter().find(|(i, _, _)| i == id);
            f.unwrap_or_else(|| panic!("{proto}: no {id} in {found:?}"))
                .2
                .starts_with("offered")
        };
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert!(!offered(old), "{proto} offers {old}");
        }
        assert!(offered("TLS1_2") && offered("TLS1_3"), "{proto}: {found:?}");
        let bad: Vec<_> = found
            .iter()
            .filter(|(id, sev, _)| {
                matches!(sev.as_str(), "MEDIUM" | "HIGH" | "CRITICAL")
                    && !ACCEPTED.contains(&id.as_str())
            })
            .collect();
        assert!(bad.is_empty(), "{proto}: {bad:#?}");
    }
}
