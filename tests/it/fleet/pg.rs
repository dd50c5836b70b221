//! The fleet on PostgreSQL: pgbench through three processes, `pg_stat_activity` counting.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{
    BUDGET, Drive, Member, Sampler, finished, number, three_busy_then_two_stop, wait_members,
};
use crate::pg_proxy::client;
use crate::support::postgres::{APP, APPDB, MONITOR, PgServer};
use crate::support::sluice::{ProxyOptions, config_for};
use crate::support::tools::command_output;

/// The fleet's backends (the pools log in as `app`, the probes as `monitor`), counted by a
/// psql over TCP as `monitor`; psql's own backends left out (two counts may run at once).
fn fleet_backends(psql: &Path, port: u16) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename IN ('{}', '{}') \
         AND backend_type = 'client backend' AND application_name <> 'psql'",
        APP.0, MONITOR.0
    );
    let (status, out, err) = command_output(
        Command::new(psql)
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", MONITOR.0, "-d", "postgres", "-c", &sql])
            .env("PGPASSWORD", MONITOR.1)
            .env("PGCONNECT_TIMEOUT", "10"),
    );
    assert!(status.success(), "counting the fleet's backends: {err}");
    out.trim().parse().unwrap_or(usize::MAX)
}

fn pgbench(pg: &PgServer, member: &Member, secs: u32) -> std::process::Child {
    client(pg, &member.proxy, "pgbench", APP)
        .args(["-n", "-c", "40", "-j", "2", "-T", &secs.to_string()])
        .args(["-b", "select-only@9", "-b", "simple-update@1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// pgbench's count of processed transactions, after checking it failed none.
fn processed(child: std::process::Child, who: &str) -> u64 {
    let text = finished(child, who);
    if let Some(failed) = number(&text, "number of failed transactions: ") {
        assert_eq!(failed, 0, "{who}:\n{text}");
    }
    number(&text, "number of transactions actually processed: ")
        .unwrap_or_else(|| panic!("{who}: no transaction count:\n{text}"))
}

/// A server with pgbench's tables.
fn server() -> PgServer {
    let pg = PgServer::start();
    let (status, _, err) = command_output(
        pg.cmd("pgbench")
            .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1"])
            .args(["-p", &pg.port().to_string(), "-U", APP.0, APPDB])
            .env("PGPASSWORD", APP.1),
    );
    assert!(status.success(), "pgbench -i: {err}");
    pg
}

/// A fleet member in front of `pg`: its own cap 20, probes every 100 ms.
fn member(pg: &PgServer) -> Member {
    let opts = ProxyOptions {
        pool_size: 20,
        borrow_timeout: "60s".into(),
        health_interval: Some("100ms".into()),
        ..ProxyOptions::default()
    };
    let (yaml, secrets) = config_for(pg, &opts);
    Member::start(&yaml, &secrets)
}

/// Waits up to `limit` until `member`'s share satisfies `ok`; returns how long it took.
fn until_share(member: &Member, limit: Duration, ok: impl Fn(f64) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let share = member.fleet("fleet_share_connections").unwrap_or(-1.0);
        if ok(share) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "share {share} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_processes_share_twelve_connections_and_the_last_one_grows() {
    let pg = server();
    let members: Vec<Member> = (0..3).map(|_| member(&pg)).collect();
    super::assert_fleet_families_documented(&members[0]);
    let (psql, port) = (pg.bin("psql"), pg.port());
    let drive = Drive {
        load: |m: &Member, secs| pgbench(&pg, m, secs),
        finish: processed,
        count: move || fleet_backends(&psql, port),
        share_of_three: 3.0,
        alone: 11.0,
    };
    three_busy_then_two_stop(members, drive);
}

#[test]
fn shares_follow_the_load_and_make_room_for_a_process_that_joins() {
    let pg = server();
    let (psql, port) = (pg.bin("psql"), pg.port());
    let count = move || fleet_backends(&psql, port);
    let (a, b) = (member(&pg), member(&pg));
    wait_members(&[&a, &b], 2.0);
    let started = Instant::now();
    let sampler = Sampler::start(count);

    // A alone is busy: B keeps its one pool connection, A gets the rest but the probes.
    let load_a = pgbench(&pg, &a, 16);
    let took = until_share(&a, Duration::from_secs(5), |s| s == 9.0);
    eprintln!("A alone busy: share 9 after {took:?}");
    assert_eq!(b.fleet("fleet_share_connections"), Some(1.0));

    // The load moves: B gets busy too, and they meet at 5 each.
    let load_b = pgbench(&pg, &b, 12);
    let took = until_share(&b, Duration::from_secs(5), |s| s == 5.0);
    until_share(&a, Duration::from_secs(5), |s| s == 5.0);
    eprintln!("B busy too: 5 each after {took:?}");

    // C joins, busy from its start: 3 each.
    let joined = Instant::now();
    let c = member(&pg);
    let load_c = pgbench(&pg, &c, 6);
    let took = until_share(&c, Duration::from_secs(5), |s| s == 3.0);
    until_share(&a, Duration::from_secs(5), |s| s == 3.0);
    until_share(&b, Duration::from_secs(5), |s| s == 3.0);
    let settled = Instant::now();
    eprintln!("C joined: 3 each {took:?} after it started");
    let (_, pools) = crate::metrics::get(c.admin, "/v1/pools");
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    let fleet = &pools[0]["fleet"];
    assert_eq!(
        (fleet["budget"].as_u64(), fleet["members"].as_u64()),
        (Some(12), Some(3)),
        "{pools}"
    );
    assert_eq!(fleet["share"], 3, "{pools}");
    for (load, who) in [(load_a, "A"), (load_b, "B"), (load_c, "C")] {
        assert!(processed(load, who) > 0);
    }
    // Within the budget, but for the joining process's probe until the others made room
    // (docs/fleet.md): by one at most, from its start until all three shares had settled
    // (and half a second more for the sampler's own lag).
    let samples = sampler.samples.lock().unwrap().clone();
    let max = samples.iter().map(|(_, n)| *n).max().unwrap_or(0);
    eprintln!("{} samples, at most {max} connections", samples.len());
    for (at, n) in samples.iter().filter(|(at, _)| *at >= started) {
        let joining = *at >= joined && *at <= settled + Duration::from_millis(500);
        let bound = if joining { BUDGET + 1 } else { BUDGET };
        assert!(
            *n <= bound,
            "{n} connections {:?} after the start: {samples:?}",
            at.duration_since(started)
        );
    }
}
