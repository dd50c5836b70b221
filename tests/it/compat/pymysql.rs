//! PyMySQL's own test suite (its snapshot's `pymysql/tests`, run with that snapshot's pymysql),
//! against MariaDB directly and through sluice, as upstream's CI sets it up: `test1` for a user
//! with every privilege, `test2` for a second user.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Outcomes, Via, compare, compat_dir, junit, rerun_differences};
use crate::drivers::run_sampling_with;
use crate::support::mariadb::{MONITOR, MariaDb};
use crate::support::sluice::{Sluice, default_secrets};
use crate::support::tools::{self, free_port, run_ok};

const ROOT: (&str, &str) = ("pmroot", "pmroot-secret");
const TEST2: (&str, &str) = ("test2", "some password");

fn config(db: &MariaDb) -> (String, String) {
    let users: String = [ROOT.0, TEST2.0]
        .iter()
        .map(|u| {
            format!(
                "  - username: {u}\n    client_auth: password\n    \
                 client_password_auth_type: mysql_native_password\n    \
                 secret: file:secrets.yaml#{u}\n"
            )
        })
        .collect();
    let yaml = format!(
        "endpoints:\n  - name: writer\n    listen: 127.0.0.1:{port}\n    target_group: maria\n\
         target_groups:\n  maria:\n    engine: mysql\n    instances: [{host}:{db_port}]\n    \
         monitor_user: {monitor}\n    connection_pool:\n      max_connections: 4\n      \
         connection_borrow_timeout: 30s\nauth:\n{users}  - username: {monitor}\n    \
         secret: file:secrets.yaml#{monitor}\n",
        port = free_port(),
        host = db.host(),
        db_port = db.port(),
        monitor = MONITOR.0,
    );
    let mut secrets = default_secrets();
    for (u, p) in [ROOT, TEST2] {
        secrets.push_str(&format!("{u}: {{username: {u}, password: \"{p}\"}}\n"));
    }
    (yaml, secrets)
}

/// Runs the suite copied to `suite` against `port` (only the tests `only` names, as
/// `classname.name` ids, when it names any); returns its outcomes.
fn run(db: &MariaDb, suite: &Path, port: u16, what: &str, only: &[String]) -> Outcomes {
    let databases = serde_json::json!([
        {"host": "127.0.0.1", "port": port, "user": ROOT.0, "password": ROOT.1,
         "database": "test1", "use_unicode": true, "local_infile": true},
        {"host": "127.0.0.1", "port": port, "user": TEST2.0, "password": TEST2.1,
         "database": "test2"},
    ]);
    let tests = suite.join("pymysql/tests");
    std::fs::write(tests.join("databases.json"), databases.to_string()).unwrap();
    let report = suite.join(format!("junit-{what}.xml"));
    let mut cmd = Command::new(tools::python());
    cmd.current_dir(suite)
        .env("PYTHONPATH", suite)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junitxml={}", report.display()));
    if only.is_empty() {
        cmd.arg("pymysql/tests");
    }
    for id in only {
        cmd.arg(node_id(suite, id));
    }
    let run = run_sampling_with(cmd, Duration::from_secs(600), || {
        db.connection_count(ROOT.0)
    });
    let xml = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report from the {what} run ({e}):\n{run}"));
    let outcomes = junit(&xml);
    for (test, ok) in &outcomes {
        if !ok {
            eprintln!("{what}: FAILED {test}");
        }
    }
    outcomes
}

/// pytest's node id of a JUnit test id: `pymysql.tests.test_x.Class.test_y` is
/// `pymysql/tests/test_x.py::Class::test_y` (the module is the longest prefix that is a file
/// under `suite`).
fn node_id(suite: &Path, id: &str) -> String {
    let parts: Vec<&str> = id.split('.').collect();
    let module = (0..parts.len())
        .rev()
        .find(|&k| suite.join(parts[..=k].join("/") + ".py").is_file())
        .unwrap_or(0);
    let mut out = parts[..=module].join("/") + ".py";
    for part in &parts[module + 1..] {
        out.push_str("::");
        out.push_str(part);
    }
    out
}

#[test]
fn pymysql_suite_direct_and_through_sluice() {
    let Some(compat) = compat_dir() else { return };
    let db = MariaDb::start();
    db.sql(&format!(
        "CREATE DATABASE test1 DEFAULT CHARACTER SET utf8mb4; \
         CREATE DATABASE test2 DEFAULT CHARACTER SET utf8mb4; \
         CREATE USER {root}@'%' IDENTIFIED BY '{root_pw}'; \
         GRANT ALL ON *.* TO {root}@'%' WITH GRANT OPTION; \
         CREATE USER {t2}@'%' IDENTIFIED BY '{t2_pw}'; GRANT ALL ON test2.* TO {t2}@'%';",
        root = ROOT.0,
        root_pw = ROOT.1,
        t2 = TEST2.0,
        t2_pw = TEST2.1,
    ));
    let (yaml, secrets) = config(&db);
    let sluice = Sluice::start_with_secrets(&yaml, &secrets);
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(compat.join("pymysql"))
            .arg(dir.path()),
    );
    let suite = dir.path().join("pymysql");
    let mut direct = run(&db, &suite, db.port(), "direct", &[]);
    let mut proxied = run(&db, &suite, sluice.port(), "sluice", &[]);
    rerun_differences("pymysql", &mut direct, &mut proxied, |ids, via| match via {
        Via::Direct => run(&db, &suite, db.port(), "direct-again", ids),
        Via::Sluice => run(&db, &suite, sluice.port(), "sluice-again", ids),
    });
    compare("pymysql", &direct, &proxied);
}
