//! The Postgres relay driven through in-memory sockets: a scripted client and scripted servers
//! (handed out by the pool's connector), so cuts, skips to Sync, pins, drains and lost servers
//! are checked in milliseconds, message by message, without a database.
#![allow(clippy::unwrap_used)]

mod servers;

use bytes::{BufMut, BytesMut};

use super::rig::Rig;
use crate::errors::{ConnectError, Rejected};
use crate::pool::scripted::{self, Peer};
use crate::postgres::wire::{self, backend, frontend, status};
use crate::session::PinReason;

/// A scripted side speaking whole Postgres frames.
trait Frames {
    fn send(&mut self, write: impl FnOnce(&mut BytesMut));
    /// The next frame, or `None` once the other side closed.
    async fn try_frame(&mut self) -> Option<(u8, Vec<u8>)>;

    /// The next whole frame: (tag, body).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        self.try_frame().await.expect("the peer closed")
    }

    /// Tags of the next `n` frames.
    async fn tags(&mut self, n: usize) -> Vec<u8> {
        let mut tags = Vec::new();
        for _ in 0..n {
            tags.push(self.frame().await.0);
        }
        tags
    }

    /// Reads frames until the other side closes; returns their tags.
    async fn until_closed(&mut self) -> Vec<u8> {
        let mut tags = Vec::new();
        while let Some((tag, _)) = self.try_frame().await {
            tags.push(tag);
        }
        tags
    }

    /// A simple query arrives: its text.
    async fn query(&mut self) -> String {
        let (tag, body) = self.frame().await;
        assert_eq!(tag, frontend::QUERY, "expected a Query");
        String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()
    }
}

impl Frames for Peer {
    fn send(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        write(&mut out);
        self.send_bytes(&out);
    }

    async fn try_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        self.next(|buf| {
            let f = wire::next_frame(buf, usize::MAX).ok().flatten()?;
            let frame = buf.split_to(f.len);
            Some((f.tag, frame[wire::FRAME_HEADER_LEN..].to_vec()))
        })
        .await
    }
}

fn frame(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32(i32::try_from(body.len() + 4).unwrap());
    buf.put_slice(body);
}

/// What a server answers to a statement: CommandComplete and ReadyForQuery.
fn done(buf: &mut BytesMut, tag: &str, tx: u8) {
    wire::command_complete(buf, tag.as_bytes());
    wire::ready_for_query(buf, tx);
}

fn data_row(buf: &mut BytesMut, value: &str) {
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(i32::try_from(value.len()).unwrap());
    body.put_slice(value.as_bytes());
    frame(buf, backend::DATA_ROW, &body);
}

/// Parse, Bind, Execute and Sync of an unnamed statement.
fn extended(buf: &mut BytesMut, sql: &str) {
    let mut parse = BytesMut::new();
    parse.put_u8(0);
    parse.put_slice(sql.as_bytes());
    parse.put_slice(&[0, 0, 0]);
    frame(buf, frontend::PARSE, &parse);
    frame(buf, frontend::BIND, &[0, 0, 0, 0, 0, 0, 0, 0, 0]);
    frame(buf, frontend::EXECUTE, &[0, 0, 0, 0, 0]);
    wire::sync(buf);
}

/// The SQLSTATE of an ErrorResponse body.
fn code(body: &[u8]) -> String {
    wire::parse_error_fields(body).unwrap().code.to_owned()
}

impl Rig {
    /// A logged-in session and the client's end of it, served on its own task.
    fn session(&self) -> (Peer, tokio::task::JoinHandle<super::Session>) {
        self.session_numbered(1)
    }

    /// The next server connection the pool opened.
    async fn server(&mut self) -> Peer {
        self.servers.next().await
    }

    /// The client opens a transaction: the server connection it runs on.
    async fn begin(&mut self, client: &mut Peer) -> Peer {
        client.send(|b| wire::query(b, "BEGIN"));
        let mut server = self.server().await;
        assert_eq!(server.query().await, "BEGIN");
        server.send(|b| done(b, "BEGIN", status::IN_TRANSACTION));
        assert_eq!(
            client.tags(2).await,
            [backend::COMMAND_COMPLETE, backend::READY_FOR_QUERY]
        );
        server
    }

    /// Open and idle connections of the instance, once the session had time to act.
    async fn pool_after_settling(&self) -> (usize, usize) {
        scripted::settled(&self.instance).await
    }

    fn fail_next_connect(&self) {
        self.servers.fail_next(ConnectError::Refused {
            instance: "db:5432".into(),
            rejected: Rejected::TooManyConnections,
            code: "53300".into(),
            message: "sorry, too many clients already".into(),
        });
    }
}

/// Sessions that log in with the same parameters share one copy: what a thousand idle JDBC
/// clients would otherwise hold ten strings each of, twice. Their greeting is encoded once.
#[tokio::test]
async fn sessions_with_the_same_startup_parameters_share_one_copy() {
    use crate::postgres::settings::Settings;
    let rig = Rig::new(1);
    let jdbc = || {
        vec![
            ("application_name".to_owned(), "app".to_owned()),
            ("timezone".to_owned(), "UTC".to_owned()),
        ]
    };
    let mut encoded = 0;
    let mut share = |pairs: Vec<(String, String)>| {
        rig.pool.share(pairs, |s| {
            encoded += 1;
            bytes::Bytes::from(format!("{:?}", &s[..]))
        })
    };
    let (a, greeting) = share(jdbc());
    let (b, again) = share(jdbc());
    assert!(a.same(&b), "the second login got the first one's copy");
    assert_eq!(greeting, again);
    let (other, other_greeting) = share(vec![("application_name".into(), "cron".into())]);
    assert!(!other.same(&a) && other != a);
    assert_ne!(greeting, other_greeting, "other parameters, other greeting");
    assert_eq!(a[1], ("timezone".to_owned(), "UTC".to_owned()));
    let (none, plain) = share(Vec::new());
    assert!(none.same(&Settings::default()));
    assert_eq!(share(Vec::new()).1, plain);
    assert_eq!(encoded, 3, "one encoding per distinct set of parameters");
}

#[tokio::test]
async fn a_query_is_relayed_and_its_connection_released_at_ready_for_query() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| wire::query(b, "SELECT 1"));
    let mut server = rig.server().await;
    assert_eq!(server.query().await, "SELECT 1");
    server.send(|b| {
        data_row(b, "1");
        done(b, "SELECT 1", status::IDLE);
    });
    let tags = client.tags(3).await;
    assert_eq!(
        tags,
        [
            backend::DATA_ROW,
            backend::COMMAND_COMPLETE,
            backend::READY_FOR_QUERY
        ]
    );
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 1),
        "released, kept open"
    );
}

#[tokio::test]
async fn a_transaction_keeps_its_connection_until_it_ends() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 0),
        "held inside the transaction"
    );
    client.send(|b| wire::query(b, "COMMIT"));
    assert_eq!(server.query().await, "COMMIT", "the same connection");
    server.send(|b| done(b, "COMMIT", status::IDLE));
    client.tags(2).await;
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn pipelined_requests_get_their_answers_in_order_and_release_after_the_last() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| {
        extended(b, "SELECT bad");
        extended(b, "SELECT 2");
    });
    let mut server = rig.server().await;
    let sent = server.tags(8).await;
    let request = [
        frontend::PARSE,
        frontend::BIND,
        frontend::EXECUTE,
        frontend::SYNC,
    ];
    assert_eq!(sent, [request, request].concat());
    server.send(|b| {
        wire::error_response(b, "ERROR", "42703", "column \"bad\" does not exist");
        wire::ready_for_query(b, status::IDLE);
        wire::parse_complete(b);
        frame(b, backend::BIND_COMPLETE, &[]);
        data_row(b, "2");
        done(b, "SELECT 1", status::IDLE);
    });
    let got = client.tags(7).await;
    assert_eq!(
        got,
        [
            backend::ERROR_RESPONSE,
            backend::READY_FOR_QUERY,
            backend::PARSE_COMPLETE,
            backend::BIND_COMPLETE,
            backend::DATA_ROW,
            backend::COMMAND_COMPLETE,
            backend::READY_FOR_QUERY
        ]
    );
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn a_failed_borrow_skips_the_request_to_its_sync_and_the_session_goes_on() {
    let mut rig = Rig::new(1);
    rig.fail_next_connect();
    let (mut client, _task) = rig.session();
    client.send(|b| {
        extended(b, "SELECT 1");
    });
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "53300")
    );
    assert_eq!(
        client.frame().await.0,
        backend::READY_FOR_QUERY,
        "one, for the Sync"
    );
    client.send(|b| wire::query(b, "SELECT 2"));
    let mut server = rig.server().await;
    assert_eq!(
        server.query().await,
        "SELECT 2",
        "nothing of the failed request reached it"
    );
    server.send(|b| done(b, "SELECT 1", status::IDLE));
    assert_eq!(
        client.tags(2).await,
        [backend::COMMAND_COMPLETE, backend::READY_FOR_QUERY]
    );
}

#[tokio::test]
async fn a_lone_listen_runs_as_a_no_op_and_does_not_pin() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    client.send(|b| wire::query(b, "LISTEN jobs"));
    let mut server = rig.server().await;
    assert_eq!(server.query().await, "UNLISTEN jobs");
    server.send(|b| done(b, "UNLISTEN", status::IDLE));
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, &body[..]),
        (backend::COMMAND_COMPLETE, &b"LISTEN\0"[..])
    );
    assert_eq!(client.tags(1).await, [backend::READY_FOR_QUERY]);
    assert_eq!(rig.pool_after_settling().await, (1, 1), "released at once");
    assert_eq!(rig.cluster.pin_counts.pins(PinReason::Listen), 0);
    assert_eq!(rig.cluster.metrics.listening_sessions.get(), 1);
    assert_eq!(rig.cluster.metrics.listen_channels.get(), 1);
    client.send(wire::terminate);
    task.await.unwrap();
    assert_eq!(rig.cluster.metrics.listening_sessions.get(), 0);
    assert_eq!(rig.cluster.metrics.listen_channels.get(), 0);
}

/// A LISTEN among other statements of one query is left to the server, as before: it pins.
#[tokio::test]
async fn listen_in_a_longer_query_pins_and_unlisten_unpins_once_the_server_confirms() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| wire::query(b, "select 1; LISTEN jobs"));
    let mut server = rig.server().await;
    server.query().await;
    server.send(|b| done(b, "LISTEN", status::IDLE));
    client.tags(2).await;
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 0),
        "pinned: not released"
    );
    assert_eq!(rig.cluster.pin_counts.pins(PinReason::Listen), 1);
    client.send(|b| wire::query(b, "UNLISTEN *"));
    assert_eq!(server.query().await, "UNLISTEN *");
    server.send(|b| done(b, "UNLISTEN", status::IDLE));
    client.tags(2).await;
    let check = server.query().await;
    assert!(
        check.contains("pg_listening_channels"),
        "the pin check: {check}"
    );
    server.send(|b| {
        data_row(b, "0");
        done(b, "SELECT 1", status::IDLE);
    });
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 1),
        "unpinned and released"
    );
    assert_eq!(rig.cluster.pin_counts.unpins(PinReason::Listen), 1);
}

#[tokio::test]
async fn a_drain_ends_an_idle_session_with_admin_shutdown() {
    let rig = Rig::new(1);
    let (mut client, task) = rig.session();
    rig.cluster.drain.cancel();
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "57P01")
    );
    assert!(client.until_closed().await.is_empty());
    task.await.unwrap();
}

/// Between transactions a session holds no buffers and watches the drain at once: kept for a
/// second, its buffers cost each slow client a timer wake-up per transaction, and a drain
/// reached it only when that second was over.
#[tokio::test]
async fn a_session_between_transactions_gives_its_buffers_back_and_sees_a_drain_at_once() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    client.send(|b| wire::query(b, "COMMIT"));
    assert_eq!(server.query().await, "COMMIT");
    server.send(|b| done(b, "COMMIT", status::IDLE));
    client.tags(2).await;
    rig.pool_after_settling().await;
    assert_eq!(
        crate::session::spare::kept(),
        3,
        "its read, client and server buffers"
    );
    rig.cluster.drain.cancel();
    let (tag, body) = tokio::time::timeout(std::time::Duration::from_millis(300), client.frame())
        .await
        .expect("the drain reached the session at once");
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "57P01")
    );
    assert!(client.until_closed().await.is_empty());
    task.await.unwrap();
}

#[tokio::test]
async fn a_drain_waits_for_the_transaction_boundary() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    rig.cluster.drain.cancel();
    // The session sees the drain while it sits in its transaction.
    rig.pool_after_settling().await;
    client.send(|b| wire::query(b, "COMMIT"));
    assert_eq!(server.query().await, "COMMIT", "the transaction finishes");
    server.send(|b| done(b, "COMMIT", status::IDLE));
    assert_eq!(
        client.tags(2).await,
        [backend::COMMAND_COMPLETE, backend::READY_FOR_QUERY]
    );
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "57P01")
    );
    task.await.unwrap();
    assert_eq!(
        rig.pool_after_settling().await,
        (1, 1),
        "its connection went back"
    );
}

#[tokio::test]
async fn a_client_gone_inside_a_transaction_is_rolled_back_and_its_connection_kept() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    drop(client);
    assert_eq!(server.query().await, "ROLLBACK");
    server.send(|b| done(b, "ROLLBACK", status::IDLE));
    task.await.unwrap();
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}

#[tokio::test]
async fn discard_all_of_an_unpinned_session_is_answered_without_the_server() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| {
        wire::query(b, "DISCARD ALL");
        wire::query(b, "SELECT 1");
    });
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, &body[..]),
        (backend::COMMAND_COMPLETE, &b"DISCARD ALL\0"[..])
    );
    assert_eq!(client.frame().await.0, backend::READY_FOR_QUERY);
    let mut server = rig.server().await;
    assert_eq!(
        server.query().await,
        "SELECT 1",
        "the server never saw the DISCARD"
    );
}

#[tokio::test]
async fn an_oversized_message_ends_the_session_with_54000() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    client.send(|b| {
        b.put_u8(frontend::QUERY);
        b.put_i32(i32::MAX);
        b.put_slice(b"SELECT ");
    });
    let _server = rig.server().await;
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "54000")
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_terminate_ends_the_session_and_a_held_connection_is_reset() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    client.send(|b| wire::query(b, "select 1; LISTEN jobs"));
    let mut server = rig.server().await;
    server.query().await;
    server.send(|b| done(b, "LISTEN", status::IDLE));
    client.tags(2).await;
    client.send(wire::terminate);
    assert_eq!(
        server.query().await,
        "DISCARD ALL",
        "a pinned session's state is reset"
    );
    server.send(|b| done(b, "DISCARD ALL", status::IDLE));
    task.await.unwrap();
    assert_eq!(rig.pool_after_settling().await, (1, 1));
}
