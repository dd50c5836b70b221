//! Partitions made by the kernel: nftables rules in a network namespace the test creates, never
//! in the machine's own (other services share it). The outer test makes the namespace and runs
//! this test binary again inside it, where PostgreSQL, sluice and the checked workload of
//! `chaos.rs` all live on the namespace's own loopback; there a DROP rule toward the writer
//! (no answer, no RST: a dead host or a half-open path) holds longer than a client's patience,
//! then a REJECT rule answers every packet with a reset. The same for MariaDB, with the PyMySQL
//! workload of `chaos_mysql.rs`.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use crate::chaos::{Load, proxy_for};
use crate::chaos_mysql;
use crate::support::client::{connect, scalar};
use crate::support::mariadb::{self, MY_APPDB, MariaDb};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::{self, is_root, run_ok};

/// The namespace the outer test ran in (its inode): the inner run refuses to touch nftables
/// without it, or in it.
const NETNS: &str = "SLUICE_TEST_NETNS";

/// Deletes the namespace (and every rule and process-free socket in it) on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn nftables_drop_and_reject_toward_postgres_lose_nothing_and_hang_no_client() {
    run_inside_a_namespace("inside_the_namespace_postgres");
}

#[test]
fn nftables_drop_and_reject_toward_mariadb_lose_nothing_and_hang_no_client() {
    run_inside_a_namespace("inside_the_namespace_mariadb");
}

/// Makes a namespace of its own and runs the ignored test `inner` of this binary inside it.
fn run_inside_a_namespace(inner: &str) {
    if !is_root() || Command::new("nft").arg("--version").output().is_err() {
        println!("skipped: needs root and nftables (scripts/test installs it)");
        return;
    }
    // The namespace has loopback only: the venv is made (from PyPI) out here.
    tools::python();
    let engine = inner.trim_start_matches("inside_the_namespace_");
    let ns = Namespace(format!("sluice-it-{}-{engine}", std::process::id()));
    run_ok(Command::new("ip").args(["netns", "add", &ns.0]));
    run_ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", &format!("partition::{inner}"), "--ignored"])
        .arg("--nocapture")
        .env(NETNS, netns_inode().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "the run inside the namespace failed");
}

/// Which network namespace this process is in.
fn netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

/// Runs `nft` in this process's namespace.
fn nft(args: &str) {
    run_ok(Command::new("nft").args(args.split(' ')));
}

/// Checks that this process runs in the namespace the outer test made, and makes the chain the
/// faults go in.
fn in_the_namespace() {
    let outer = std::env::var(NETNS).expect("only inside the namespace the outer test makes");
    assert_ne!(
        netns_inode().to_string(),
        outer,
        "refusing to add rules to the namespace the tests were started in"
    );
    nft("add table inet sluice_chaos");
    nft("add chain inet sluice_chaos out { type filter hook output priority 0 ; }");
}

/// Toward the server on `port`: DROP both ways (established connections go silent: sluice's
/// writes are never acknowledged and the server's replies never arrive) for longer than a
/// client waits for one operation, so only sluice giving up on the dead path keeps clients
/// from hanging; then REJECT with a reset; then healed.
async fn drop_then_reject(port: u16) {
    nft(&format!(
        "add rule inet sluice_chaos out tcp dport {port} drop"
    ));
    nft(&format!(
        "add rule inet sluice_chaos out tcp sport {port} drop"
    ));
    tokio::time::sleep(Duration::from_secs(70)).await;
    nft("flush chain inet sluice_chaos out");
    tokio::time::sleep(Duration::from_secs(5)).await;
    nft(&format!(
        "add rule inet sluice_chaos out tcp dport {port} reject with tcp reset"
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    nft("flush chain inet sluice_chaos out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run inside its own network namespace by the test above"]
async fn inside_the_namespace_postgres() {
    in_the_namespace();
    let pg = PgServer::start();
    let proxy = proxy_for(&pg, pg.port());
    let load = Load::start(&pg, &proxy, proxy.port()).await;
    drop_then_reject(pg.port()).await;
    load.finish(&pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run inside its own network namespace by the test above"]
async fn inside_the_namespace_mariadb() {
    in_the_namespace();
    let db = MariaDb::start();
    let proxy = chaos_mysql::proxy(&db, db.port());
    // The workload outlasts the faults (4 s in, 85 s long) by 15 s of healed running.
    let load = tokio::task::block_in_place(|| chaos_mysql::start_for(&db, &proxy, 105));
    drop_then_reject(db.port()).await;
    tokio::task::block_in_place(|| chaos_mysql::finish(load, &db));
}

/// `tcp_user_timeout` ends dead paths, not slow queries: a server busy for several timeouts
/// still acknowledges what sluice sent and answers its keepalives, so its query completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_outlasting_tcp_user_timeout_several_times_is_not_cut() {
    let short = |yaml: String| {
        yaml.replace(
            "connection_borrow_timeout: 10s\n",
            "connection_borrow_timeout: 10s\n      tcp_user_timeout: 1s\n",
        )
    };
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    assert!(short(yaml.clone()) != yaml, "the setting went in");
    let proxy = Sluice::start_with_secrets(&short(yaml), &secrets);
    let client = connect(&proxy, (APP.0, APP.1), APPDB).await.unwrap();
    let slept = scalar(&client, "SELECT pg_sleep(6)::text || 'done'").await;
    assert_eq!(slept, "done");

    let db = MariaDb::start();
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::default());
    let proxy = Sluice::start_with_secrets(&short(yaml), &secrets);
    let out = tokio::task::block_in_place(|| {
        mariadb::cli_at(
            proxy.port(),
            mariadb::APP.0,
            mariadb::APP.1,
            MY_APPDB,
            "SELECT SLEEP(6)",
        )
    });
    assert_eq!(
        out,
        Ok("0".to_owned()),
        "SLEEP returns 0 when not interrupted"
    );
}
