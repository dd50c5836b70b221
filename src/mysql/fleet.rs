//! A fleet member's voice on a MySQL/MariaDB instance. Neither shows a settable per-connection
//! string in its processlist (connect attributes need the performance schema, off by default
//! on MariaDB, and are fixed at connect), but both show a running statement's text: so one
//! connection per process and instance keeps a statement running whose comment holds the
//! advertisement, `DO SLEEP(interval)` (`DO`, so MySQL's `max_execution_time`, which bounds
//! only SELECTs, cannot cut it), and between two sleeps reads the processlist with
//! the advertisement in that statement's comment too. The read is `SHOW FULL PROCESSLIST`, not
//! a query on `information_schema.PROCESSLIST`: sampled often under load, the latter crashed
//! MariaDB 10.11 in this repository's tests (see `tests/it/support/mariadb.rs`).

use std::time::Duration;

use super::server::{FLEET_PROGRAM, ServerConn, ServerLogin};
use crate::errors::ConnectError;
use crate::pool::PooledConnection;
use crate::pool::fleet::{Member, Row};

/// This process's connections to the instance outside the pools: the probe and this one.
const OVERHEAD: usize = 2;

/// Runs the member's rounds for as long as the target group is in service, connecting again
/// after a failure.
pub async fn advertise(
    member: Member<ServerConn>,
    mut login: ServerLogin,
    interval: Duration,
    timeout: Duration,
) {
    login.program_name = FLEET_PROGRAM;
    let mut failing: Option<String> = None;
    loop {
        let e = rounds(&member, &login, interval, timeout).await;
        if failing.as_ref() != Some(&e) {
            tracing::warn!(instance = %login.addr, error = %e, "fleet exchange failed; the share stays as it was");
        }
        failing = Some(e);
        tokio::time::sleep(interval).await;
    }
}

/// Rounds on one connection until it fails: read (advertising), then sleep (advertising).
async fn rounds(
    member: &Member<ServerConn>,
    login: &ServerLogin,
    interval: Duration,
    timeout: Duration,
) -> String {
    let addr = login.addr.as_str();
    let mut conn = match tokio::time::timeout(timeout, ServerConn::connect(login)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return format!("no connection within {timeout:?}"),
    };
    let sleep = format!("{:.3}", interval.as_secs_f64());
    let result = loop {
        let ad = member.advertise(OVERHEAD);
        let read = format!("SHOW FULL PROCESSLIST /* {ad} */");
        let rows = match tokio::time::timeout(timeout, conn.query(addr, &read)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no answer within {timeout:?}"),
        };
        // Id, User, Host, db, Command, Time, State, Info, ...: this process's own row holds
        // its own id, which the member skips.
        member.observe(rows.into_iter().map(|mut r| Row {
            conn: r.first().cloned().flatten().and_then(|id| id.parse().ok()),
            text: r.get_mut(7).and_then(Option::take),
        }));
        let wait = format!("DO SLEEP({sleep}) /* {ad} */");
        match tokio::time::timeout(interval + timeout, conn.query(addr, &wait)).await {
            Ok(Ok(_)) => {}
            // Refused (MariaDB's max_statement_time, say): the connection is still good, but
            // the round waits here, showing no text (members read that as "unchanged").
            Ok(Err(ConnectError::Refused { message, .. })) => {
                tracing::debug!(instance = %addr, message, "fleet advertisement cut short");
                tokio::time::sleep(interval).await;
            }
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no answer within {:?}", interval + timeout),
        }
    };
    conn.close();
    result
}
