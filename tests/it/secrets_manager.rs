//! `aws-secretsmanager:` secrets against moto's Secrets Manager: a rotation the way AWS's
//! rotation functions run it (AWSPENDING, the database's password changed, AWSCURRENT moved)
//! in the middle of pgbench and of MariaDB logins, then Secrets Manager going away.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::pg_proxy::{client, processed};
use crate::support::mariadb::{self, MariaDb};
use crate::support::moto::Moto;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::command_output;

const NEW_PASSWORD: &str = "rotated-password-1";

/// Points the `app` entry at Secrets Manager, recycles server connections every second (so
/// new logins happen throughout the rotation) and re-reads secrets every `refresh`.
pub(crate) fn stored_config(yaml: &str, moto: &Moto, refresh: &str) -> String {
    let yaml = yaml
        .replace(
            "secret: file:secrets.yaml#app\n",
            "secret: aws-secretsmanager:sluice/app\n",
        )
        .replace(
            "      max_connections:",
            "      max_connection_lifetime: 1s\n      max_connections:",
        );
    assert!(yaml.contains("aws-secretsmanager:sluice/app"), "{yaml}");
    format!(
        "{yaml}secrets_manager: {{ region: us-east-1, endpoint_url: \"{}\", refresh_interval: {refresh} }}\n",
        moto.url()
    )
}

fn psql_as(pg: &PgServer, proxy: &Sluice, password: &str) -> Result<String, String> {
    let (status, out, err) = command_output(
        client(pg, proxy, "psql", (APP.0, password)).args(["-X", "-A", "-t", "-c", "select 1"]),
    );
    if status.success() {
        Ok(out.trim().to_owned())
    } else {
        Err(err)
    }
}

#[test]
fn postgres_rotation_mid_pgbench_loses_nothing() {
    let pg = PgServer::start();
    let mut moto = Moto::start();
    moto.owner("create", "sluice/app", Some(APP));
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::pool(4));
    let yaml = stored_config(&yaml, &moto, "3s");
    let proxy = Sluice::start_with_env(&yaml, &secrets, &moto.env());
    let (status, _, err) =
        command_output(client(&pg, &proxy, "pgbench", APP).args(["-i", "-q", "-s", "1"]));
    assert!(status.success(), "pgbench -i through sluice: {err}");

    let bench = client(&pg, &proxy, "pgbench", APP)
        .args(["-n", "-c", "8", "-j", "2", "-T", "14"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    thread::sleep(Duration::from_secs(2));
    // createSecret, then setSecret: the database has the new password from here on.
    moto.owner("pending", "sluice/app", Some((APP.0, NEW_PASSWORD)));
    pg.psql(&format!("ALTER ROLE {} PASSWORD '{NEW_PASSWORD}'", APP.0));
    thread::sleep(Duration::from_secs(3));
    // Mid-rotation, clients holding either password get in.
    assert_eq!(psql_as(&pg, &proxy, APP.1).as_deref(), Ok("1"));
    assert_eq!(psql_as(&pg, &proxy, NEW_PASSWORD).as_deref(), Ok("1"));
    // finishSecret.
    moto.owner("finish", "sluice/app", None);
    thread::sleep(Duration::from_secs(4));
    // The timer has read the finished rotation: the old password is gone.
    assert_eq!(psql_as(&pg, &proxy, NEW_PASSWORD).as_deref(), Ok("1"));
    let refused = psql_as(&pg, &proxy, APP.1).unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // Secrets Manager goes away: the cached secret keeps serving, the failure is logged.
    moto.stop();
    thread::sleep(Duration::from_secs(3));
    assert_eq!(psql_as(&pg, &proxy, NEW_PASSWORD).as_deref(), Ok("1"));
    let output = bench.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "pgbench ended early"
    );
    assert!(output.status.success(), "pgbench: {out}\n{err}");
    assert!(
        !err.contains("abort") && !err.contains("error"),
        "pgbench: {err}"
    );
    assert!(
        out.contains("number of failed transactions: 0"),
        "pgbench: {out}"
    );
    let done = processed(&out);
    assert!(done > 100, "pgbench ran only {done} transactions:\n{out}");
    // Every tpcb-like transaction inserts one history row: nothing committed was lost.
    let history: i64 = pg
        .psql_db(APPDB, "select count(*) from pgbench_history")
        .parse()
        .unwrap();
    assert_eq!(history, done);

    // The database did reject the old password during the rotation, and sluice recovered.
    let pg_log = pg.log_contents();
    assert!(
        pg_log.contains(&format!(
            "password authentication failed for user \"{}\"",
            APP.0
        )),
        "the rotation never reached a server login"
    );
    // The timer's next read fails (after the SDK's own retries) and says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.log_contents().contains("secret refresh failed") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(psql_as(&pg, &proxy, NEW_PASSWORD).as_deref(), Ok("1"));
    let log = proxy.log_contents();
    assert!(log.contains("database credentials changed"), "{log}");
    assert!(log.contains("secret refresh failed"), "{log}");
    for secret in [APP.1, NEW_PASSWORD] {
        assert!(!log.contains(secret), "sluice logged a password");
    }
}

#[test]
fn mariadb_rotation_keeps_logins_working() {
    let db = MariaDb::start();
    let mut moto = Moto::start();
    moto.owner("create", "sluice/app", Some(APP));
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::pool(2));
    let yaml = stored_config(&yaml, &moto, "1h");
    let proxy = Sluice::start_with_env(&yaml, &secrets, &moto.env());
    let query = |password: &str| {
        let mut cmd: Command = mariadb::client();
        cmd.args(["-h", "127.0.0.1", "-P", &proxy.port().to_string()])
            .args(["-u", APP.0, &format!("-p{password}"), "appdb"])
            .args(["-e", "select 40 + 2"]);
        let (status, out, err) = command_output(&mut cmd);
        if status.success() {
            Ok(out.trim().to_owned())
        } else {
            Err(err)
        }
    };
    assert_eq!(query(APP.1).as_deref(), Ok("42"));
    moto.owner("pending", "sluice/app", Some((APP.0, NEW_PASSWORD)));
    db.sql(&format!(
        "ALTER USER '{}'@'%' IDENTIFIED BY '{NEW_PASSWORD}'",
        APP.0
    ));
    // Pooled server connections are past their lifetime: the next borrow logs in anew, is
    // refused with the cached password, re-reads the secret and logs in with AWSPENDING.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(query(APP.1).as_deref(), Ok("42"));
    assert_eq!(query(NEW_PASSWORD).as_deref(), Ok("42"));
    moto.owner("finish", "sluice/app", None);
    moto.stop();
    thread::sleep(Duration::from_millis(1500));
    // The store is gone and the TTL is an hour: what was read keeps working.
    assert_eq!(query(NEW_PASSWORD).as_deref(), Ok("42"));
    let log = proxy.log_contents();
    assert!(log.contains("database credentials changed"), "{log}");
}
