//! Schema migrations run straight on the database while drivers hold prepared statements
//! through sluice: each driver program runs once against PostgreSQL itself and once through
//! sluice (a pool smaller than its sessions, so statements are shared). Through sluice no phase
//! may end worse: no more errors, no error of a kind direct did not give, the same row shape
//! for a newcomer. It may end better: where the client will describe the result, sluice runs a
//! request that failed on a stale statement again itself, so psycopg, which has no recovery of
//! its own, sees none of the errors it gets direct.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use super::{Run, run_sampling, script};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools;

/// One `PHASE name ok=N errors=N codes=A|B` line.
#[derive(Debug, PartialEq, Eq)]
struct Phase {
    name: String,
    ok: u32,
    errors: u32,
    codes: BTreeSet<String>,
}

/// The phases of a run, and its `COLUMNS` line.
fn outcome(run: &Run) -> (Vec<Phase>, &str) {
    let phases = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PHASE "))
        .map(|l| {
            let mut words = l.split(' ');
            let name = words.next().unwrap_or_default().to_owned();
            let field = |w: Option<&str>, key: &str| {
                w.and_then(|w| w.strip_prefix(key))
                    .unwrap_or_else(|| panic!("{key} in {l}"))
                    .to_owned()
            };
            let ok = field(words.next(), "ok=").parse().unwrap();
            let errors = field(words.next(), "errors=").parse().unwrap();
            let codes = field(words.next(), "codes=");
            let codes = codes.split('|').filter(|c| !c.is_empty());
            Phase {
                name,
                ok,
                errors,
                codes: codes.map(str::to_owned).collect(),
            }
        })
        .collect();
    (phases, run.line("COLUMNS "))
}

/// Where the migration runs: straight on the database (sluice learns of it only from failures),
/// or through sluice (which sees its CommandComplete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ddl {
    Direct,
    Through,
}

/// Runs `cmd(port, ddl_port)` against the database and then through sluice, and compares the
/// outcomes.
fn same_as_direct(
    pg: &PgServer,
    sluice: &Sluice,
    ddl: Ddl,
    what: &str,
    cmd: impl Fn(u16, u16) -> Command,
) {
    let what = format!("{what}, DDL {ddl:?}");
    let direct = run_sampling(pg, cmd(pg.port(), pg.port()), Duration::from_secs(120));
    assert!(direct.ok, "{what} direct failed:\n{direct}");
    let ddl_port = match ddl {
        Ddl::Direct => pg.port(),
        Ddl::Through => sluice.port(),
    };
    let proxied = run_sampling(pg, cmd(sluice.port(), ddl_port), Duration::from_secs(120));
    assert!(proxied.ok, "{what} through sluice failed:\n{proxied}");
    no_worse(&what, &direct, &proxied);
    if what.starts_with("psycopg") || what.starts_with("node-postgres") {
        // They describe every execution: sluice runs what failed again, so nothing fails.
        let (phases, _) = outcome(&proxied);
        assert!(
            phases.iter().all(|p| p.errors == 0),
            "{what}: sluice should have run the stale requests again\n{proxied}"
        );
    }
}

/// Through sluice, no phase has more errors than direct, nor an error code direct lacks, and a
/// client that connects after the migration sees the same row.
pub fn no_worse(what: &str, direct: &Run, proxied: &Run) {
    let (want, columns) = outcome(direct);
    let (got, got_columns) = outcome(proxied);
    let context = format!("--- direct\n{direct}\n--- sluice\n{proxied}");
    assert_eq!(want.len(), 3, "{what}: phases\n{context}");
    assert_eq!(got.len(), want.len(), "{what}: phases\n{context}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.name, w.name);
        assert_eq!(
            g.ok + g.errors,
            w.ok + w.errors,
            "{what}: attempts\n{context}"
        );
        assert!(
            g.errors <= w.errors && g.codes.is_subset(&w.codes),
            "{what}: {} worse through sluice ({g:?}) than direct ({w:?})\n{context}",
            g.name
        );
    }
    assert_eq!(got_columns, columns, "{what}: a newcomer's row\n{context}");
    eprintln!("{what}: direct {want:?}, sluice {got:?}");
}

fn pool_of_two(pg: &PgServer) -> Sluice {
    Sluice::start_for(pg, ProxyOptions::pool(2))
}

#[test]
fn pgjdbc_through_a_migration() {
    let pg = PgServer::start();
    let sluice = pool_of_two(&pg);
    for (threshold, ddl) in [("1", Ddl::Direct), ("5", Ddl::Direct), ("5", Ddl::Through)] {
        let what = format!("pgjdbc prepareThreshold={threshold}");
        same_as_direct(&pg, &sluice, ddl, &what, |port, ddl_port| {
            let mut cmd = Command::new(tools::java());
            cmd.arg("-cp")
                .arg(tools::pgjdbc_jar())
                .arg(script("JdbcMigration.java"))
                .args(["127.0.0.1", &port.to_string(), &ddl_port.to_string()])
                .args([APPDB, APP.0, APP.1, threshold]);
            cmd
        });
    }
}

/// psycopg with every query prepared (libpq describes the portal of each execution, so these
/// are the requests sluice retries itself), also in pipeline mode, and asyncpg's cache.
#[test]
fn psycopg_and_asyncpg_through_a_migration() {
    let pg = PgServer::start();
    let sluice = pool_of_two(&pg);
    for (driver, ddl) in [
        ("psycopg", Ddl::Direct),
        ("psycopg-pipeline", Ddl::Direct),
        ("asyncpg", Ddl::Direct),
        ("psycopg", Ddl::Through),
        ("asyncpg", Ddl::Through),
    ] {
        same_as_direct(&pg, &sluice, ddl, driver, |port, ddl_port| {
            let mut cmd = Command::new(tools::python());
            cmd.arg(script("migration.py"))
                .args(["127.0.0.1", &port.to_string(), &ddl_port.to_string()])
                .args([APPDB, APP.0, APP.1, driver]);
            cmd
        });
    }
}

/// node-postgres named queries: it prepares each name once per client and never again.
#[test]
fn node_postgres_through_a_migration() {
    let pg = PgServer::start();
    let sluice = pool_of_two(&pg);
    let (node, node_path) = tools::node();
    for ddl in [Ddl::Direct, Ddl::Through] {
        same_as_direct(&pg, &sluice, ddl, "node-postgres", |port, ddl_port| {
            let mut cmd = Command::new(&node);
            cmd.env("NODE_PATH", &node_path)
                .arg(script("node_pg_migration.js"))
                .args(["127.0.0.1", &port.to_string(), &ddl_port.to_string()])
                .args([APPDB, APP.0, APP.1]);
            cmd
        });
    }
}
