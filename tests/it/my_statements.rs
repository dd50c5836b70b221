//! MySQL/MariaDB statements through sluice against a direct connection: binary prepared
//! statements across a schema migration (MariaDB re-prepares them itself; sluice must not get in
//! the way).

use crate::drivers::migration::no_worse;
use crate::drivers::{Run, run_sampling_with};
use crate::my_proxy::python;
use crate::support::mariadb::{APP, MY_APPDB, MariaDb};
use crate::support::sluice::{ProxyOptions, Sluice};
use std::time::Duration;

fn run(db: &MariaDb, port: u16, extra: &[&str]) -> Run {
    let cmd = python("myconnector_migration.py", port, extra);
    let run = run_sampling_with(cmd, Duration::from_secs(120), || db.connection_count(APP.0));
    assert!(run.ok, "{run}");
    run
}

#[test]
fn binary_prepared_statements_through_a_migration() {
    let db = MariaDb::start();
    let sluice = Sluice::start_for_mariadb(&db, ProxyOptions::pool(2));
    let direct_port = db.port().to_string();
    let direct = run(&db, db.port(), &[MY_APPDB, &direct_port]);
    for ddl_port in [direct_port.clone(), sluice.port().to_string()] {
        let proxied = run(&db, sluice.port(), &[MY_APPDB, &ddl_port]);
        no_worse("mysql-connector prepared", &direct, &proxied);
        let phases = proxied.stdout.lines().filter(|l| l.contains("errors=0"));
        assert_eq!(
            phases.count(),
            3,
            "MariaDB re-prepares: no errors\n{proxied}"
        );
    }
}
