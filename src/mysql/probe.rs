//! The MySQL/MariaDB health probe: read-only flags, GTID position and max_connections of one
//! instance, over a connection of its own.

use std::sync::Arc;

use super::server::{ServerConn, ServerLogin};
use super::state::Dialect;
use crate::health::{Probe, ProbeConn, ProbeFuture, ProbeReport};
use crate::pool::Instance;

/// `gtid_current_pos` is the last applied transaction per domain on a primary and a replica
/// alike, so positions compare across roles and across a promotion.
const MARIADB: &str = "SELECT @@global.read_only, @@global.innodb_read_only, @@max_connections, @@global.gtid_current_pos";
const MYSQL: &str = "SELECT @@global.read_only OR @@global.super_read_only, \
    @@global.innodb_read_only, @@max_connections, @@global.gtid_executed";

#[derive(Debug)]
pub struct MyProbe {
    login: ServerLogin,
    conn: ProbeConn<ServerConn>,
    dialect: Option<Dialect>,
    instance: Arc<Instance<ServerConn>>,
    max_connections: Option<usize>,
}

impl MyProbe {
    pub fn new(login: ServerLogin, instance: Arc<Instance<ServerConn>>) -> Self {
        Self {
            login,
            conn: ProbeConn::default(),
            dialect: None,
            instance,
            max_connections: None,
        }
    }

    async fn run(&mut self) -> Result<ProbeReport, String> {
        let addr = self.login.addr.clone();
        let fail = |e: crate::errors::ConnectError| e.to_string();
        let mut conn = self.conn.take(ServerConn::connect(&self.login)).await?;
        let mariadb = match &self.dialect {
            Some(d) => d.mariadb,
            None => {
                let rows = conn.query(&addr, "SELECT @@version").await.map_err(fail)?;
                let version = first(&rows, 0).unwrap_or_default().to_owned();
                let d = Dialect::for_version(&version);
                let m = d.mariadb;
                self.dialect = Some(d);
                m
            }
        };
        let rows = conn
            .query(&addr, if mariadb { MARIADB } else { MYSQL })
            .await
            .map_err(fail)?;
        let flag = |i| first(&rows, i) == Some("1");
        let max: usize = first(&rows, 2)
            .and_then(|v| v.parse().ok())
            .ok_or("unreadable max_connections")?;
        let gtid = first(&rows, 3).unwrap_or_default();
        let position = if mariadb {
            mariadb_position(gtid)
        } else {
            mysql_position(gtid)
        };
        if self.max_connections != Some(max) {
            self.max_connections = Some(max);
            self.instance.learn_server_max(max);
        }
        self.conn.keep(conn);
        Ok(ProbeReport {
            writable: !flag(0) && !flag(1),
            position,
            generation: 0,
        })
    }
}

impl Probe for MyProbe {
    fn addr(&self) -> &str {
        &self.login.addr
    }

    fn probe(&mut self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

fn first(rows: &[Vec<Option<String>>], col: usize) -> Option<&str> {
    rows.first()?.get(col)?.as_deref()
}

/// `0-1-100,1-2-5`: sequence numbers grow per domain, so their sum orders positions.
pub fn mariadb_position(gtid: &str) -> Option<u64> {
    let mut sum = 0u64;
    for part in gtid.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let seq: u64 = part.rsplit('-').next()?.parse().ok()?;
        sum = sum.saturating_add(seq);
    }
    Some(sum)
}

/// `uuid:1-100:200-210,uuid2:1-5`: the sum of each interval's end.
pub fn mysql_position(gtid: &str) -> Option<u64> {
    let mut sum = 0u64;
    for set in gtid.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        for interval in set.split(':').skip(1) {
            let end = interval.rsplit('-').next()?;
            sum = sum.saturating_add(end.parse::<u64>().ok()?);
        }
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_gtid_positions() {
        assert_eq!(mariadb_position(""), Some(0));
        assert_eq!(mariadb_position("0-1-100"), Some(100));
        assert_eq!(mariadb_position("0-1-100,1-2-5"), Some(105));
        assert!(mariadb_position("0-2-101") > mariadb_position("0-1-100"));
        assert_eq!(mariadb_position("0-1-x"), None);
        assert_eq!(
            mysql_position(
                "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3"
            ),
            Some(26)
        );
    }
}
