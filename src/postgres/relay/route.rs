//! Where a session's transactions go and what happens when their server is lost: routing per
//! borrow (writer, reader, read-your-writes on split endpoints) and the one error a client gets
//! for a lost server connection, after which its session goes on.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::time::{Duration, Instant};

use super::{Phase, RESET_TIMEOUT, Session};
use crate::errors::BorrowError;
use crate::pool::Lease;
use crate::postgres::errors;
use crate::postgres::scan::{Token, Words, is};
use crate::postgres::server::ServerConn;
use crate::postgres::wire::{self, frontend, status};
use crate::routing::Want;
use crate::tls::{Socket, unless_hung_up};

/// A lost server's error when the transaction certainly did not commit.
const CUT_ROLLED_BACK: &str = "the server connection was lost (server shut down, failed over or ended the session): the transaction was rolled back and can be retried";
/// ... and when it may have.
const CUT_UNKNOWN: &str =
    "the server connection was lost while the statement ran; it may or may not have been committed";

impl Session {
    /// Borrows a connection, on the instance routing picks, that the server has not ended while
    /// it sat idle in the pool. With no instance to route to (a failover), or one that cannot be
    /// reached, it waits up to the borrow timeout for the probes to find another.
    /// `None`: the client hung up while the request waited.
    pub(super) async fn borrow(
        &mut self,
        want: Want,
        client: &mut Socket,
    ) -> Option<Result<Lease<ServerConn>, BorrowError>> {
        match self.borrow_idle(want) {
            Some(lease) => Some(Ok(lease)),
            // Waiting, connecting or routing: boxed, so its state is not part of every session
            // task.
            None => Box::pin(self.borrow_watched(want, client)).await,
        }
    }

    /// The wait for a connection, watching the client: one that cancels its request
    /// (CancelRequest: a driver's query timeout, psql's ^C) or hangs up meanwhile ends the
    /// wait, and the request never runs; on a direct connection the cancel would have stopped
    /// it. Before, the request ran when a connection came free, for a client that had given up
    /// on it (and may have retried it).
    async fn borrow_watched(
        &mut self,
        want: Want,
        client: &mut Socket,
    ) -> Option<Result<Lease<ServerConn>, BorrowError>> {
        let target = Arc::clone(&self.cancel.target);
        let mut early = BytesMut::new();
        // Pinned here and passed on by reference: a future moved by value is copied whole (its
        // largest state), and the borrow's is large: three such copies were 465 instructions of
        // every queued MySQL borrow.
        let waited = {
            let routed = std::pin::pin!(self.borrow_routed(want));
            let routed = target.unless_cancelled(routed);
            unless_hung_up(client, &mut early, routed).await
        };
        // What the client sent meanwhile comes after the request at the front.
        self.cin.extend_from_slice(&early);
        waited.map(|w| w.unwrap_or(Err(BorrowError::Cancelled)))
    }

    /// Switches the session to its pool on instance `member`.
    fn use_member(&mut self, member: usize) {
        if member != self.route.member as usize {
            self.pg = self.route.cluster.pool_like(member, &self.pg);
            self.route.member = u16::try_from(member).unwrap_or(u16::MAX);
        }
    }

    /// The steady state: an idle connection on the instance routing picks, no future. Not for
    /// a split session's read after a write: that needs a reader that replayed it.
    fn borrow_idle(&mut self, want: Want) -> Option<Lease<ServerConn>> {
        if self.needs_replayed_reader(want) {
            return None;
        }
        let member = self.route.cluster.router.pick(want)?;
        self.use_member(member);
        self.route
            .cluster
            .take_idle(&self.pg.pool, tokio::time::Instant::now())
    }

    async fn borrow_routed(&mut self, want: Want) -> Result<Lease<ServerConn>, BorrowError> {
        let started = tokio::time::Instant::now();
        let mut deadline = None;
        loop {
            let member = match self.read_your_writes(want).await {
                Some(m) => m,
                None => match self.route.cluster.router.pick(want) {
                    Some(m) => m,
                    None => self.route.cluster.route(want).await?,
                },
            };
            self.use_member(member);
            let cluster = &self.route.cluster;
            if let Some(lease) = cluster
                .borrow_on(&self.pg.pool, member, &mut deadline)
                .await?
            {
                let waited = started.elapsed().as_micros();
                self.pipeline
                    .set_borrow_wait(u32::try_from(waited).unwrap_or(u32::MAX));
                return Ok(lease);
            }
        }
    }

    /// A split session's read-only transaction after a write of its own.
    fn needs_replayed_reader(&self, want: Want) -> bool {
        self.route.want == Want::Split && want != Want::Writer && self.route.last_write != 0
    }

    /// What the transaction at the front of `cin` needs: on split endpoints, a reader for a
    /// read-only one (`BEGIN READ ONLY`, or anything but `BEGIN READ WRITE` under a read-only
    /// session default), else the writer.
    pub(super) fn transaction_want(&self) -> Want {
        if self.route.want != Want::Split {
            return self.route.want;
        }
        let first = match wire::next_frame(&self.cin, usize::MAX) {
            Ok(Some(f)) => &self.cin[..f.len],
            _ => &[][..],
        };
        let text = query_text(first.first().copied().unwrap_or(0), first);
        let read_only = text.and_then(transaction_access).unwrap_or_else(|| {
            self.settings.iter().any(|(k, v)| {
                k == "default_transaction_read_only"
                    && matches!(v.as_str(), "on" | "true" | "1" | "yes")
            })
        });
        if read_only {
            Want::Reader { fallback: true }
        } else {
            Want::Writer
        }
    }

    /// Split endpoints, a read-only transaction after a write: a reader that has replayed the
    /// write, waiting up to the read-your-writes timeout; else (`Some(writer)`) the writer.
    pub(super) async fn read_your_writes(&self, want: Want) -> Option<usize> {
        if !self.needs_replayed_reader(want) {
            return None;
        }
        let router = &self.route.cluster.router;
        let deadline = Instant::now() + Duration::from_millis(u64::from(self.route.ryw_ms));
        match router
            .caught_up_reader(self.route.last_write, deadline)
            .await
        {
            Some(m) => Some(m),
            None => router.pick(Want::Writer),
        }
    }

    /// Split endpoints: remembers where the writer's WAL is after this session's transaction.
    /// False when the connection is no longer fit to pool (the read failed or timed out with
    /// its answer still to come).
    pub(super) async fn note_write(&mut self, lease: &mut Lease<ServerConn>) -> bool {
        // The insert position: past this transaction's commit record even when the commit was
        // asynchronous (synchronous_commit = off), unlike the write position. Should it sit past
        // a page header no replica replays yet, the read waits out the timeout on the writer:
        // slower, never stale.
        // Qualified: the session's search_path may put its own objects first (PgBouncer
        // CVE-2025-12819).
        let sql = "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text";
        let read = tokio::time::timeout(RESET_TIMEOUT, lease.simple_query(&self.pg.login, sql));
        let Ok(Ok(rows)) = read.await else {
            return false;
        };
        if let Some(lsn) = rows
            .first()
            .and_then(|r| r.as_deref())
            .and_then(crate::postgres::probe::parse_lsn)
        {
            self.route.last_write = lsn;
        }
        true
    }

    /// Handles the request at the front of `cin` without a server connection if it can be:
    /// skipped to its Sync, failed for a cut transaction, or answered from what sluice knows.
    #[inline]
    pub(super) fn answered_without_server(&mut self) -> bool {
        match self.phase {
            Phase::SkipToSync => {
                self.skip();
                return true;
            }
            Phase::Cut { rolled_back } => {
                self.phase = Phase::Idle;
                let (code, message) = cut_error(rolled_back);
                self.fail_request(code, message);
                return true;
            }
            Phase::Idle | Phase::Borrowing | Phase::Active => {}
        }
        let local = self
            .pipeline
            .answer_locally(&self.cin, &self.pg.statements, &mut self.cout);
        self.cin.advance(local);
        local > 0
    }

    /// The server connection was lost: the session goes on after one error, unless it cannot
    /// (the FATAL to end it with).
    pub(super) fn server_gone(&mut self) -> Option<(&'static str, String)> {
        if self.server_streaming > 0
            || self.client_streaming > 0
            || self.pipeline.pinned().is_some()
        {
            // Mid-message on one side, the stream cannot be brought back in step; a pinned
            // session's state (temp tables, locks, LISTEN) went with the server, and going on
            // would let the client believe it still holds it.
            return Some((
                errors::CONNECTION_FAILURE,
                "server closed the connection unexpectedly".into(),
            ));
        }
        self.after_cut();
        None
    }

    /// The server connection was lost with the session between or inside requests: the client
    /// gets one error for what was in flight (or for its next request) and keeps its session;
    /// the next transaction runs on whatever instance routing picks.
    pub(super) fn after_cut(&mut self) {
        let cut = self.pipeline.cut();
        self.sout.clear();
        let rolled_back = cut.in_transaction && !self.commit_in_flight;
        let (code, message) = cut_error(rolled_back);
        tracing::warn!(session = self.id, pool = %self.pg.pool.name(), code, in_flight = cut.ready, "server connection lost");
        if cut.ready == 0 && !cut.unsynced {
            if cut.in_transaction {
                self.phase = Phase::Cut { rolled_back };
            }
            return;
        }
        wire::error_response(&mut self.cout, "ERROR", code, message);
        for _ in 0..cut.ready {
            wire::ready_for_query(&mut self.cout, status::IDLE);
        }
        if cut.unsynced {
            self.phase = Phase::SkipToSync;
        }
    }

    /// Answers the request at the front of `cin` with an error, as Postgres answers a failed
    /// one: a simple Query at once, extended-protocol messages are skipped up to their Sync.
    pub(super) fn fail_request(&mut self, code: &str, message: &str) {
        wire::error_response(&mut self.cout, "ERROR", code, message);
        if matches!(
            self.cin.first().copied(),
            Some(frontend::QUERY | frontend::FUNCTION_CALL)
        ) {
            if let Ok(Some(f)) = wire::next_frame(&self.cin, usize::MAX) {
                self.cin.advance(f.len);
            }
            wire::ready_for_query(&mut self.cout, status::IDLE);
        } else {
            self.phase = Phase::SkipToSync;
            self.skip();
        }
    }

    /// Drops whole client messages up to and including a Sync, which gets its ReadyForQuery.
    pub(super) fn skip(&mut self) {
        while let Ok(Some(f)) = wire::next_frame(&self.cin, usize::MAX) {
            let tag = self.cin[0];
            if tag == frontend::TERMINATE {
                return; // the idle wait sees the Terminate
            }
            self.cin.advance(f.len);
            if tag == frontend::SYNC {
                self.phase = Phase::Idle;
                wire::ready_for_query(&mut self.cout, status::IDLE);
                return;
            }
        }
    }
}

/// The access mode a transaction's first query gives it: `Some(true)` for `BEGIN READ ONLY`,
/// `START TRANSACTION ... READ ONLY`, or a `BEGIN` followed in the same query by
/// `SET TRANSACTION ... READ ONLY`; `Some(false)` for READ WRITE; `None` when it says neither
/// (the session default decides). Words inside literals, comments and quoted identifiers do not
/// count, and a later statement of the query does not speak for the transaction's start.
pub(crate) fn transaction_access(sql: &[u8]) -> Option<bool> {
    let mut words = Words::new(sql);
    let mut word = || match words.next_token() {
        Some(Token::Word(w)) => Some(Some(w)),
        Some(_) => Some(None),
        None => None,
    };
    let begins = match word()?? {
        w if is(w, "begin") => true,
        w if is(w, "start") => word()?.is_some_and(|w| is(w, "transaction")),
        _ => false,
    };
    if !begins {
        return None;
    }
    // The BEGIN's own modes, then those of a SET TRANSACTION right after it.
    let mut statement = 0;
    let mut previous: Option<&[u8]> = None;
    let mut set_transaction = 0;
    while let Some(token) = word() {
        let Some(w) = token else {
            statement += 1; // a semicolon
            previous = None;
            if statement > 1 {
                return None;
            }
            continue;
        };
        if statement == 1 {
            // Only `SET TRANSACTION ...` may follow.
            set_transaction += 1;
            let expected = match set_transaction {
                1 => "set",
                2 => "transaction",
                _ => "",
            };
            if !expected.is_empty() && !is(w, expected) {
                return None;
            }
        }
        if previous.is_some_and(|p| is(p, "read")) {
            if is(w, "only") {
                return Some(true);
            }
            if is(w, "write") {
                return Some(false);
            }
        }
        previous = Some(w);
    }
    None
}

/// A FATAL or PANIC ErrorResponse: the server closes the connection after it.
pub(super) fn ends_session(message: &[u8]) -> bool {
    let body = &message[wire::FRAME_HEADER_LEN.min(message.len())..];
    wire::parse_error_fields(body).is_ok_and(|f| matches!(f.severity, "FATAL" | "PANIC"))
}

pub(super) fn cut_error(rolled_back: bool) -> (&'static str, &'static str) {
    if rolled_back {
        (errors::SERIALIZATION_FAILURE, CUT_ROLLED_BACK)
    } else {
        (errors::TRANSACTION_RESOLUTION_UNKNOWN, CUT_UNKNOWN)
    }
}

/// Whether a Query or Parse may end its transaction with a commit (COMMIT anywhere in it, END,
/// PREPARE TRANSACTION): if the server is lost now, the outcome is unknown.
pub(super) fn commits(tag: u8, message: &[u8]) -> bool {
    query_text(tag, message).is_some_and(|sql| {
        let first = first_word(sql);
        first.eq_ignore_ascii_case(b"END")
            || first.eq_ignore_ascii_case(b"PREPARE")
            // Anywhere, so `UPDATE ...; COMMIT` in one Query counts (a false alarm only turns
            // "rolled back" into "outcome unknown", the safe side).
            || contains_commit(sql)
    })
}

/// Whether `COMMIT` (any case) occurs in `sql`. This runs on every query, so it looks at eight
/// bytes at a time for a `c` and compares only there (callgrind: a compare at every byte cost
/// more than the pinning scan, and SIMD `memchr` more still on a short query full of `c`s).
fn contains_commit(sql: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const CASE: u64 = u64::from_ne_bytes([0x20; 8]);
    const CS: u64 = u64::from_ne_bytes([b'c'; 8]);
    let at = |i: usize| {
        sql.get(i..i + 6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"COMMIT"))
    };
    let mut i = 0;
    while i + 8 <= sql.len() {
        let chunk = u64::from_le_bytes(sql[i..i + 8].try_into().unwrap_or([0; 8]));
        // A zero byte of `x` is a `c` or `C`; the classic zero-byte test may also flag a byte
        // above a real zero, which the compare then rejects.
        let x = (chunk | CASE) ^ CS;
        let mut found = x.wrapping_sub(ONES) & !x & HIGHS;
        while found != 0 {
            if at(i + found.trailing_zeros() as usize / 8) {
                return true;
            }
            found &= found - 1;
        }
        i += 8;
    }
    (i..sql.len()).any(|j| (sql[j] | 0x20) == b'c' && at(j))
}

/// The SQL text of a Query or Parse message (`message` starts at its tag).
fn query_text(tag: u8, message: &[u8]) -> Option<&[u8]> {
    let body = message.get(wire::FRAME_HEADER_LEN..)?;
    match tag {
        frontend::QUERY => Some(body),
        // Parse: statement name, NUL, then the query text.
        frontend::PARSE => body
            .iter()
            .position(|&b| b == 0)
            .map(|nul| &body[nul + 1..]),
        _ => None,
    }
}

/// The letters `sql` starts with, after any whitespace.
fn first_word(sql: &[u8]) -> &[u8] {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let rest = &sql[start..];
    let len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    &rest[..len]
}

#[cfg(test)]
mod tests {
    use super::{commits, transaction_access};
    use crate::postgres::wire::frontend;

    fn query(sql: &str) -> Vec<u8> {
        let mut m = vec![frontend::QUERY];
        m.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m.push(0);
        m
    }

    #[test]
    fn a_commit_is_seen_anywhere_in_a_query_and_in_a_parse() {
        for sql in [
            "COMMIT",
            "commit",
            "select 1; commit",
            "select 12; commit",
            "select 123;commit",
            "abcdefghcommit",
            "abcdefgcommit",
            "cccccccccommit",
            "ÿÿÿÿcommit",
            "update t set a = 1; CoMmIt",
            "END",
            "  end transaction",
            "PREPARE TRANSACTION 'x'",
            "select 1 -- commit",
        ] {
            assert!(commits(frontend::QUERY, &query(sql)), "{sql}");
        }
        for sql in [
            "select 1",
            "COMMI",
            "comm it",
            "c",
            "",
            "endless",
            "select 'ommit'",
            "cccccccccccccccc",
            "select abalance from pgbench_accounts where aid = 1",
            "ccommi",
            "\u{3}ommit",
            "#ommit",
        ] {
            assert!(!commits(frontend::QUERY, &query(sql)), "{sql}");
        }
        let mut parse = vec![frontend::PARSE, 0, 0, 0, 0];
        parse.extend_from_slice(b"s1\0commit\0\0\0");
        assert!(commits(frontend::PARSE, &parse));
        assert!(!commits(frontend::SYNC, &query("commit")));
    }

    #[test]
    fn transaction_access_is_read_from_words_not_bytes() {
        let cases: &[(&str, Option<bool>)] = &[
            ("BEGIN READ ONLY", Some(true)),
            ("begin transaction read only", Some(true)),
            (
                "START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE",
                Some(true),
            ),
            (
                "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
                Some(false),
            ),
            (
                "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY DEFERRABLE",
                Some(true),
            ),
            ("BEGIN READ WRITE", Some(false)),
            ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1", Some(true)),
            (
                "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
                Some(true),
            ),
            ("BEGIN", None),
            ("BEGIN ISOLATION LEVEL READ COMMITTED", None),
            // Literals, comments and identifiers say nothing.
            ("BEGIN; INSERT INTO t VALUES ('READ ONLY'); COMMIT;", None),
            (
                "BEGIN; INSERT INTO t VALUES (E'it''s \\' READ ONLY'); COMMIT",
                None,
            ),
            ("BEGIN; INSERT INTO t VALUES ($$READ ONLY$$)", None),
            ("BEGIN; INSERT INTO t VALUES ($x$ READ ONLY $x$)", None),
            ("/* read only */ INSERT INTO t VALUES (1)", None),
            ("BEGIN /* READ ONLY */", None),
            ("BEGIN -- READ ONLY\n", None),
            ("BEGIN; SELECT \"read\" only", None),
            ("INSERT INTO t SELECT 'BEGIN READ ONLY'", None),
            // A later statement does not speak for the transaction's start.
            ("BEGIN; SELECT 1; SET TRANSACTION READ ONLY", None),
            ("SET TRANSACTION READ ONLY", None),
            (
                "BEGIN; INSERT INTO t VALUES (1); SET TRANSACTION READ ONLY",
                None,
            ),
            ("start", None),
            ("", None),
        ];
        for (sql, want) in cases {
            assert_eq!(transaction_access(sql.as_bytes()), *want, "{sql}");
        }
    }
}
