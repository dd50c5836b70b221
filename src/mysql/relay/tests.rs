//! The MySQL relay driven through in-memory sockets: a scripted client and scripted servers
//! (handed out by the pool's connector), so statement and transaction pooling, lost servers,
//! pins and drains are checked packet by packet, without a database.
#![allow(clippy::unwrap_used)]

use super::Session;
use super::rig::Rig;
use crate::errors::{ConnectError, Rejected};
use crate::mysql::wire::{self, OkPacket, command, status};
use crate::pool::scripted::{self, Peer};
use crate::session::PinReason;

/// A scripted side speaking whole MySQL packets.
trait Packets {
    fn send(&mut self, write: impl FnOnce(&mut Vec<u8>));
    /// The next packet's (sequence id, payload), or `None` once the other side closed.
    async fn try_packet(&mut self) -> Option<(u8, Vec<u8>)>;

    async fn packet(&mut self) -> Vec<u8> {
        self.try_packet().await.expect("the peer closed").1
    }

    /// A COM_QUERY arrives: its text.
    async fn query(&mut self) -> String {
        let p = self.packet().await;
        assert_eq!(p[0], command::QUERY, "expected COM_QUERY, got {p:?}");
        String::from_utf8_lossy(&p[1..]).into_owned()
    }

    /// The client sends a COM_QUERY.
    fn send_query(&mut self, sql: &str) {
        let mut payload = vec![command::QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.send(|out| wire::write_packet(out, 0, &payload));
    }

    /// The server answers OK with `status`.
    fn ok(&mut self, status: u16) {
        let ok = OkPacket {
            status,
            ..OkPacket::default()
        };
        self.send(|out| wire::write_ok(out, 1, &ok));
    }

    /// An ERR packet arrives: its error number.
    async fn err(&mut self) -> u16 {
        let p = self.packet().await;
        assert_eq!(p[0], 0xff, "expected an ERR, got {p:?}");
        u16::from_le_bytes([p[1], p[2]])
    }

    async fn is_ok(&mut self) -> bool {
        self.packet().await[0] == 0x00
    }
}

impl Packets for Peer {
    fn send(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        self.send_bytes(&out);
    }

    async fn try_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        self.next(|buf| {
            let p = wire::next_packet(buf).filter(|p| buf.len() >= p.len)?;
            let packet = buf.split_to(p.len);
            Some((p.seq, packet[wire::HEADER_LEN..].to_vec()))
        })
        .await
    }
}

impl Rig {
    fn cluster(&self) -> &crate::mysql::cluster::MyCluster {
        &self.ep.engine.cluster
    }

    /// A logged-in session and the client's end of it, served on its own task.
    fn session(&self) -> (Peer, tokio::task::JoinHandle<Session>) {
        self.session_numbered(1)
    }

    async fn server(&mut self) -> Peer {
        self.servers.next().await
    }

    /// The client opens a transaction: the server connection it runs on.
    async fn begin(&mut self, client: &mut Peer) -> Peer {
        client.send_query("BEGIN");
        let mut server = self.server().await;
        assert_eq!(server.query().await, "BEGIN");
        server.ok(IN_TRANS);
        assert!(client.is_ok().await);
        server
    }

    /// Open and idle connections of the instance, once the session had time to act.
    async fn pool_after_settling(&self) -> (usize, usize) {
        scripted::settled(&self.instance).await
    }
}

const AUTOCOMMIT: u16 = status::AUTOCOMMIT;
const IN_TRANS: u16 = status::AUTOCOMMIT | status::IN_TRANS;

#[tokio::test]
async fn a_statement_is_relayed_and_its_connection_released_after_its_ok() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("INSERT INTO t VALUES (1)");
    let mut server = rig.server().await;
    assert_eq!(server.query().await, "INSERT INTO t VALUES (1)");
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn a_transaction_keeps_its_connection_until_commit() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 0),
        "held inside the transaction"
    );
    client.send_query("COMMIT");
    assert_eq!(server.query().await, "COMMIT", "the same connection");
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn a_server_lost_before_its_reply_errs_the_statement_and_the_session_goes_on() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("UPDATE t SET x = 1");
    let mut server = rig.server().await;
    server.query().await;
    drop(server);
    // An autocommit statement may or may not have run.
    assert_eq!(client.err().await, 1317);
    client.send_query("SELECT 1");
    assert_eq!(rig.server().await.query().await, "SELECT 1");
}

#[tokio::test(start_paused = true)]
async fn a_server_lost_inside_a_transaction_fails_the_next_statement_as_rolled_back() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    let server = rig.begin(&mut client).await;
    drop(server);
    // A session idle for a second watches its connection: it lets it go at once, and the slot
    // serves other sessions.
    tokio::time::sleep(tokio::time::Duration::from_millis(1001)).await;
    assert_eq!(rig.pool_after_settling().await, (0, 0));
    client.send_query("INSERT INTO t VALUES (2)");
    assert_eq!(
        client.err().await,
        1213,
        "retryable: the transaction rolled back"
    );
    client.send_query("SELECT 1");
    assert_eq!(rig.server().await.query().await, "SELECT 1");
}

#[tokio::test]
async fn a_failed_borrow_fails_the_statement_not_the_session() {
    let mut rig = Rig::new(1);
    rig.servers.fail_next(ConnectError::Refused {
        instance: "db:3306".into(),
        rejected: Rejected::TooManyConnections,
        code: "1040".into(),
        message: "Too many connections".into(),
    });
    let (mut client, _task) = rig.session();
    client.send_query("SELECT 1");
    assert_eq!(client.err().await, 1040, "the server's own errno");
    client.send_query("SELECT 2");
    let mut server = rig.server().await;
    assert_eq!(server.query().await, "SELECT 2");
}

#[tokio::test]
async fn lock_tables_pins_and_unlock_tables_lifts_the_pin() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("LOCK TABLES t WRITE");
    let mut server = rig.server().await;
    server.query().await;
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(rig.pool_after_settling().await, (1, 0), "pinned");
    assert_eq!(rig.cluster().pin_counts.pins(PinReason::LockTables), 1);
    client.send_query("UNLOCK TABLES");
    assert_eq!(server.query().await, "UNLOCK TABLES");
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(rig.pool_after_settling().await, (1, 1), "released");
    assert_eq!(rig.cluster().pin_counts.unpins(PinReason::LockTables), 1);
}

#[tokio::test]
async fn a_drain_closes_an_idle_session_without_a_word() {
    let rig = Rig::new(1);
    let (mut client, task) = rig.session();
    rig.cluster().drain.cancel();
    assert_eq!(
        client.try_packet().await,
        None,
        "closed, as a shutting-down server does"
    );
    task.await.unwrap();
}

/// Between commands without a server connection a session holds no buffers and watches the
/// drain at once (both waited for a second of idleness before).
#[tokio::test]
async fn a_session_between_commands_gives_its_buffers_back_and_sees_a_drain_at_once() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    client.send_query("COMMIT");
    assert_eq!(server.query().await, "COMMIT");
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(rig.pool_after_settling().await, (1, 1), "released");
    assert_eq!(
        (
            crate::session::spare::kept(),
            crate::session::spare::kept_vecs()
        ),
        (1, 1),
        "its read and reply buffers"
    );
    rig.cluster().drain.cancel();
    let closed = tokio::time::timeout(std::time::Duration::from_millis(300), client.try_packet())
        .await
        .expect("the drain reached the session at once");
    assert_eq!(closed, None);
    task.await.unwrap();
}

#[tokio::test]
async fn a_drain_waits_for_the_transaction_boundary() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    rig.cluster().drain.cancel();
    // The session sees the drain while it sits in its transaction.
    rig.pool_after_settling().await;
    client.send_query("COMMIT");
    assert_eq!(server.query().await, "COMMIT", "the transaction finishes");
    server.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
    assert_eq!(client.try_packet().await, None);
    task.await.unwrap();
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn a_client_gone_inside_a_transaction_resets_its_connection_before_reuse() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    drop(client);
    let reset = server.packet().await;
    assert_eq!(reset, [command::RESET_CONNECTION], "rolled back by a reset");
    server.ok(AUTOCOMMIT);
    // The reset is followed by the role check (MariaDB keeps the role), then the read-back of
    // the connection's state.
    assert_eq!(server.query().await, "SELECT CURRENT_ROLE()");
    drop(server);
    task.await.unwrap();
    assert_eq!(
        rig.pool_after_settling().await.1,
        0,
        "an unanswered reset is not reused"
    );
}

#[tokio::test]
async fn a_malformed_reply_ends_its_server_connection_not_the_session() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("SELECT 1");
    let mut server = rig.server().await;
    server.query().await;
    // An OK packet cut short after its header byte.
    server.send(|out| wire::write_packet(out, 1, &[0x00]));
    assert_eq!(client.err().await, 1317);
    client.send_query("SELECT 2");
    assert_eq!(rig.server().await.query().await, "SELECT 2");
}

#[tokio::test]
async fn com_quit_ends_the_session_and_releases_nothing_it_did_not_hold() {
    let rig = Rig::new(1);
    let (mut client, task) = rig.session();
    client.send(|out| wire::write_packet(out, 0, &[command::QUIT]));
    assert_eq!(client.try_packet().await, None);
    task.await.unwrap();
    assert_eq!(
        rig.pool_after_settling().await,
        (0, 0),
        "no server connection was opened"
    );
}

#[tokio::test]
async fn a_file_request_on_a_connection_without_local_files_ends_that_connection_only() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("SELECT 1");
    let mut server = rig.server().await;
    server.query().await;
    // LOCAL INFILE request: only a connection opened with CLIENT_LOCAL_FILES may get one.
    server.send(|out| wire::write_packet(out, 1, b"\xfb/etc/passwd"));
    assert_eq!(
        client.err().await,
        1317,
        "the client never sees the request"
    );
    client.send_query("SELECT 2");
    assert_eq!(rig.server().await.query().await, "SELECT 2");
}

/// The MySQL twin of what the `pg_relay` fuzz target found: a server still in a transaction
/// after sluice's COM_RESET_CONNECTION is closed, never pooled.
#[tokio::test]
async fn a_server_still_in_a_transaction_after_its_reset_is_not_pooled() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    drop(client);
    assert_eq!(server.packet().await, [command::RESET_CONNECTION]);
    server.ok(IN_TRANS);
    let quit = server.try_packet().await.map(|(_, p)| p);
    assert!(
        matches!(quit.as_deref(), None | Some([command::QUIT])),
        "the connection is closed, not read back: {quit:?}"
    );
    task.await.unwrap();
    assert_eq!(rig.pool_after_settling().await, (0, 0));
}

/// Found by the `mysql_relay` fuzz target: a connection held between commands (for SHOW
/// WARNINGS, a transaction or a pin) on which the server spoke unasked. The stray OK was read as
/// the answer to the session's next command, the connection went back to the pool with that
/// command's real reply still to come, and the next session received it.
#[tokio::test]
async fn a_server_speaking_unasked_on_a_held_connection_answers_no_later_command() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send_query("INSERT INTO t VALUES (1)");
    let mut server = rig.server().await;
    server.query().await;
    let warned = OkPacket {
        status: AUTOCOMMIT,
        warnings: 1,
        ..OkPacket::default()
    };
    server.send(|out| wire::write_ok(out, 1, &warned));
    assert!(client.is_ok().await, "held for SHOW WARNINGS");
    server.ok(AUTOCOMMIT);
    client.send_query("SELECT 'mine'");
    let quit = server.try_packet().await.map(|(_, p)| p);
    assert!(
        matches!(quit.as_deref(), None | Some([command::QUIT])),
        "the connection that spoke unasked is closed, unread by anyone: {quit:?}"
    );
    // The pool's one slot is free once the server has let that connection go.
    drop(server);
    let mut fresh = rig.server().await;
    assert_eq!(
        fresh.query().await,
        "SELECT 'mine'",
        "asked on a new connection"
    );
    fresh.ok(AUTOCOMMIT);
    assert!(client.is_ok().await);
}

/// The same inside a transaction: what the server said cannot be trusted, so the transaction
/// is lost and the client is told it rolled back.
#[tokio::test]
async fn a_server_speaking_unasked_inside_a_transaction_rolls_it_back() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    server.ok(IN_TRANS);
    client.send_query("INSERT INTO t VALUES (2)");
    assert_eq!(client.err().await, 1213, "rolled back, retryable");
    let quit = server.try_packet().await.map(|(_, p)| p);
    assert!(
        matches!(quit.as_deref(), None | Some([command::QUIT])),
        "{quit:?}"
    );
    client.send_query("SELECT 1");
    assert_eq!(rig.server().await.query().await, "SELECT 1");
}
