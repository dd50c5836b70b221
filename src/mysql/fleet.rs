//! A fleet member's voice on a MySQL/MariaDB instance. Neither shows a settable per-connection
//! string in its processlist (connect attributes need the performance schema, off by default
//! on MariaDB, and are fixed at connect), but both show a running statement's text: so one
//! connection per process and instance keeps a statement running whose comment holds the
//! advertisement, `SELECT SLEEP(interval)`, and between two sleeps reads the processlist with
//! the advertisement in that statement's comment too.

use std::fmt::Write as _;
use std::time::Duration;

use super::server::{FLEET_PROGRAM, ServerConn, ServerLogin};
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
        let read = read_sql(&ad, &member.key(), &member.known_conns());
        let rows = match tokio::time::timeout(timeout, conn.query(addr, &read)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no answer within {timeout:?}"),
        };
        member.observe(rows.into_iter().map(|r| {
            let mut r = r.into_iter();
            Row {
                conn: r.next().flatten().and_then(|id| id.parse().ok()),
                text: r.next().flatten(),
            }
        }));
        let wait = format!("SELECT SLEEP({sleep}) /* {ad} */");
        match tokio::time::timeout(interval + timeout, conn.query(addr, &wait)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no answer within {:?}", interval + timeout),
        }
    };
    conn.close();
    result
}

/// The fleet's members as the processlist shows them: running a statement that holds the
/// key, or known from an earlier read (a member between two statements shows no text).
fn read_sql(ad: &str, key: &str, known: &[u64]) -> String {
    // The line and the key hold only letters, digits, spaces and `-_.~`: nothing to quote.
    let mut sql = format!(
        "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
         AND (INFO LIKE '%{key}%'"
    );
    if !known.is_empty() {
        sql.push_str(" OR ID IN (");
        for (i, id) in known.iter().enumerate() {
            let _ = write!(sql, "{}{id}", if i == 0 { "" } else { "," });
        }
        sql.push(')');
    }
    let _ = write!(sql, ") /* {ad} */");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_names_known_members_and_carries_the_advertisement() {
        let sql = read_sql(
            "sluice fleet f 0000000a 2 0 0 1",
            "sluice fleet f ",
            &[7, 9],
        );
        assert!(
            sql.contains("LIKE '%sluice fleet f %' OR ID IN (7,9))"),
            "{sql}"
        );
        assert!(
            sql.ends_with("/* sluice fleet f 0000000a 2 0 0 1 */"),
            "{sql}"
        );
        assert!(!read_sql("x", "k", &[]).contains("ID IN"));
    }
}
