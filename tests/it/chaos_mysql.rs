//! Faults under load for the MySQL engine, with the same checkers as `chaos` (a PyMySQL
//! workload, `drivers/mysql_chaos.py`): no acknowledged insert lost or doubled, the bank total
//! constant, each session's user variable and temporary table its own, every operation
//! answered within 60 s. Faults: mariadbd frozen, its sockets killed, a held partition, and
//! the writer killed with -9.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::drivers::{Summary, script};
use crate::failover::cluster_config;
use crate::support::cluster::MariaCluster;
use crate::support::fake::{Chaos, chaos_relay};
use crate::support::mariadb::{APP, MY_APPDB, MariaDb};
use crate::support::sluice::{ProxyOptions, Sluice, config_for_mariadb};
use crate::support::tools::{self, is_root, rss_kib};

const ACCOUNTS: i64 = 10;
const TOTAL: i64 = ACCOUNTS * 1000;
const SECONDS: u64 = 35;

pub(crate) fn proxy(db: &MariaDb, instance_port: u16) -> Sluice {
    let (yaml, secrets) = config_for_mariadb(
        db,
        &ProxyOptions {
            pool_size: 8,
            borrow_timeout: "50s".into(),
            client_auth_type: "mysql_native_password".into(),
            ..ProxyOptions::default()
        },
    );
    let yaml = yaml.replace(&format!(":{}]", db.port()), &format!(":{instance_port}]"));
    Sluice::start_with_secrets(&yaml, &secrets)
}

/// The workload running through sluice.
pub(crate) struct Load {
    child: std::process::Child,
    pid: u32,
    base: u64,
}

/// Runs `fault` 4 s into the workload, then checks.
fn under_load(db: &MariaDb, proxy: &Sluice, fault: impl FnOnce()) {
    let load = start(db, proxy);
    fault();
    finish(load, db);
}

/// Creates the tables on the writer `db` and starts the workload (for `SECONDS`) through
/// `proxy`; returns 4 s in.
fn start(db: &MariaDb, proxy: &Sluice) -> Load {
    start_for(db, proxy, SECONDS)
}

/// [`start`], with the workload running for `seconds`.
pub(crate) fn start_for(db: &MariaDb, proxy: &Sluice, seconds: u64) -> Load {
    db.sql(&format!(
        "USE {MY_APPDB}; CREATE TABLE ledger (writer INT, seq INT); \
         CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT); \
         INSERT INTO accounts SELECT seq, 1000 FROM seq_0_to_{};",
        ACCOUNTS - 1
    ));
    let base = rss_kib(proxy.pid());
    let child = Command::new(tools::python())
        .arg(script("mysql_chaos.py"))
        .args([
            "127.0.0.1",
            &proxy.port().to_string(),
            APP.0,
            APP.1,
            MY_APPDB,
        ])
        .args([seconds.to_string(), ACCOUNTS.to_string(), TOTAL.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    Load {
        child,
        pid: proxy.pid(),
        base,
    }
}

/// Waits for the workload and checks what it saw against the writer `db`.
pub(crate) fn finish(load: Load, db: &MariaDb) {
    let (base, pid) = (load.base, load.pid);
    let out = load.child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    let seen = Summary(
        serde_json::from_str(
            line.unwrap_or_else(|| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr))),
        )
        .unwrap(),
    );
    let acked = seen["acked"].as_array().unwrap();
    let mut counts = seen.0.clone();
    counts["acked"] = acked.len().into();
    println!("{counts}");
    assert!(acked.len() > 100 && seen.int("transfers") > 50, "{seen}");
    assert!(seen.int("identity_checks") > 50, "{seen}");
    assert_eq!(seen.int("hung"), 0, "{seen}");
    assert_eq!(seen["wrong_totals"].as_array().unwrap().len(), 0, "{seen}");
    assert_eq!(seen["leaks"].as_array().unwrap().len(), 0, "{seen}");
    let doubled = db.sql(&format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {MY_APPDB}.ledger GROUP BY writer, seq \
         HAVING COUNT(*) > 1) d"
    ));
    assert_eq!(doubled, "0", "inserts applied twice");
    let stored: std::collections::HashSet<String> = db
        .sql(&format!(
            "SELECT CONCAT(writer, ',', seq) FROM {MY_APPDB}.ledger"
        ))
        .lines()
        .map(str::to_owned)
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .map(|a| format!("{},{}", a[0], a[1]))
        .filter(|a| !stored.contains(a))
        .collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    let total = db.sql(&format!("SELECT SUM(balance) FROM {MY_APPDB}.accounts"));
    assert_eq!(total, TOTAL.to_string());
    let after = rss_kib(pid);
    assert!(after < base + 64 * 1024, "RSS {base} KiB, then {after} KiB");
}

/// The process and its descendants (mariadbd may run under a wrapper that dropped root).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        tree.extend(tools::children_of(tree[i]));
        i += 1;
    }
    tree
}

fn signal(sig: &str, pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }
}

#[test]
fn mariadb_frozen_for_20_s_loses_and_leaks_nothing() {
    let db = MariaDb::start();
    let sluice = proxy(&db, db.port());
    under_load(&db, &sluice, || {
        let tree = process_tree(db.pid().unwrap());
        signal("-STOP", &tree);
        std::thread::sleep(Duration::from_secs(20));
        signal("-CONT", &tree);
    });
}

#[test]
fn mariadb_sockets_killed_with_ss_k_lose_and_leak_nothing() {
    if !is_root() {
        println!("skipped: ss -K needs root");
        return;
    }
    let db = MariaDb::start();
    let sluice = proxy(&db, db.port());
    let port = db.port().to_string();
    under_load(&db, &sluice, || {
        for _ in 0..3 {
            let status = Command::new("ss")
                .args(["-K", "dst", "127.0.0.1", "dport", "=", &format!(":{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[test]
fn mariadb_behind_a_partition_held_for_10_s_loses_and_leaks_nothing() {
    let db = MariaDb::start();
    let chaos = Arc::new(Chaos::default());
    let relay = chaos_relay(db.port(), chaos.clone());
    let sluice = proxy(&db, relay.port());
    under_load(&db, &sluice, || {
        chaos.hold.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(10));
        chaos.hold.store(false, Ordering::SeqCst);
    });
}

/// kill -9 of the MariaDB writer and its semi-synchronous replica promoted (after applying
/// what it received, as `MariaCluster::promote` does): no acknowledged insert may be lost.
#[test]
fn the_mariadb_writer_killed_and_its_semi_sync_replica_promoted_loses_and_leaks_nothing() {
    let mut cluster = MariaCluster::start();
    cluster.primary().sql(
        "SET GLOBAL rpl_semi_sync_master_enabled = ON; \
         SET GLOBAL rpl_semi_sync_master_timeout = 600000; \
         SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC;",
    );
    cluster.member(1).sql(
        "SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD;",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster
        .primary()
        .sql("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
        .split_whitespace()
        .last()
        != Some("1")
    {
        assert!(std::time::Instant::now() < deadline, "no semi-sync replica");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sluice = Sluice::start(&cluster_config("mysql", &cluster.addrs(), "100ms", ""));
    let load = start(cluster.primary(), &sluice);
    cluster.kill9(0);
    cluster.promote(1);
    finish(load, cluster.member(1));
}
