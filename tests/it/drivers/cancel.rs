//! Cancel from real drivers through sluice: psycopg 3 (`cancel_safe`, or `cancel` before 3.2)
//! and pgjdbc `Statement.cancel()` stop a running `pg_sleep(30)` with SQLSTATE 57014, plain, as
//! an extended query and inside a transaction, and the same connection then goes on working.

use std::process::Command;
use std::time::Instant;

use super::{proxy, script};
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::Sluice;
use crate::support::tools::{self, tail};

/// The arguments both cancel programs take: HOST PORT DB USER PASSWORD.
fn target(sluice: &Sluice) -> Vec<String> {
    let port = sluice.port().to_string();
    ["127.0.0.1", &port, APPDB, APP.0, APP.1]
        .map(String::from)
        .to_vec()
}

/// Runs a cancel program to completion and checks it printed `CHECK <round> ok` for each round.
fn expect_rounds(cmd: &mut Command, rounds: &[&str]) {
    let started = Instant::now();
    let (status, out, err) = tools::command_output(cmd);
    let checks: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("CHECK "))
        .collect();
    let want: Vec<String> = rounds.iter().map(|r| format!("{r} ok")).collect();
    assert!(
        status.success() && checks == want,
        "{cmd:?}: {status} after {:?}\n--- stdout\n{out}\n--- stderr\n{}",
        started.elapsed(),
        tail(&err, 8000)
    );
    eprintln!("{:?} took {:?}", cmd.get_program(), started.elapsed());
}

#[test]
fn psycopg_cancel_stops_the_query_and_the_connection_goes_on() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    expect_rounds(
        Command::new(tools::python())
            .arg(script("psycopg_cancel.py"))
            .args(target(&sluice)),
        &["simple", "extended", "transaction"],
    );
}

#[test]
fn pgjdbc_statement_cancel_stops_the_query_and_the_connection_goes_on() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    expect_rounds(
        Command::new(tools::java())
            .arg("-cp")
            .arg(tools::pgjdbc_jar())
            .arg(script("JdbcCancel.java"))
            .args(target(&sluice)),
        &["statement", "prepared", "transaction"],
    );
}
