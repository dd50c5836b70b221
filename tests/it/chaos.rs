//! Faults under load, with checkers: while writers log every acknowledged commit, transfers
//! move money between accounts and sessions check their own SET, temp table and prepared
//! statement, a fault fires at the server. Afterwards no acknowledged commit is lost or
//! doubled, the total never moved, no session saw another's state, every operation ended with
//! a result or an error within its timeout, and sluice's memory is back near its baseline.
//! Faults: a frozen server, killed sockets, 1-byte segments, a held partition, the writer
//! killed with -9, and Secrets Manager stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

use crate::failover::cluster_config;
use crate::secrets_manager::stored_config;
use crate::support::cluster::PgCluster;
use crate::support::fake::{Chaos, chaos_relay};
use crate::support::moto::Moto;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::{is_root, rss_kib};

const ACCOUNTS: i64 = 10;
const TOTAL: i64 = ACCOUNTS * 1000;
/// What a client waits for one operation before it counts it as hung.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the workload saw.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<(i32, i32)>,
    unknown: usize,
    transfers: usize,
    audits: usize,
    wrong_totals: Vec<i64>,
    identity_checks: usize,
    leaks: Vec<String>,
    hung: usize,
    errors: usize,
    /// Errors by SQLSTATE ("closed" for a lost connection): what clients were told.
    codes: std::collections::BTreeMap<String, usize>,
}

impl Seen {
    fn error(&mut self, e: &tokio_postgres::Error) {
        self.errors += 1;
        let code = e.code().map_or("closed", |c| c.code()).to_owned();
        *self.codes.entry(code).or_default() += 1;
    }
}

async fn login(port: u16) -> Option<Client> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={APPDB} connect_timeout=10",
        APP.0, APP.1
    );
    let (client, conn) = timeout(OP_TIMEOUT, tokio_postgres::connect(&dsn, NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// A connected client, reconnecting after a loss until `stop`.
async fn session(port: u16, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::SeqCst) {
        if let Some(c) = login(port).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Inserts (writer, seq) one at a time, each its own transaction.
async fn writer(port: u16, id: i32, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut seq = 0;
    while let Some(c) = session(port, &stop).await {
        while !stop.load(Ordering::SeqCst) && !c.is_closed() {
            seq += 1;
            let sql = format!("INSERT INTO ledger VALUES ({id}, {seq})");
            let r = timeout(OP_TIMEOUT, c.batch_execute(&sql)).await;
            let mut s = seen.lock().await;
            match r {
                Ok(Ok(())) => s.acked.push((id, seq)),
                Ok(Err(e)) => {
                    s.unknown += 1;
                    s.error(&e);
                }
                Err(_) => s.hung += 1,
            }
        }
    }
}

/// Moves one unit between two accounts in one transaction, or audits the total.
async fn bank(port: u16, auditor: bool, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut n: i64 = 0;
    while let Some(c) = session(port, &stop).await {
        while !stop.load(Ordering::SeqCst) && !c.is_closed() {
            n += 1;
            let (from, to) = (n % ACCOUNTS, (n * 7 + 3) % ACCOUNTS);
            let sql = if auditor {
                "SELECT sum(balance)::text FROM accounts".to_owned()
            } else {
                format!(
                    "BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = {from}; \
                     UPDATE accounts SET balance = balance + 1 WHERE id = {to}; COMMIT"
                )
            };
            let r = timeout(OP_TIMEOUT, c.simple_query(&sql)).await;
            if matches!(r, Ok(Err(_))) && !auditor {
                // The COMMIT behind a failed statement was skipped: end the transaction.
                let _ = timeout(OP_TIMEOUT, c.batch_execute("ROLLBACK")).await;
            }
            let mut s = seen.lock().await;
            match r {
                Ok(Ok(rows)) if auditor => {
                    s.audits += 1;
                    let total = rows.iter().find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            r.get(0).and_then(|v| v.parse::<i64>().ok())
                        }
                        _ => None,
                    });
                    if total != Some(TOTAL) {
                        s.wrong_totals.push(total.unwrap_or(-1));
                    }
                }
                Ok(Ok(_)) => s.transfers += 1,
                Ok(Err(e)) => s.error(&e),
                Err(_) => s.hung += 1,
            }
        }
    }
}

/// A session with its own application_name, temp table and prepared statement, checked on
/// every round; a new session (after a loss) sets them up again.
async fn identity(port: u16, id: i32, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    while let Some(c) = session(port, &stop).await {
        let setup =
            format!("SET application_name = 'c{id}'; CREATE TEMP TABLE me AS SELECT {id} AS id");
        if !matches!(
            timeout(OP_TIMEOUT, c.batch_execute(&setup)).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        let Ok(Ok(stmt)) = timeout(OP_TIMEOUT, c.prepare("SELECT id FROM me")).await else {
            continue;
        };
        while !stop.load(Ordering::SeqCst) && !c.is_closed() {
            let name = timeout(OP_TIMEOUT, c.query_one("SHOW application_name", &[])).await;
            let mine = timeout(OP_TIMEOUT, c.query_one(&stmt, &[])).await;
            let mut s = seen.lock().await;
            match (name, mine) {
                (Ok(Ok(n)), Ok(Ok(m))) => {
                    s.identity_checks += 1;
                    let (n, m): (String, i32) = (n.get(0), m.get(0));
                    if n != format!("c{id}") || m != id {
                        s.leaks.push(format!("session c{id} saw {n} and {m}"));
                    }
                }
                (Err(_), _) | (_, Err(_)) => s.hung += 1,
                (Ok(Err(e)), _) | (_, Ok(Err(e))) => s.error(&e),
            }
        }
    }
}

/// The workload running through sluice.
pub(crate) struct Load {
    pid: u32,
    base: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Creates the tables on the writer `pg` and starts the clients against `port`; returns
    /// once they have run for 3 s.
    pub(crate) async fn start(pg: &PgServer, proxy: &Sluice, port: u16) -> Load {
        pg.psql_db(
            APPDB,
            &format!(
                "CREATE TABLE ledger (writer int, seq int); \
                 CREATE TABLE accounts (id int PRIMARY KEY, balance bigint); \
                 INSERT INTO accounts SELECT g, 1000 FROM generate_series(0, {}) g; \
                 GRANT ALL ON ledger, accounts TO app;",
                ACCOUNTS - 1
            ),
        );
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let mut load = Load {
            pid: proxy.pid(),
            base: rss_kib(proxy.pid()),
            stop,
            seen,
            tasks: Vec::new(),
        };
        let (stop, seen) = (&load.stop, &load.seen);
        for id in 0..4 {
            load.tasks
                .push(tokio::spawn(writer(port, id, stop.clone(), seen.clone())));
        }
        for auditor in [false, false, true] {
            load.tasks.push(tokio::spawn(bank(
                port,
                auditor,
                stop.clone(),
                seen.clone(),
            )));
        }
        for id in 0..3 {
            load.tasks
                .push(tokio::spawn(identity(port, id, stop.clone(), seen.clone())));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        load
    }

    /// Lets the clients run 5 s more (after the fault), stops them, and checks what they saw
    /// against the database's writer `pg`.
    pub(crate) async fn finish(self, pg: &PgServer) {
        let at_fault_end = self.seen.lock().await.acked.len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            timeout(OP_TIMEOUT * 2, t)
                .await
                .expect("a client did not finish")
                .unwrap();
        }
        let (seen, base) = (self.seen, self.base);
        let s = seen.lock().await;
        let report = format!(
            "acked {} unknown {} transfers {} audits {} identity checks {} errors {} {:?} hung {}",
            s.acked.len(),
            s.unknown,
            s.transfers,
            s.audits,
            s.identity_checks,
            s.errors,
            s.codes,
            s.hung
        );
        println!("{report}");
        assert!(
            s.acked.len() > 100 && s.transfers > 50 && s.identity_checks > 50,
            "{report}"
        );
        assert_eq!(
            s.hung, 0,
            "operations without an answer in {OP_TIMEOUT:?}: {report}"
        );
        assert!(
            s.acked.len() > at_fault_end + 50,
            "no progress after the fault ({at_fault_end} before): {report}"
        );
        assert!(s.wrong_totals.is_empty(), "totals {:?}", s.wrong_totals);
        assert!(s.leaks.is_empty(), "{:?}", s.leaks);
        let doubled = pg.psql_db(
            APPDB,
            "SELECT count(*) FROM (SELECT 1 FROM ledger GROUP BY writer, seq HAVING count(*) > 1) d",
        );
        assert_eq!(doubled, "0", "commits applied twice");
        let stored: std::collections::HashSet<(i32, i32)> = pg
            .psql_db(APPDB, "SELECT writer || ',' || seq FROM ledger")
            .lines()
            .filter_map(|l| l.split_once(','))
            .map(|(w, q)| (w.parse().unwrap(), q.parse().unwrap()))
            .collect();
        let lost: Vec<_> = s.acked.iter().filter(|a| !stored.contains(a)).collect();
        assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
        let total = pg.psql_db(APPDB, "SELECT sum(balance) FROM accounts");
        assert_eq!(total, TOTAL.to_string());
        let after = rss_kib(self.pid);
        assert!(
            after < base + 64 * 1024,
            "RSS {base} KiB before, {after} KiB after"
        );
    }
}

/// Runs the workload against `port` while `fault` runs, then checks the database.
async fn under_load(pg: &PgServer, proxy: &Sluice, port: u16, fault: impl std::future::Future) {
    let load = Load::start(pg, proxy, port).await;
    fault.await;
    load.finish(pg).await;
}

fn options() -> ProxyOptions {
    ProxyOptions {
        pool_size: 8,
        borrow_timeout: "50s".into(),
        health_interval: Some("500ms".into()),
        ..ProxyOptions::default()
    }
}

pub(crate) fn proxy_for(pg: &PgServer, instance_port: u16) -> Sluice {
    let (yaml, secrets) = config_for(pg, &options());
    let yaml = yaml.replace(&format!(":{}]", pg.port()), &format!(":{instance_port}]"));
    Sluice::start_with_secrets(&yaml, &secrets)
}

/// A hung server: SIGSTOP to PostgreSQL for 30 s, then SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frozen_for_30_s_loses_and_leaks_nothing() {
    let pg = PgServer::start();
    let proxy = proxy_for(&pg, pg.port());
    under_load(&pg, &proxy, proxy.port(), async {
        let frozen = pg.freeze();
        tokio::time::sleep(Duration::from_secs(30)).await;
        PgServer::thaw(&frozen);
    })
    .await;
}

/// sluice's server sockets killed under it (`ss -K`, which resets the server's side too),
/// three times, a second apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sockets_killed_with_ss_k_lose_and_leak_nothing() {
    if !is_root() {
        println!("skipped: ss -K needs root");
        return;
    }
    let pg = PgServer::start();
    let proxy = proxy_for(&pg, pg.port());
    let port = pg.port();
    under_load(&pg, &proxy, proxy.port(), async move {
        for _ in 0..3 {
            let status = std::process::Command::new("ss")
                .args(["-K", "dst", "127.0.0.1", "dport", "=", &format!(":{port}")])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
}

/// A link that cuts every write into 1-byte segments with 2 ms before each for 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_segments_and_drips_between_sluice_and_server_lose_nothing() {
    let pg = PgServer::start();
    let chaos = Arc::new(Chaos {
        segment: 1,
        delay: Duration::from_millis(2),
        ..Chaos::default()
    });
    let relay = chaos_relay(pg.port(), chaos.clone());
    let proxy = proxy_for(&pg, relay.port());
    under_load(&pg, &proxy, proxy.port(), async {
        chaos.on.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        chaos.on.store(false, Ordering::SeqCst);
    })
    .await;
}

/// kill -9 of the writer (postmaster and backends) and its synchronous standby promoted. With
/// asynchronous replication a commit acknowledged by the old writer may be lost on a direct
/// connection too; with a synchronous standby, none may be lost through sluice either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_killed_and_its_synchronous_standby_promoted_loses_and_leaks_nothing() {
    let mut cluster = PgCluster::start(1);
    // On the writer only (postgresql.auto.conf is not replicated), so the promoted standby
    // does not wait for a standby of its own. The harness turns synchronous_commit off for
    // speed; a commit must wait for the standby here.
    cluster.primary().psql_each(
        "postgres",
        &[
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "ALTER SYSTEM SET synchronous_commit = on",
            "SELECT pg_reload_conf()",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster
        .primary()
        .psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
        != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no synchronous standby"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxy = Sluice::start(&cluster_config("postgres", &cluster.addrs(), "100ms", ""));
    let port = proxy.listen_addrs()[0].port();
    let load = Load::start(cluster.primary(), &proxy, port).await;
    let before = load.seen.lock().await.acked.len();
    tokio::task::block_in_place(|| {
        cluster.kill9(0);
        cluster.promote(1);
    });
    println!("{before} commits acknowledged before the kill");
    load.finish(cluster.member(1)).await;
}

/// Secrets Manager (moto) stopped for 10 s while sluice re-reads the app's secret every second
/// and recycles server connections every second: the secret it holds keeps client and server
/// logins going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_stopped_loses_and_leaks_nothing() {
    let pg = PgServer::start();
    let mut moto = Moto::start();
    moto.owner("create", "sluice/app", Some(APP));
    let (yaml, secrets) = config_for(&pg, &options());
    let yaml = stored_config(&yaml, &moto, "1s");
    let proxy = Sluice::start_with_env(&yaml, &secrets, &moto.env());
    under_load(&pg, &proxy, proxy.port(), async {
        tokio::task::block_in_place(|| moto.stop());
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    assert!(
        proxy
            .log_contents()
            .contains("secret refresh failed; cached credentials stay in use"),
        "the re-reads failed while moto was down, and were logged"
    );
}

/// A partition between sluice and the server for 20 s, with every connection left open and
/// every byte held (no FIN, no RST: what a DROP rule does while TCP retransmits), then healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_for_20_s_then_healed_loses_and_leaks_nothing() {
    let pg = PgServer::start();
    let chaos = Arc::new(Chaos::default());
    let relay = chaos_relay(pg.port(), chaos.clone());
    let proxy = proxy_for(&pg, relay.port());
    under_load(&pg, &proxy, proxy.port(), async {
        chaos.hold.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        chaos.hold.store(false, Ordering::SeqCst);
    })
    .await;
}
