//! The Postgres health probe: recovery state, WAL position, timeline and max_connections of
//! one instance, over a connection of its own.

use std::sync::Arc;

use super::listen::Listeners;
use super::server::{ServerConn, ServerLogin};
use crate::errors::ConnectError;
use crate::health::{Probe, ProbeConn, ProbeFuture, ProbeReport};
use crate::pool::Instance;
use crate::pool::fleet::{Member, Row};

/// The writer's position is its WAL *write* position: what a replica can reach. (The insert
/// position can sit past a page header after a WAL switch that no replica ever replays, which
/// would read as growing lag on a quiet cluster.)
///
/// One text column, `|`-separated, so the control-plane query helper (first column only) is
/// enough: in recovery, writable, position, timeline, max_connections.
const SQL: &str = "SELECT concat_ws('|', pg_is_in_recovery(), \
    current_setting('transaction_read_only'), \
    coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                  ELSE pg_current_wal_lsn() END::text, ''), \
    CASE WHEN pg_is_in_recovery() THEN '0' \
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text END, \
    current_setting('max_connections'))";

#[derive(Debug)]
pub struct PgProbe {
    login: ServerLogin,
    conn: ProbeConn<ServerConn>,
    instance: Arc<Instance<ServerConn>>,
    max_connections: Option<usize>,
    fleet: Option<Fleet>,
}

/// This process's fleet membership on the instance: advertised in the probe connection's
/// `application_name`, where `pg_stat_activity` shows it to every other member.
#[derive(Debug)]
struct Fleet {
    member: Member<ServerConn>,
    /// The target group's listening connections: on the writer, outside the pools.
    listeners: Arc<Listeners>,
    /// The last exchange's failure, logged once.
    failing: Option<String>,
}

impl PgProbe {
    pub fn new(login: ServerLogin, instance: Arc<Instance<ServerConn>>) -> Self {
        Self {
            login,
            conn: ProbeConn::default(),
            instance,
            max_connections: None,
            fleet: None,
        }
    }

    /// Makes the probe this process's voice in a fleet on its instance.
    pub fn with_fleet(mut self, member: Member<ServerConn>, listeners: Arc<Listeners>) -> Self {
        self.fleet = Some(Fleet {
            member,
            listeners,
            failing: None,
        });
        self
    }

    async fn run(&mut self) -> Result<ProbeReport, String> {
        let result = self.round().await;
        if let (Err(_), Some(fleet)) = (&result, &self.fleet) {
            fleet.member.missed();
        }
        result
    }

    async fn round(&mut self) -> Result<ProbeReport, String> {
        let mut conn = self.conn.take(ServerConn::connect(&self.login)).await?;
        let row = conn
            .simple_query(&self.login, SQL)
            .await
            .map_err(|e| e.to_string())?;
        let text = row.into_iter().next().flatten().unwrap_or_default();
        let (report, max) = parse(&text).ok_or_else(|| format!("unreadable probe row {text:?}"))?;
        if self.max_connections != Some(max) {
            self.max_connections = Some(max);
            self.instance.learn_server_max(max);
        }
        if let Some(fleet) = &mut self.fleet {
            match exchange(fleet, &mut conn, &self.login, report.writable).await {
                Ok(()) => fleet.failing = None,
                Err(e) => {
                    fleet.member.missed();
                    // A refused query leaves the connection idle; anything else, a new one.
                    let usable = matches!(e, ConnectError::Refused { .. });
                    let e = e.to_string();
                    if fleet.failing.as_ref() != Some(&e) {
                        tracing::warn!(instance = %self.login.addr, error = %e, "fleet exchange failed");
                    }
                    fleet.failing = Some(e);
                    if !usable {
                        return Ok(report);
                    }
                }
            }
        }
        self.conn.keep(conn);
        Ok(report)
    }
}

/// Advertises this process's numbers and reads every member's, in one query: the `SET` comes
/// first, so a member reading after it sees them (the order the division relies on). Only
/// the probe user's client backends are read: another role cannot speak for the fleet.
async fn exchange(
    fleet: &Fleet,
    conn: &mut ServerConn,
    login: &ServerLogin,
    writer: bool,
) -> Result<(), ConnectError> {
    let overhead = 1 + if writer {
        fleet.listeners.connections()
    } else {
        0
    };
    let ad = fleet.member.advertise(overhead);
    let key = fleet.member.key();
    // The line and the key hold only letters, digits, spaces and `-_.~`: nothing to quote.
    let sql = format!(
        "SET application_name = '{ad}'; SELECT application_name FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND usename = current_user \
         AND backend_type = 'client backend' AND left(application_name, {}) = '{key}'",
        key.len()
    );
    let rows = conn.simple_query(login, &sql).await?;
    fleet
        .member
        .observe(rows.into_iter().map(|text| Row { conn: None, text }));
    Ok(())
}

impl Probe for PgProbe {
    fn addr(&self) -> &str {
        &self.login.addr
    }

    fn probe(&mut self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

fn parse(text: &str) -> Option<(ProbeReport, usize)> {
    let mut f = text.split('|');
    let recovery = f.next()? == "t";
    let read_only = f.next()? == "on";
    let lsn = f.next()?;
    let timeline: u64 = f.next()?.parse().ok()?;
    let max: usize = f.next()?.parse().ok()?;
    let position = parse_lsn(lsn);
    Some((
        ProbeReport {
            writable: !recovery && !read_only,
            position,
            generation: timeline,
        },
        max,
    ))
}

/// `16/B374D848` as a number.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_primary_and_a_standby_row() {
        let (p, max) = parse("f|off|0/3000148|2|100").expect("primary");
        assert!(p.writable);
        assert_eq!(p.position, Some(0x300_0148));
        assert_eq!(p.generation, 2);
        assert_eq!(max, 100);
        let (s, _) = parse("t|on|1/10|0|50").expect("standby");
        assert!(!s.writable);
        assert_eq!(s.position, Some((1 << 32) | 0x10));
        let (ro, _) = parse("f|on|0/1|1|5").expect("read-only primary");
        assert!(
            !ro.writable,
            "default_transaction_read_only makes it a reader"
        );
        assert!(parse("t|on||0|5").is_some_and(|(r, _)| r.position.is_none()));
        assert!(parse("garbage").is_none());
    }
}
