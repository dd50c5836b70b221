//! pgjdbc through sluice: prepared statements past prepareThreshold, batches and transactions
//! from 20 threads on a pool of 4, and an MD5 login.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use super::{Run, assert_pool_bounded, direct, proxy, run_sampling, script};
use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};
use crate::support::sluice::Sluice;
use crate::support::tools;

/// Runs JdbcLoad.java as `user`; `args` are MODE THREADS ITERS THRESHOLD TABLE.
fn jdbc(pg: &PgServer, sluice: &Sluice, (user, password): (&str, &str), args: &[&str]) -> Run {
    let mut cmd = Command::new(tools::java());
    cmd.arg("-cp")
        .arg(tools::pgjdbc_jar())
        .arg(script("JdbcLoad.java"))
        .args([
            "127.0.0.1",
            &sluice.port().to_string(),
            APPDB,
            user,
            password,
        ])
        .args(args);
    run_sampling(pg, cmd, Duration::from_secs(240))
}

#[test]
fn pgjdbc_prepared_batches_and_transactions_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let threads = 20;
    for (threshold, table) in [("5", "jdbc_kv_t5"), ("1", "jdbc_kv_t1")] {
        let run = jdbc(&pg, &sluice, APP, &["load", "20", "25", threshold, table]);
        assert!(
            run.ok,
            "pgjdbc load (prepareThreshold={threshold}) failed:\n{run}"
        );
        assert_pool_bounded(&run);
        let fields: HashMap<&str, i64> = run
            .line("RESULT ")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        assert_eq!(fields["threads_ok"], threads, "{run}");
        assert_eq!(
            fields["server_prepared"], threads,
            "named statements in use: {run}"
        );
        // 3 batches of 20 plus 5 committed rows per thread.
        assert_eq!(fields["rows"], threads * 65, "{run}");
        let db = direct(&pg, &format!("select count(*), sum(val) from {table}"));
        assert_eq!(
            db,
            format!("{}|{}", fields["rows"], fields["sum"]),
            "{table}"
        );
        let updated = direct(&pg, &format!("select count(*) from {table} where val = 2"));
        assert_eq!(
            updated,
            (threads * 5).to_string(),
            "committed update of {table}"
        );
    }

    // MD5 client authentication, and a PreparedStatement past the threshold, as md5user.
    let run = jdbc(&pg, &sluice, MD5USER, &["whoami", "1", "12", "3", "-"]);
    assert!(run.ok, "pgjdbc as md5user failed:\n{run}");
    assert_eq!(
        run.line("WHOAMI "),
        format!("md5user {}", (1..=12).sum::<i64>())
    );
}
