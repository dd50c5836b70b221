//! psycopg 3 and asyncpg through sluice: mixed loads of 30 clients on a pool of 4, and prepared statements
//! that must survive the client wiping them with DEALLOCATE ALL / DISCARD ALL.

use std::process::Command;
use std::time::Duration;

use super::{assert_pool_bounded, direct, proxy, run_sampling, script};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools;

#[test]
fn psycopg_mixed_load_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let (threads, txns) = (30, 30);
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("psycopg_load.py"))
        .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1])
        .args([threads.to_string(), txns.to_string()]);
    let run = run_sampling(&pg, cmd, Duration::from_secs(240));
    assert!(run.ok, "psycopg load failed:\n{run}");
    assert_pool_bounded(&run);

    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("threads_ok"), threads, "{run}");
    let ops = result["ops"].as_object().unwrap();
    let op = |name: &str| ops.get(name).and_then(|v| v.as_i64()).unwrap_or(0);
    assert_eq!(
        ops.values().filter_map(|v| v.as_i64()).sum::<i64>(),
        threads * txns
    );
    for name in [
        "simple", "prepared", "commit", "rollback", "error", "copy", "pipeline",
    ] {
        assert!(
            op(&format!("op_{name}")) >= threads,
            "op_{name} ran too rarely: {result}"
        );
    }
    assert_eq!(
        num("notices"),
        op("op_notice"),
        "one NOTICE per DO block: {result}"
    );
    assert_eq!(num("errors_caught"), op("op_error"), "{result}");

    let expected = format!("{}|{}|{}", num("rows"), num("sum"), num("rows"));
    let kv = direct(
        &pg,
        "select count(*), sum(val), count(distinct ukey) from load_kv",
    );
    assert_eq!(kv, expected, "load_kv totals (rows|sum|unique keys)");
    let per_thread = direct(&pg, "select count(distinct thread) from load_kv");
    assert_eq!(per_thread, threads.to_string());
    let copy = direct(&pg, "select count(*), sum(val) from load_copy");
    assert_eq!(copy, format!("{}|{}", num("copy_rows"), num("copy_sum")));
    assert!(num("copy_rows") >= 25 * threads, "{result}");
    drop(sluice);
}

/// psycopg sends `DEALLOCATE ALL` after every ROLLBACK once it has prepared statements; with a
/// pool of one, every session then runs on the connection whose statements were wiped.
#[test]
fn statements_survive_deallocate_all_and_discard_all() {
    let pg = PgServer::start();
    let sluice = Sluice::start_for(
        &pg,
        ProxyOptions {
            pool_size: 1,
            ..ProxyOptions::default()
        },
    );
    let (status, out, err) = tools::command_output(
        Command::new(tools::python())
            .arg(script("psycopg_deallocate.py"))
            .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1]),
    );
    let checks: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("CHECK "))
        .collect();
    let failed: Vec<&&str> = checks.iter().filter(|c| c.contains("FAILED")).collect();
    assert!(
        status.success() && failed.is_empty() && checks.len() == 9,
        "{status}: {} of {} checks failed: {failed:#?}\n--- stdout\n{out}\n--- stderr\n{err}",
        failed.len(),
        checks.len()
    );
    for (name, want) in [
        ("a-after-rollback", "4"),
        ("deallocate_all-other-session", "7"),
    ] {
        assert!(
            checks.contains(&format!("{name} {want}").as_str()),
            "{checks:#?}"
        );
    }
}

/// Two sessions prepare one name with different text over a single server connection; a third
/// never prepared it. Each sees only its own (or 26000), before and after DEALLOCATE.
#[test]
fn statement_names_belong_to_their_session() {
    let pg = PgServer::start();
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(1));
    let (status, out, err) = tools::command_output(
        Command::new(tools::python())
            .arg(script("psycopg_names.py"))
            .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1]),
    );
    assert!(
        status.success() && out.contains("RESULT ok"),
        "{out}\n{err}"
    );
}

/// psycopg pipelines whose transaction fails (a failing query, COMMIT raises, ROLLBACK), from 8
/// threads on a pool of 2. psycopg itself sometimes raises PipelineAborted from the ROLLBACK,
/// direct too (measured: 389 of 2,400 iterations direct, 25 through sluice); through sluice that
/// may happen no more often than direct, with a margin for the machine's noise, and nothing else
/// may ever go wrong.
#[test]
fn pipeline_errors_under_load() {
    let pg = PgServer::start();
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let (threads, iterations) = (8, 300);
    let run = |port: u16| {
        let (status, out, err) = tools::command_output(
            Command::new(tools::python())
                .arg(script("psycopg_pipeline_errors.py"))
                .args(["127.0.0.1", &port.to_string(), APPDB, APP.0, APP.1])
                .args([threads.to_string(), iterations.to_string()]),
        );
        assert!(status.success(), "{out}\n{err}");
        let count = |key: &str| -> u32 {
            let line = out.lines().find_map(|l| l.strip_prefix(key));
            line.unwrap_or_else(|| panic!("{key} in {out}"))
                .parse()
                .unwrap()
        };
        assert_eq!(count("OTHER "), 0, "port {port}: {out}");
        count("ABORTED ")
    };
    // How often psycopg aborts depends on how its threads interleave, which a busy machine
    // shifts between two runs (measured in a full suite: 168 direct, 331 through sluice; alone
    // right after: 215 and 155, 103 and 156). A pair that differs beyond the margin is measured
    // once more, and the second pair stands, as the compat suites rerun timing-bound cases.
    let pair = || {
        let direct = run(pg.port());
        let proxied = run(sluice.port());
        eprintln!(
            "PipelineAborted: direct {direct}, sluice {proxied} of {}",
            threads * iterations
        );
        (direct, proxied)
    };
    let margin = threads * iterations / 20;
    let (mut direct, mut proxied) = pair();
    if proxied > direct + margin {
        (direct, proxied) = pair();
    }
    assert!(
        proxied <= direct + margin,
        "PipelineAborted more often through sluice ({proxied}) than direct ({direct})"
    );
}

/// asyncpg: 30 connections on a pool of 4, its statement cache, transactions, executemany and
/// COPY from records.
#[test]
fn asyncpg_load_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let (conns, iters) = (30, 20);
    let mut cmd = Command::new(tools::python());
    cmd.arg(script("asyncpg_load.py"))
        .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1])
        .args([conns.to_string(), iters.to_string()]);
    let run = run_sampling(&pg, cmd, Duration::from_secs(240));
    assert!(run.ok, "asyncpg load failed:\n{run}");
    assert_pool_bounded(&run);
    let result = run.result();
    assert_eq!(result.int("ok"), conns, "{run}");
    assert_eq!(result.int("errors"), 0, "{run}");
    let db = direct(&pg, "select count(*), count(distinct thread) from apg_kv");
    assert_eq!(db, format!("{}|{conns}", conns * iters));
    let copied = direct(&pg, "select count(*) from apg_copy");
    assert_eq!(copied, (conns * 2 * iters / 5).to_string());
}

/// psycopg's ClientCursor interpolates parameters into simple Queries, so sluice's scan memo
/// answers most of them: advisory locks and temporary tables among look-alike texts with
/// numbers of every length must still pin A (B never lands on its backend nor sees its table)
/// and lift, round after round. Each pin follows right behind the statement that lifted the
/// last one: the pin check that statement set off must not unpin the new pin (it did: B was
/// handed A's connection and read A's temporary table, in every run).
#[test]
fn look_alike_texts_still_pin() {
    let pg = PgServer::start();
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let (status, out, err) = tools::command_output(
        Command::new(tools::python())
            .arg(script("psycopg_memo.py"))
            .args(["127.0.0.1", &sluice.port().to_string(), APPDB, APP.0, APP.1]),
    );
    let checks = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| r["checks"].as_i64());
    assert!(
        status.success() && checks >= Some(150),
        "{status}, {checks:?} checks\n{out}\n{err}"
    );
    let log = sluice.log_contents();
    assert!(log.contains("reason=advisory_lock"), "{log}");
}

/// Sessions that each keep state on the server (temporary tables, advisory locks, parameters,
/// SQL-level prepared statements, holdable cursors, open transactions, DISCARD ALL), in seeded
/// random interleavings, each checking that it sees its own state and no one else's. The same
/// seed runs direct first: the script's model of PostgreSQL must hold there. Then through sluice,
/// and through a sluice that parks sessions idle for a second, with the script idling now and
/// then (a parked session comes back with its state). The pool is as large as the session
/// count, since one script drives every session and must never wait on a pin.
#[test]
fn session_state_never_crosses_sessions() {
    let pg = PgServer::start();
    // The roles the script's sessions SET ROLE to (`iso_role_<n>`, one per session).
    pg.psql(&format!(
        "DO $$ BEGIN FOR n IN 0..3 LOOP EXECUTE format('CREATE ROLE iso_role_%s NOLOGIN; \
         GRANT iso_role_%s TO {}', n, n); END LOOP; END $$",
        APP.0
    ));
    let sessions = 4;
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(sessions));
    let parking = Sluice::start_for(
        &pg,
        ProxyOptions {
            idle_client_park_after: Some("1s".into()),
            ..ProxyOptions::pool(sessions)
        },
    );
    // `rest`: now and then the script idles past `park_after` before a step.
    let run = |port: u16, seed: u32, rest: &str| {
        let (status, out, err) = tools::command_output(
            Command::new(tools::python())
                .arg(script("psycopg_isolation.py"))
                .args(["127.0.0.1", &port.to_string(), APPDB, APP.0, APP.1])
                .args([sessions.to_string(), "1500".into(), seed.to_string()])
                .env("ISO_REST", rest),
        );
        assert!(
            status.success() && out.contains("\"failures\": 0"),
            "port {port} (sluice {}, parking {}), seed {seed}: {status}\n{out}\n{err}",
            sluice.port(),
            parking.port()
        );
    };
    for seed in 1..=3 {
        run(pg.port(), seed, "0");
        run(sluice.port(), seed, "0");
    }
    // About 15 rests of 1.2 s a run.
    for seed in 4..=5 {
        run(parking.port(), seed, "1.2");
    }
}
