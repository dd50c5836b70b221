//! node-postgres through sluice: 32 clients, each with its own search_path, application_name,
//! statement_timeout and custom GUC, running named queries and transactions on a pool of 4.

use std::process::Command;
use std::time::Duration;

use super::{assert_pool_bounded, direct, proxy, run_sampling, script};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::tools;

#[test]
fn node_pg_session_settings_never_leak_on_a_small_pool() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let (node, node_path) = tools::node();
    let (clients, iterations) = (32, 25);
    let mut cmd = Command::new(node);
    cmd.env("NODE_PATH", node_path)
        .arg(script("node_pg_load.js"))
        .args(["127.0.0.1", &sluice.port().to_string(), APP.0, APP.1, APPDB])
        .args([clients.to_string(), iterations.to_string()]);
    let run = run_sampling(&pg, cmd, Duration::from_secs(240));
    assert!(run.ok, "node-postgres load failed:\n{run}");
    assert_pool_bounded(&run);

    let result = run.result();
    let num = |key: &str| result.int(key);
    assert_eq!(num("clients_ok"), clients, "{run}");
    assert_eq!(num("named"), clients * iterations, "{result}");
    assert_eq!(num("rows"), clients * iterations, "{result}");
    assert_eq!(num("unnamed"), clients * (iterations / 4), "{result}");

    let db = direct(
        &pg,
        "select count(*), sum(val), count(distinct client) from node_load",
    );
    assert_eq!(db, format!("{}|{}|{clients}", num("rows"), num("sum")));
    // `who` is the custom GUC as the server saw it inside each insert's transaction.
    let foreign = direct(
        &pg,
        "select count(*) from node_load where who <> client::text",
    );
    assert_eq!(foreign, "0", "rows written under another client's settings");
    drop(sluice);
}
