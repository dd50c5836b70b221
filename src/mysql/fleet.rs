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
        member.missed();
        if failing.as_ref() != Some(&e) {
            tracing::warn!(instance = %login.addr, error = %e, "fleet exchange failed");
        }
        failing = Some(e);
        tokio::time::sleep(interval).await;
    }
}

/// A processlist row (Id, User, Host, db, Command, Time, State, Info, ...) as the member
/// reads it: only the monitor user's, where every member advertises, and only the text of
/// the two statements members run, so that no other statement (a client's, quoting a line)
/// can speak for the fleet.
fn member_row(mut r: Vec<Option<String>>, user: &str) -> Option<Row> {
    if r.get(1)?.as_deref() != Some(user) {
        return None;
    }
    let text = r
        .get_mut(7)
        .and_then(Option::take)
        .filter(|t| t.starts_with("DO SLEEP(") || t.starts_with("SHOW FULL PROCESSLIST /*"));
    Some(Row {
        conn: r.first()?.as_deref()?.parse().ok(),
        text,
    })
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
    // MariaDB's max_statement_time would cut the sleep short (MySQL has no such variable: the
    // error is ignored).
    let _ = conn.query(addr, "SET SESSION max_statement_time = 0").await;
    let sleep = format!("{:.3}", interval.as_secs_f64());
    let result = loop {
        let ad = member.advertise(OVERHEAD);
        let read = format!("SHOW FULL PROCESSLIST /* {ad} */");
        let rows = match tokio::time::timeout(timeout, conn.query(addr, &read)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no answer within {timeout:?}"),
        };
        member.observe(rows.into_iter().filter_map(|r| member_row(r, &login.user)));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(user: &str, info: Option<&str>) -> Vec<Option<String>> {
        let f = |s: &str| Some(s.to_owned());
        vec![
            f("7"),
            f(user),
            f("h"),
            None,
            f("Query"),
            f("0"),
            f(""),
            info.map(str::to_owned),
        ]
    }

    #[test]
    fn only_the_monitor_users_advertising_statements_speak_for_the_fleet() {
        let line = "sluice fleet f 0000000a 2 0 0 1";
        let sleep = format!("DO SLEEP(1.000) /* {line} */");
        let read = member_row(row("monitor", Some(&sleep)), "monitor").unwrap();
        assert_eq!(
            (read.conn, read.text.as_deref()),
            (Some(7), Some(sleep.as_str()))
        );
        assert!(member_row(row("app", Some(&sleep)), "monitor").is_none());
        let quoted = format!("SELECT '/* {line} */'");
        let other = member_row(row("monitor", Some(&quoted)), "monitor").unwrap();
        assert_eq!(
            (other.conn, other.text),
            (Some(7), None),
            "a row, but no line"
        );
    }
}
