//! Replicated clusters for failover and routing tests: a PostgreSQL primary with streaming
//! replicas ([`PgCluster`]) and a MariaDB primary with a GTID replica ([`MariaCluster`]).
//!
//! Members are addressed by index in start order: 0 is the first primary, 1.. the replicas.
//! An index keeps naming the same server after a promotion; `primary()` follows the writes.
//! Every member is an ordinary [`PgServer`] / [`MariaDb`], so each is stopped and deleted on
//! drop, also when a test panics (or when `start` itself fails half-way).

use std::time::{Duration, Instant};

use super::mariadb::{self, MariaDb, MariaOptions};
use super::postgres::{self, PgOptions, PgServer};
use super::tools::run_ok;

/// The PostgreSQL role the replicas stream as (pg_basebackup -R puts it in primary_conninfo).
pub const PG_REPLICATOR: (&str, &str) = ("replicator", "replicator-secret");
/// The MariaDB user the replica reads the primary's binlog as.
pub const MY_REPLICATOR: (&str, &str) = ("repl", "repl-secret");

const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `done` every 20 ms until it holds (true) or `timeout` passes (false).
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// A PostgreSQL primary and N asynchronous streaming replicas (hot standbys) on loopback.
///
/// Replicas come from `pg_basebackup -R` of the primary after its test roles exist, so the
/// roles, their passwords and `pg_hba.conf` are the primary's: every test login works on every
/// member.
#[derive(Debug)]
pub struct PgCluster {
    members: Vec<PgServer>,
    /// The member that takes writes: 0 until a promote.
    primary: usize,
    /// The member each one streams from; `None` for a primary.
    upstream: Vec<Option<usize>>,
    /// Replay paused by `pause_replay`: such a member is not waited for.
    paused: Vec<bool>,
}

impl PgCluster {
    /// A primary and `replicas` replicas with default server options.
    pub fn start(replicas: usize) -> PgCluster {
        Self::start_with(replicas, PgOptions::default())
    }

    /// Like [`PgCluster::start`]; `opts` apply to every member (a hot standby refuses to start
    /// with a lower max_connections than its primary's).
    pub fn start_with(replicas: usize, mut opts: PgOptions) -> PgCluster {
        // Mostly defaults already; spelled out so the cluster does not hang on them, and put
        // before the caller's lines so a test can still override any. wal_keep_size lets a
        // briefly stopped replica resume without a slot.
        opts.extra_conf = [
            "wal_level = replica",
            "max_wal_senders = 10",
            "hot_standby = on",
            "hot_standby_feedback = off",
            "wal_keep_size = '64MB'",
        ]
        .into_iter()
        .map(String::from)
        .chain(opts.extra_conf)
        .collect();
        // "all" in pg_hba.conf does not match replication connections: they need their own line.
        let hba = format!(
            "host replication {} 127.0.0.1/32 scram-sha-256\n",
            PG_REPLICATOR.0
        );
        let primary = PgServer::start_with_hba(opts.clone(), &hba);
        primary.psql(&format!(
            "CREATE ROLE {} LOGIN REPLICATION PASSWORD {}",
            PG_REPLICATOR.0,
            postgres::literal(PG_REPLICATOR.1)
        ));
        let conninfo = primary.conn_str(PG_REPLICATOR.0, PG_REPLICATOR.1, "postgres");
        let mut members = vec![primary];
        for _ in 0..replicas {
            let replica = PgServer::start_from(opts.clone(), |r| {
                // -c fast: the default spread checkpoint would take minutes; -w: a missing
                // password must fail, not prompt.
                run_ok(
                    r.cmd("pg_basebackup")
                        .arg("-d")
                        .arg(&conninfo)
                        .arg("-D")
                        .arg(r.data_dir())
                        .args(["-R", "-X", "stream", "-c", "fast", "-w"]),
                );
            });
            let in_recovery = replica.psql("SELECT pg_is_in_recovery()");
            assert_eq!(
                in_recovery,
                "t",
                "replica on port {} is not in recovery",
                replica.port()
            );
            members.push(replica);
        }
        let mut upstream = vec![Some(0); members.len()];
        upstream[0] = None;
        PgCluster {
            paused: vec![false; members.len()],
            members,
            primary: 0,
            upstream,
        }
    }

    /// The member that takes writes now: member 0 until [`PgCluster::promote`].
    pub fn primary(&self) -> &PgServer {
        &self.members[self.primary]
    }

    /// The `i`-th replica counted from 0, that is member `i + 1`.
    pub fn replica(&self, i: usize) -> &PgServer {
        let n = self.members.len() - 1;
        assert!(
            i < n,
            "replica({i}) of {n}: replicas count from 0 (member(i) from the primary)"
        );
        &self.members[i + 1]
    }

    /// Member `i`: 0 is the first primary, 1.. the replicas.
    pub fn member(&self, i: usize) -> &PgServer {
        &self.members[i]
    }

    /// `127.0.0.1:port` of every member, dead ones included, in member order.
    pub fn addrs(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| addr(m.host(), m.port()))
            .collect()
    }

    /// Crashes member `i` (SIGKILL); its directory is still deleted on drop.
    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
    }

    /// Promotes replica `i` and makes it [`PgCluster::primary`]. Other replicas keep
    /// streaming from their old upstream until [`PgCluster::follow`].
    pub fn promote(&mut self, i: usize) {
        assert!(
            self.upstream[i].is_some(),
            "promote({i}): member {i} is a primary already"
        );
        self.members[i].promote();
        self.primary = i;
        self.upstream[i] = None;
        self.paused[i] = false;
    }

    /// Points replica `i` at the current primary (after a promote); it switches to the new
    /// timeline by itself. That only works when it has not replayed past the point where the
    /// new primary was promoted, so call [`PgCluster::wait_caught_up`] before the crash.
    pub fn follow(&mut self, i: usize) {
        assert!(
            self.upstream[i].is_some(),
            "follow({i}): member {i} is a primary"
        );
        let conninfo = self
            .primary()
            .conn_str(PG_REPLICATOR.0, PG_REPLICATOR.1, "postgres");
        let m = &self.members[i];
        // primary_conninfo reloads without a restart since PostgreSQL 13.
        m.psql_each(
            "postgres",
            &[
                format!(
                    "ALTER SYSTEM SET primary_conninfo = {}",
                    postgres::literal(&conninfo)
                ),
                "SELECT pg_reload_conf()".to_string(),
            ],
        );
        let streaming = wait_until(TIMEOUT, || {
            m.psql(&format!(
                "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming' \
                 AND sender_port = {}",
                self.primary().port()
            )) == "1"
        });
        assert!(
            streaming,
            "member {i} does not stream from the new primary within 60 s"
        );
        self.upstream[i] = Some(self.primary);
    }

    /// Waits until every running replica of the current primary has replayed all that the
    /// primary has committed so far. Replicas with paused replay, or still following a primary
    /// that was replaced (see [`PgCluster::follow`]), are not waited for.
    pub fn wait_caught_up(&self) {
        let primary = self.primary();
        assert!(
            primary.is_running(),
            "wait_caught_up: the primary (member {}) is down",
            self.primary
        );
        // A WAL record of our own rather than pg_current_wal_lsn(): it comes after every commit
        // so far (asynchronous ones too), and the returned end LSN is exactly the replay position
        // a replica reports after it, never a page header past it.
        let target = primary.psql("SELECT pg_logical_emit_message(false, 'sluice-harness', '')");
        let check = format!(
            "SELECT pg_last_wal_replay_lsn() >= {}",
            postgres::literal(&target)
        );
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || self.upstream[i] != Some(self.primary) || self.paused[i] {
                continue;
            }
            let caught_up = wait_until(TIMEOUT, || m.psql(&check) == "t");
            assert!(
                caught_up,
                "member {i} (port {}) did not replay up to {target} within 60 s: it is at {}",
                m.port(),
                m.psql("SELECT pg_last_wal_replay_lsn()")
            );
        }
    }

    /// Pauses WAL replay on replica `i` (it still receives WAL): it lags until resumed.
    pub fn pause_replay(&mut self, i: usize) {
        let m = &self.members[i];
        m.psql("SELECT pg_wal_replay_pause()");
        // A pause is only requested at first; the startup process takes it at its next record.
        let paused = wait_until(TIMEOUT, || {
            m.psql("SELECT pg_get_wal_replay_pause_state()") == "paused"
        });
        assert!(paused, "member {i}: WAL replay did not pause within 60 s");
        self.paused[i] = true;
    }

    /// Resumes WAL replay on replica `i`.
    pub fn resume_replay(&mut self, i: usize) {
        self.members[i].psql("SELECT pg_wal_replay_resume()");
        self.paused[i] = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Replicas first: stopped after their primary, their log tails (printed on a panic)
        // would end in reconnect errors instead of what went wrong.
        while let Some(member) = self.members.pop() {
            drop(member);
        }
    }
}

/// A MariaDB primary (member 0) and one GTID replica (member 1), both binlogging with
/// `log-slave-updates`, so either can be the primary.
///
/// The replica starts from the same install-db template with nothing else and reads the
/// primary's binlog from its first event, so the test users, databases and anything created
/// on the primary later arrive by replication. `gtid-strict-mode` is on: a write on the
/// replica by root (who passes read_only) stops replication rather than diverging quietly.
#[derive(Debug)]
pub struct MariaCluster {
    members: Vec<MariaDb>,
    /// The member that takes writes: 0 until a promote.
    primary: usize,
    /// Members that replicate from the primary.
    replicating: Vec<bool>,
    /// SQL thread stopped by `stop_sql_thread`: such a member is not waited for.
    sql_stopped: Vec<bool>,
}

impl MariaCluster {
    /// A primary and one replica with default server options.
    pub fn start() -> MariaCluster {
        Self::start_with(1, MariaOptions::default())
    }

    /// A primary and `replicas` GTID replicas; `opts` apply to every member, after the
    /// cluster's lines.
    pub fn start_with(replicas: usize, opts: MariaOptions) -> MariaCluster {
        let conf = |lines: &[String]| MariaOptions {
            max_connections: opts.max_connections,
            extra_conf: [
                "log-bin=mysql-bin",
                "binlog-format=ROW",
                "log-slave-updates=1",
                "gtid-strict-mode=1",
            ]
            .iter()
            .map(|l| l.to_string())
            .chain(lines.iter().cloned())
            .chain(opts.extra_conf.iter().cloned())
            .collect(),
        };
        let primary = MariaDb::start_with(conf(&["server-id=1".into()]));
        let (user, pw) = (
            mariadb::literal(MY_REPLICATOR.0),
            mariadb::literal(MY_REPLICATOR.1),
        );
        primary.sql(&format!(
            "CREATE USER {user}@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD({pw});
             GRANT REPLICATION SLAVE ON *.* TO {user}@'%';"
        ));
        let mut cluster = MariaCluster {
            members: vec![primary],
            primary: 0,
            replicating: vec![false],
            sql_stopped: vec![false],
        };
        for r in 0..replicas {
            let server_id = format!("server-id={}", r + 2);
            let replica = MariaDb::start_bare(conf(&[server_id, "read-only=1".into()]));
            cluster.members.push(replica);
            cluster.replicating.push(true);
            cluster.sql_stopped.push(false);
            cluster.replicate_from_primary(r + 1);
        }
        // Tests log in to the replicas as `app` right away: the users must be there.
        cluster.wait_caught_up();
        cluster
    }

    /// Points member `i` at the current primary and starts replicating from where its own
    /// GTID position is (an empty one asks for the primary's whole binlog).
    fn replicate_from_primary(&self, i: usize) {
        let (user, pw) = (
            mariadb::literal(MY_REPLICATOR.0),
            mariadb::literal(MY_REPLICATOR.1),
        );
        // MASTER_CONNECT_RETRY=1: the default 60 s would leave a replica idle that long after
        // the primary restarts.
        self.members[i].sql(&format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, \
             MASTER_USER={user}, MASTER_PASSWORD={pw}, MASTER_USE_GTID=slave_pos, \
             MASTER_CONNECT_RETRY=1; START SLAVE;",
            self.primary().port()
        ));
    }

    /// Points replica `i` at the current primary (after a promote). It must not have applied
    /// more than the new primary had.
    pub fn follow(&mut self, i: usize) {
        assert!(self.replicating[i], "follow({i}): member {i} is a primary");
        self.replicate_from_primary(i);
        self.sql_stopped[i] = false;
    }

    /// The member that takes writes now: member 0 until [`MariaCluster::promote`].
    pub fn primary(&self) -> &MariaDb {
        &self.members[self.primary]
    }

    /// Member `i`: 0 is the first primary, then the replicas.
    pub fn member(&self, i: usize) -> &MariaDb {
        &self.members[i]
    }

    /// `127.0.0.1:port` of every member, dead ones included, in member order.
    pub fn addrs(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| addr(m.host(), m.port()))
            .collect()
    }

    /// Crashes member `i` (SIGKILL); its directory is still deleted on drop.
    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
    }

    /// Makes replica `i` a writable primary (forgetting its master) and
    /// [`MariaCluster::primary`], after it applied everything it had received: what an operator
    /// does so that no commit a semi-synchronous primary acknowledged is lost.
    pub fn promote(&mut self, i: usize) {
        assert!(
            self.replicating[i],
            "promote({i}): member {i} is not a replica"
        );
        let received = self.received(i);
        let m = &self.members[i];
        m.sql("STOP SLAVE IO_THREAD");
        if !received.is_empty() {
            let applied = m.sql(&format!(
                "SELECT MASTER_GTID_WAIT({}, {})",
                mariadb::literal(&received),
                TIMEOUT.as_secs()
            ));
            assert_eq!(applied, "0", "member {i} did not apply its relay log");
        }
        m.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;");
        self.primary = i;
        self.replicating[i] = false;
        self.sql_stopped[i] = false;
    }

    /// The GTID position replica `i` has received (applied or not): `Gtid_IO_Pos`.
    pub fn received(&self, i: usize) -> String {
        let status = self.members[i].sql("SHOW SLAVE STATUS\\G");
        status
            .lines()
            .find_map(|l| l.trim().strip_prefix("Gtid_IO_Pos:"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Stops applying replicated events on replica `i` (they are still fetched): it lags.
    pub fn stop_sql_thread(&mut self, i: usize) {
        self.members[i].sql("STOP SLAVE SQL_THREAD");
        self.sql_stopped[i] = true;
    }

    /// Resumes applying replicated events on replica `i`.
    pub fn start_sql_thread(&mut self, i: usize) {
        self.members[i].sql("START SLAVE SQL_THREAD");
        self.sql_stopped[i] = false;
    }

    /// Waits until every running replica has applied all of the primary's binlog so far.
    /// A replica whose SQL thread is stopped is not waited for.
    pub fn wait_caught_up(&self) {
        let primary = self.primary();
        assert!(
            primary.pid().is_some(),
            "wait_caught_up: the primary (member {}) is down",
            self.primary
        );
        let pos = primary.sql("SELECT @@gtid_binlog_pos");
        let wait = format!(
            "SELECT MASTER_GTID_WAIT({}, {})",
            mariadb::literal(&pos),
            TIMEOUT.as_secs()
        );
        for (i, m) in self.members.iter().enumerate() {
            if m.pid().is_none() || !self.replicating[i] || self.sql_stopped[i] {
                continue;
            }
            // 0 when reached, -1 on timeout.
            let reached = m.sql(&wait);
            assert_eq!(
                reached,
                "0",
                "member {i} (port {}) did not reach GTID {pos} within 60 s; SHOW SLAVE STATUS:\n{}",
                m.port(),
                m.try_sql("SHOW SLAVE STATUS").unwrap_or_else(|e| e)
            );
        }
    }
}

impl Drop for MariaCluster {
    fn drop(&mut self) {
        // The replica first, for the same reason as in PgCluster.
        while let Some(member) = self.members.pop() {
            drop(member);
        }
    }
}
