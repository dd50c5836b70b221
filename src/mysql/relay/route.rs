//! Where a MySQL session's transactions go on split endpoints, and read-your-writes: a
//! read-only transaction after a write of the session's own runs on a reader only once that
//! reader has applied the write's GTID (MariaDB `MASTER_GTID_WAIT`), else on the writer. And
//! the error a command gets when its server is lost.

use tokio::time::{Duration, Instant};

use super::Session;
use crate::mysql::errors::{self, Code};
use crate::mysql::scan::{Token, Tokens};
use crate::mysql::server::ServerConn;
use crate::mysql::state::{READ_ONLY, effective};
use crate::mysql::wire::{self, ReplyKind, command};
use crate::pool::Lease;
use crate::routing::Want;

/// The most a probe of `@@last_gtid` after a transaction may take.
const GTID_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a split session last wrote, for its read-only transactions to wait for.
#[derive(Debug, Default)]
pub(in crate::mysql) enum LastWrite {
    #[default]
    None,
    /// The GTID of the session's last write and its sequence number (what probes compare).
    Gtid(Box<str>, u64),
    /// A write whose position sluice cannot wait for (MySQL 8 has no `@@last_gtid`): reads
    /// after it go to the writer.
    Unknown,
}

impl Session {
    /// What the command at the front of the session needs when it starts a transaction: on
    /// split endpoints, a reader for `START TRANSACTION READ ONLY` or under a read-only session
    /// default (unless the statement says READ WRITE), else the writer.
    pub(super) fn transaction_want(&self, payload: &[u8]) -> Want {
        if self.ep.want != Want::Split {
            return self.ep.want;
        }
        let says = if payload.first() == Some(&command::QUERY) {
            start_transaction_says(&payload[1..], self.backslash_escapes())
        } else {
            None
        };
        let read_only = says.unwrap_or_else(|| {
            self.pool.baseline.get().is_some_and(|b| {
                effective(&self.vars, b)[READ_ONLY]
                    .as_deref()
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"))
            })
        });
        if read_only {
            Want::Reader { fallback: true }
        } else {
            Want::Writer
        }
    }

    /// A split session's read-only transaction after a write of its own.
    pub(super) fn needs_replayed_reader(&self) -> bool {
        self.ep.want == Want::Split
            && self.want != Want::Writer
            && !matches!(self.last_write, LastWrite::None)
    }

    /// A reader that has applied the session's last write, with a connection on it; `None`
    /// when none has within the read-your-writes timeout (the writer serves then).
    pub(super) async fn replayed_reader(&mut self) -> Option<Lease<ServerConn>> {
        let LastWrite::Gtid(gtid, seq) = &self.last_write else {
            return None;
        };
        let (gtid, seq) = (gtid.clone(), *seq);
        let router = &self.ep.engine.cluster.router;
        let deadline = Instant::now() + self.ep.read_your_writes_timeout;
        // A reader the probes saw past the write needs no wait; else the least busy one waits
        // on the server, which answers the moment it applies the write.
        let snapshot = router.snapshot();
        let member = router
            .reader(&snapshot, Some(seq))
            .or_else(|| router.reader(&snapshot, None))?;
        self.use_member(member);
        let mut unreachable_deadline = None;
        let borrow =
            self.ep
                .engine
                .cluster
                .borrow_on(&self.pool.pool, member, &mut unreachable_deadline);
        let mut lease = match tokio::time::timeout_at(deadline, borrow).await {
            Ok(Ok(Some(lease))) => lease,
            _ => return None,
        };
        if self.replayed_on == Some(member) {
            return Some(lease);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{gtid}', {}.{:06})",
            left.as_secs(),
            left.subsec_micros()
        );
        let addr = self.pool.login.addr.clone();
        let waited = tokio::time::timeout(left + GTID_READ_TIMEOUT, lease.query(&addr, &sql));
        match waited.await {
            // 0: applied; -1: the timeout passed first.
            Ok(Ok(rows)) if first(&rows) == Some("0") => {
                self.replayed_on = Some(member);
                Some(lease)
            }
            Ok(Ok(_)) => {
                lease.release(true);
                None
            }
            _ => {
                lease.release(false);
                None
            }
        }
    }

    /// Split endpoints, after a transaction on the writer: if it wrote, remembers its GTID.
    /// `@@last_gtid` is the connection's last written transaction, so one that differs from
    /// what sluice saw before is this session's.
    pub(super) async fn note_write(&mut self) {
        let mariadb = self.pool.dialect.mariadb;
        let addr = self.pool.login.addr.clone();
        let Some(conn) = self.lease.as_mut() else {
            return;
        };
        if !mariadb {
            self.last_write = LastWrite::Unknown;
            return;
        }
        let read = tokio::time::timeout(GTID_READ_TIMEOUT, conn.query(&addr, "SELECT @@last_gtid"));
        let gtid: Option<Box<str>> = match read.await {
            Ok(Ok(rows)) => first(&rows).filter(|g| !g.is_empty()).map(Into::into),
            _ => {
                // Not known whether it wrote: the safe side.
                self.last_write = LastWrite::Unknown;
                self.replayed_on = None;
                return;
            }
        };
        if gtid.is_some() && gtid != conn.state.last_gtid {
            let text = gtid.clone().unwrap_or_default();
            let seq = text.rsplit('-').next().and_then(|s| s.parse().ok());
            self.last_write = match seq {
                Some(seq) => LastWrite::Gtid(text, seq),
                None => LastWrite::Unknown,
            };
            self.replayed_on = None;
        }
        conn.state.last_gtid = gtid;
    }
}

/// `Some(true)` for `START TRANSACTION ... READ ONLY`, `Some(false)` for `... READ WRITE`,
/// `None` for any other statement (a plain `BEGIN` follows the session default).
fn start_transaction_says(sql: &[u8], escapes: bool) -> Option<bool> {
    let mut tokens = Tokens::with_escapes(sql, escapes);
    let first = tokens.next()?;
    if first.is("BEGIN") {
        return None;
    }
    if !first.is("START") || !tokens.next()?.is("TRANSACTION") {
        return None;
    }
    let mut prev: Option<Token<'_>> = None;
    for t in tokens {
        if matches!(t, Token::Semicolon) {
            break;
        }
        if prev.is_some_and(|p| p.is("READ")) {
            if t.is("ONLY") {
                return Some(true);
            }
            if t.is("WRITE") {
                return Some(false);
            }
        }
        prev = Some(t);
    }
    None
}

/// The error for a command whose server was lost before any of its reply: "rolled back" inside
/// a transaction when the command cannot have committed it, else "outcome unknown".
pub(super) fn cut_error(status: u16, command: &[u8], kind: ReplyKind) -> (Code, &'static str) {
    let payload = command.get(wire::HEADER_LEN..).unwrap_or_default();
    let in_transaction = status & wire::status::IN_TRANS != 0;
    let cannot_commit = kind == ReplyKind::Query
        && payload.first() == Some(&command::QUERY)
        && !may_commit(&payload[1..]);
    if in_transaction && cannot_commit {
        (
            errors::CUT_ROLLED_BACK,
            "sluice: the server connection was lost (failover or server shutdown): the transaction was rolled back and can be retried",
        )
    } else {
        (
            errors::CUT_UNKNOWN,
            "sluice: the server connection was lost while the statement ran: it may or may not have been committed",
        )
    }
}

/// Whether `sql` may end a transaction with a commit: COMMIT anywhere, or a statement that is
/// not plain DML (DDL, LOCK TABLES, SET autocommit and the like commit implicitly).
fn may_commit(sql: &[u8]) -> bool {
    let mut statement_start = true;
    for t in Tokens::new(sql) {
        if t.is("COMMIT") {
            return true;
        }
        match t {
            Token::Semicolon => statement_start = true,
            Token::Word(_) if statement_start => {
                let dml = [
                    "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "DO",
                ];
                if !dml.iter().any(|k| t.is(k)) {
                    return true;
                }
                statement_start = false;
            }
            Token::Executable => return true,
            _ => statement_start = false,
        }
    }
    false
}

fn first(rows: &[Vec<Option<String>>]) -> Option<&str> {
    rows.first()?.first()?.as_deref()
}

#[cfg(test)]
mod tests {
    use super::{may_commit, start_transaction_says};

    #[test]
    fn knows_what_cannot_commit() {
        assert!(!may_commit(b"INSERT INTO t VALUES (1)"));
        assert!(!may_commit(b"/* c */ select 1; update t set a = 'commit'"));
        assert!(may_commit(b"COMMIT"));
        assert!(may_commit(b"UPDATE t SET a = 1; COMMIT"));
        assert!(may_commit(b"CREATE TABLE x (a int)"));
        assert!(may_commit(b"SET autocommit = 1"));
        assert!(may_commit(b"/*!40101 COMMIT */"));
    }

    #[test]
    fn reads_the_transaction_access_mode() {
        let says = |sql: &str| start_transaction_says(sql.as_bytes(), true);
        assert_eq!(says("START TRANSACTION READ ONLY"), Some(true));
        assert_eq!(
            says("/* x */ start transaction with consistent snapshot, read only"),
            Some(true)
        );
        assert_eq!(says("START TRANSACTION READ WRITE"), Some(false));
        assert_eq!(says("START TRANSACTION"), None);
        assert_eq!(says("BEGIN"), None);
        assert_eq!(says("SELECT 'START TRANSACTION READ ONLY'"), None);
        assert_eq!(says("START TRANSACTION; SELECT 'read only'"), None);
    }
}
