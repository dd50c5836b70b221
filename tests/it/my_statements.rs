//! MySQL/MariaDB statements through sluice against a direct connection: binary prepared
//! statements across a schema migration (MariaDB re-prepares them itself; sluice must not get in
//! the way), `LOAD DATA LOCAL INFILE` from PyMySQL and the mariadb CLI, and the
//! `program_name` sluice's own connections carry; sessions with server-side state in random
//! interleavings, each seeing only its own; the role a reset connection has.

use crate::drivers::migration::no_worse;
use crate::drivers::{Run, run_sampling_with};
use crate::my_proxy::python;
use crate::support::mariadb::{APP, MY_APPDB, MY_OTHERDB, MariaDb, MariaOptions, cli_at, client};
use crate::support::sluice::{ProxyOptions, Sluice, config_for_mariadb};
use crate::support::tools::command_output;
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

/// `LOAD DATA LOCAL INFILE` from PyMySQL, direct and through sluice: the same results.
#[test]
fn load_data_local_infile() {
    let db = MariaDb::start();
    let sluice = Sluice::start_for_mariadb(&db, ProxyOptions::pool(2));
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().to_str().unwrap();
    let run = |port: u16| {
        let cmd = python("pymysql_infile.py", port, &[MY_APPDB, files]);
        let run = run_sampling_with(cmd, Duration::from_secs(120), || db.connection_count(APP.0));
        assert!(run.ok, "{run}");
        run.result()
    };
    let direct = run(db.port());
    let proxied = run(sluice.port());
    eprintln!("direct {direct}\nsluice {proxied}");
    assert_eq!(direct["small_totals"], serde_json::json!([500, 125_250]));
    assert_eq!(direct["large_rows"], 200_000);
    assert_eq!(proxied.0, direct.0);

    // The mariadb CLI, a 500-row file, both ways.
    let csv = dir.path().join("cli.csv");
    let rows: String = (1..=500).map(|i| format!("{i},cli-{i}\n")).collect();
    std::fs::write(&csv, rows).unwrap();
    let sql = format!(
        "truncate infile_t; LOAD DATA LOCAL INFILE '{}' INTO TABLE infile_t FIELDS TERMINATED BY ','; \
         select count(*), sum(id) from infile_t",
        csv.display()
    );
    let cli_load = |port: u16| {
        let mut cmd = client();
        cmd.args([
            "--local-infile=1",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .args(["-u", APP.0, &format!("-p{}", APP.1), MY_APPDB, "-e", &sql]);
        command_output(&mut cmd)
    };
    for port in [db.port(), sluice.port()] {
        let (status, out, err) = cli_load(port);
        assert!(status.success(), "port {port}: {err}");
        assert_eq!(out.trim(), "500\t125250", "port {port}");
    }

    // An endpoint with local_infile: false refuses the file as such a server would.
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::pool(2));
    let yaml = yaml.replace(
        "role: read_write\n",
        "role: read_write\n    local_infile: false\n",
    );
    let closed = Sluice::start_with_secrets(&yaml, &secrets);
    let (status, _, err) = cli_load(closed.port());
    assert!(!status.success() && err.contains("ERROR 4166"), "{err}");
    assert_eq!(
        cli_at(
            closed.port(),
            APP.0,
            APP.1,
            MY_APPDB,
            "select count(*) from infile_t"
        )
        .unwrap(),
        "0",
        "the truncate ran, the load did not"
    );
}

/// sluice's own connections say what they are for: `program_name` in the connection attributes
/// (MariaDB shows them with the performance schema on), `sluice probe` for the probes and
/// `sluice pool` for pooled connections.
#[test]
fn sluice_connections_name_their_program() {
    let db = MariaDb::start_with(MariaOptions {
        extra_conf: vec!["performance_schema=ON".into()],
        ..MariaOptions::default()
    });
    let sluice = Sluice::start_for_mariadb(&db, ProxyOptions::pool(2));
    let out = cli_at(sluice.port(), APP.0, APP.1, MY_APPDB, "SELECT 1");
    assert_eq!(out.as_deref().map(str::trim), Ok("1"), "{out:?}");
    let programs = db.sql(
        "SELECT GROUP_CONCAT(DISTINCT ATTR_VALUE ORDER BY ATTR_VALUE) \
         FROM performance_schema.session_connect_attrs WHERE ATTR_NAME = 'program_name'",
    );
    assert!(programs.contains("sluice pool"), "{programs}");
    assert!(programs.contains("sluice probe"), "{programs}");
    drop(sluice);
}

/// Sessions that each keep state on the server (temporary tables, user variables, named locks,
/// SQL-level prepared statements, the time zone, sql_mode, the isolation level, the role, the
/// schema, open transactions), in seeded random interleavings, each checking that it sees its
/// own state and no one else's: direct first (the script's model of MariaDB must hold there),
/// then through sluice, and through a sluice that parks sessions idle for a second, with the
/// script idling now and then. The pool is as large as the session count, since one script
/// drives every session and must never wait on a pin.
#[test]
fn session_state_never_crosses_sessions() {
    let db = MariaDb::start();
    // The roles the script's sessions SET ROLE to (`iso_role_<n>`, one per session).
    for n in 0..4 {
        db.sql(&format!(
            "CREATE ROLE iso_role_{n}; GRANT iso_role_{n} TO {}@'%'",
            APP.0
        ));
    }
    let sessions = 4;
    let sluice = Sluice::start_for_mariadb(&db, ProxyOptions::pool(sessions));
    let parking = Sluice::start_for_mariadb(
        &db,
        ProxyOptions {
            idle_client_park_after: Some("1s".into()),
            ..ProxyOptions::pool(sessions)
        },
    );
    // `rest`: now and then the script idles past `park_after` before a step.
    let run = |port: u16, seed: u32, rest: &str| {
        let mut cmd = python(
            "pymysql_isolation.py",
            port,
            &[
                MY_APPDB,
                MY_OTHERDB,
                &sessions.to_string(),
                "1500",
                &seed.to_string(),
            ],
        );
        let (status, out, err) = command_output(cmd.env("ISO_REST", rest));
        assert!(
            status.success() && out.contains("\"failures\": 0"),
            "port {port} (sluice {}, parking {}), seed {seed}: {status}\n{out}\n{err}",
            sluice.port(),
            parking.port()
        );
    };
    for seed in 1..=3 {
        run(db.port(), seed, "0");
        run(sluice.port(), seed, "0");
    }
    // About 15 rests of 1.2 s a run.
    for seed in 4..=5 {
        run(parking.port(), seed, "1.2");
    }
}

/// A session that changed its role and left: its connection is reset for the next session, which
/// must get the role a new connection has. MariaDB keeps the role through COM_RESET_CONNECTION,
/// so sluice puts it back, here to the user's default role (not just none).
#[test]
fn a_reset_connection_has_the_users_default_role_again() {
    let db = MariaDb::start();
    let app = APP.0;
    db.sql(&format!(
        "CREATE ROLE def_role; CREATE ROLE other_role; GRANT def_role TO {app}@'%'; \
         GRANT other_role TO {app}@'%'; SET DEFAULT ROLE def_role FOR {app}@'%'"
    ));
    let role = |port: u16, sql: &str| cli_at(port, APP.0, APP.1, MY_APPDB, sql).unwrap();
    let fresh = "SELECT IFNULL(CURRENT_ROLE(), 'none')";
    assert_eq!(
        role(db.port(), fresh),
        "def_role",
        "a new connection, direct"
    );
    // A pool of one: every session below runs on the same server connection.
    let sluice = Sluice::start_for_mariadb(&db, ProxyOptions::pool(1));
    assert_eq!(role(sluice.port(), fresh), "def_role");
    for set in ["other_role", "NONE"] {
        let sql = format!("SET ROLE {set}; {fresh}");
        let want = if set == "NONE" { "none" } else { set };
        assert_eq!(role(sluice.port(), &sql), want, "the session's own role");
        assert_eq!(
            role(sluice.port(), fresh),
            "def_role",
            "the next session, after SET ROLE {set}"
        );
    }
}
