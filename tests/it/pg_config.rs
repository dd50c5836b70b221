//! Pool settings that need a real server: a cap learned from `max_connections`, `init_query`
//! surviving resets, the idle cap's grace, slow logins, and the `sluice` CLI's config commands.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::support::client::{connect, connect_port, scalar};
use crate::support::postgres::{APP, APPDB, PgOptions, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, default_secrets};
use crate::support::tools::{command_output, repo_root};

fn with_pool_setting(pg: &PgServer, from: &str, to: &str) -> Sluice {
    let (yaml, secrets) = config_for(pg, &ProxyOptions::default());
    assert!(yaml.contains(from), "{yaml}");
    Sluice::start_with_secrets(&yaml.replace(from, to), &secrets)
}

/// `clients` sessions at once, each in a transaction that sleeps `seconds` on the server.
async fn hold_transactions(
    proxy: &Sluice,
    clients: usize,
    seconds: &str,
) -> Vec<tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>> {
    let mut holders = Vec::new();
    for _ in 0..clients {
        let c = connect(proxy, APP, APPDB).await.unwrap();
        let sql = format!("begin; select pg_sleep({seconds}); commit");
        holders.push(tokio::spawn(async move {
            c.simple_query(&sql).await.map(|_| ())
        }));
    }
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_percent_is_taken_from_the_server() {
    let pg = PgServer::start_with(PgOptions {
        max_connections: 30,
        ..Default::default()
    });
    // 10 percent of the server's 30 connections: a cap of 3.
    let proxy = with_pool_setting(&pg, "max_connections: 5", "max_connections_percent: 10");
    let holders = hold_transactions(&proxy, 5, "1.5").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(pg.backend_count(APP.0, APPDB), 3);
    for h in holders {
        h.await.unwrap().unwrap(); // the two that waited got their turn
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_query_runs_on_new_connections_and_again_after_a_reset() {
    let pg = PgServer::start();
    let proxy = with_pool_setting(
        &pg,
        "max_connections: 5",
        "max_connections: 1\n      init_query: \"SET work_mem = '7MB'\"",
    );
    let first = connect(&proxy, APP, APPDB).await.unwrap();
    assert_eq!(scalar(&first, "show work_mem").await, "7MB");
    drop(first);
    for round in 0..3 {
        let changed = connect(&proxy, APP, APPDB).await.unwrap();
        changed.simple_query("set work_mem = '1MB'").await.unwrap(); // tracked; RESET + init query on reuse
        assert_eq!(scalar(&changed, "show work_mem").await, "1MB");
        drop(changed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = connect(&proxy, APP, APPDB).await.unwrap();
        assert_eq!(scalar(&next, "show work_mem").await, "7MB", "round {round}");
    }
    assert_eq!(
        pg.backend_count(APP.0, APPDB),
        1,
        "the one connection was reset, not replaced"
    );
}

/// A pool that needed 4 connections a moment ago keeps them while a light load goes on: the
/// idle cap closes only connections idle for half the `idle_timeout`. Closing them at every
/// trim made each burst open new backends (8 to 10 per 8 s of `pgbench -R 2000` at 1,000
/// clients, against none through PgBouncer), and the clients of a burst waited for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_recent_use_outlive_the_idle_cap_until_its_grace() {
    let pg = PgServer::start();
    // One idle connection of 4 may stay; the trim runs every 5 s (half of idle_timeout, at
    // most 5 s), and the surplus closes once idle for 15 s.
    let proxy = with_pool_setting(
        &pg,
        "max_connections: 5",
        "max_connections: 4\n      max_idle_connections_percent: 25\n      idle_timeout: 30s",
    );
    for h in hold_transactions(&proxy, 4, "0.5").await {
        h.await.unwrap().unwrap();
    }
    let after_burst = pg.backend_pids(APP.0, APPDB);
    assert_eq!(after_burst.len(), 4, "{after_burst:?}");
    // A light load across at least one trim.
    let light = connect(&proxy, APP, APPDB).await.unwrap();
    for _ in 0..65 {
        scalar(&light, "select 1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pg.backend_pids(APP.0, APPDB),
        after_burst,
        "connections idle for seconds were closed"
    );
    // Left idle past the grace, the surplus goes: one connection stays.
    let mut backends = after_burst;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        backends = pg.backend_pids(APP.0, APPDB);
        if backends.len() == 1 {
            break;
        }
    }
    assert_eq!(backends.len(), 1, "{backends:?}");
    drop(light);
}

/// Sluice with a pool of `cap` whose new logins wait in their init query while `blocker` holds
/// advisory lock 7. `first` keeps the connection opened before, in a transaction.
struct HeldLogins {
    pg: PgServer,
    proxy: Sluice,
    first: Client,
    blocker: Client,
}

async fn hold_logins(cap: usize) -> HeldLogins {
    let pg = PgServer::start();
    // A login may take a minute: what the tests see happens before it ends.
    let proxy = with_pool_setting(
        &pg,
        "max_connections: 5",
        &format!(
            "max_connections: {cap}\n      connect_timeout: 60s\n      init_query: \
             \"SELECT pg_advisory_lock_shared(7); SELECT pg_advisory_unlock_shared(7)\""
        ),
    );
    // The first login to sluice needs a server connection, to learn the server's parameters.
    let first = connect(&proxy, APP, APPDB).await.unwrap();
    first.simple_query("begin; select 1").await.unwrap();
    let (blocker, conn) = tokio_postgres::connect(&pg.conn_str(APP.0, APP.1, APPDB), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    blocker
        .simple_query("select pg_advisory_lock(7)")
        .await
        .unwrap();
    HeldLogins {
        pg,
        proxy,
        first,
        blocker,
    }
}

impl HeldLogins {
    /// Waits up to 5 s for `want` logins waiting in their init query; the last count read.
    async fn logins_waiting(&self, want: &str) -> String {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'";
        until(want.to_owned(), || self.pg.psql(sql)).await
    }

    async fn let_logins_through(&self) {
        self.blocker
            .simple_query("select pg_advisory_unlock(7)")
            .await
            .unwrap();
    }
}

/// Reads every 50 ms until `read` gives `want`, for up to 5 s; the last value read.
pub(crate) async fn until<T: PartialEq>(want: T, mut read: impl FnMut() -> T) -> T {
    let mut got = read();
    for _ in 0..100 {
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = read();
    }
    got
}

/// A client whose server login is slow takes a connection released meanwhile, as PgBouncer's
/// queue hands out the first server connection ready: a cold pool under 1,000 clients filled
/// slower than PgBouncer's because each borrower waited for its own login
/// (`benches/load/cold.sh`). Here the login waits in its init query on a lock the test holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_takes_a_connection_released_while_its_login_is_slow() {
    let held = hold_logins(2).await;
    let second = tokio::spawn({
        let port = held.proxy.port();
        async move {
            let c = connect_port(port, APP, APPDB).await.unwrap();
            (scalar(&c, "select 2").await, c)
        }
    });
    assert_eq!(
        held.logins_waiting("1").await,
        "1",
        "no login for the client"
    );
    held.first.simple_query("commit").await.unwrap();
    let (got, second) = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the client waited for its own login, not the released connection")
        .unwrap();
    assert_eq!(got, "2");

    // The slow login, once let through, joins the pool for the next client.
    held.let_logins_through().await;
    let backends = until(3, || held.pg.backend_count(APP.0, APPDB)).await;
    assert_eq!(backends, 3, "two pooled and the test's own");
    for h in hold_transactions(&held.proxy, 2, "0.3").await {
        h.await.unwrap().unwrap();
    }
    assert_eq!(held.pg.backend_count(APP.0, APPDB), 3, "no third login");
    drop(second);
}

/// Logins waiting on a slow server do not hold the next ones back: quick logins run one at a
/// time, but each login still running after 10 ms lets another start, so a burst of clients
/// against a far server is not served one login after another (as PgBouncer serves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_held_up_by_the_server_let_the_next_ones_start() {
    let held = hold_logins(5).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = connect(&held.proxy, APP, APPDB).await.unwrap();
        clients.push(tokio::spawn(async move { scalar(&c, "select 4").await }));
    }
    assert_eq!(
        held.logins_waiting("4").await,
        "4",
        "logins waiting on the server at once"
    );
    held.let_logins_through().await;
    for c in clients {
        assert_eq!(c.await.unwrap(), "4");
    }
    assert_eq!(
        held.pg.backend_count(APP.0, APPDB),
        6,
        "five pooled and the test's own"
    );
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(dir.path().join("secrets.yaml"), default_secrets()).unwrap();
    std::fs::write(
        &file,
        "endpoints:\n  - name: w\n    listen: 127.0.0.1:1\n    target_group: nope\n    colour: red\n\
         target_groups:\n  pg:\n    engine: postgres\n    instances: [127.0.0.1:5432]\n    \
         connection_pool: { max_connections: 5, max_connections_percent: 10, connection_borrow_timeout: soon }\n\
         auth:\n  - username: app\n    secret: file:missing.yaml#app\n",
    )
    .unwrap();
    let (status, out, err) = command_output(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check-config")
            .arg(&file),
    );
    assert!(!status.success());
    let text = format!("{out}{err}");
    for path in [
        "endpoints[0].colour",
        "endpoints[0].target_group",
        "target_groups.pg.connection_pool.connection_borrow_timeout",
        "auth[0].secret",
    ] {
        assert!(text.contains(path), "{path} missing from:\n{text}");
    }
    let (status, schema, _) =
        command_output(Command::new(env!("CARGO_BIN_EXE_sluice")).arg("print-schema"));
    assert!(status.success());
    let committed = std::fs::read_to_string(repo_root().join("config/sluice.schema.json")).unwrap();
    assert_eq!(
        schema, committed,
        "config/sluice.schema.json is stale: run `sluice print-schema`"
    );
}
