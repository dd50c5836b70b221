//! Servers that fail under a session: lost mid-request or inside a transaction, ending their
//! connection themselves, or answering out of order or with impossible lengths. The session
//! always goes on, on a new connection.

use bytes::BufMut;

use super::*;

#[tokio::test]
async fn a_server_lost_mid_request_errs_that_request_and_the_session_goes_on() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| wire::query(b, "UPDATE t SET x = 1"));
    let mut server = rig.server().await;
    server.query().await;
    drop(server);
    let (tag, body) = client.frame().await;
    // Outside a transaction an autocommit statement may or may not have run.
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "08007")
    );
    assert_eq!(
        client.frame().await,
        (backend::READY_FOR_QUERY, vec![status::IDLE])
    );
    client.send(|b| wire::query(b, "SELECT 1"));
    let mut again = rig.server().await;
    assert_eq!(
        again.query().await,
        "SELECT 1",
        "a new connection serves the session"
    );
}

/// A server that answers what nobody asked (an extra ParseComplete), or declares a message
/// too large to buffer, or a negative length, loses its connection: the stray never reaches
/// the client, the connection never goes back to the pool, and the session goes on.
#[tokio::test]
async fn a_server_reply_out_of_order_or_impossible_ends_only_that_connection() {
    let strays: [&[u8]; 3] = [
        &[backend::PARSE_COMPLETE, 0, 0, 0, 4],
        &[backend::ERROR_RESPONSE, 0x7f, 0xff, 0xff, 0xf0, b'S'],
        &[backend::DATA_ROW, 0xff, 0xff, 0xff, 0xfe],
    ];
    for stray in strays {
        let mut rig = Rig::new(1);
        let (mut client, _task) = rig.session();
        client.send(|b| wire::query(b, "SELECT 1"));
        let mut server = rig.server().await;
        server.query().await;
        server.send(|b| b.put_slice(stray));
        let (tag, body) = client.frame().await;
        assert_eq!(
            (tag, code(&body).as_str()),
            (backend::ERROR_RESPONSE, "08007"),
            "{stray:?}"
        );
        assert_eq!(client.frame().await.0, backend::READY_FOR_QUERY);
        assert_eq!(rig.pool_after_settling().await, (0, 0), "{stray:?} pooled");
        client.send(|b| wire::query(b, "SELECT 2"));
        assert_eq!(rig.server().await.query().await, "SELECT 2", "{stray:?}");
    }
}

#[tokio::test]
async fn a_server_lost_inside_a_transaction_fails_the_next_request_as_rolled_back() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    let server = rig.begin(&mut client).await;
    drop(server);
    assert_eq!(
        rig.pool_after_settling().await,
        (0, 0),
        "the lost connection is gone"
    );
    client.send(|b| wire::query(b, "INSERT INTO t VALUES (1)"));
    let (tag, body) = client.frame().await;
    assert_eq!(
        (tag, code(&body).as_str()),
        (backend::ERROR_RESPONSE, "40001")
    );
    assert_eq!(client.frame().await.0, backend::READY_FOR_QUERY);
    client.send(|b| wire::query(b, "SELECT 1"));
    assert_eq!(rig.server().await.query().await, "SELECT 1");
}

#[tokio::test]
async fn a_server_that_ends_its_connection_does_not_end_the_session() {
    let mut rig = Rig::new(1);
    let (mut client, _task) = rig.session();
    client.send(|b| wire::query(b, "SELECT pg_sleep(10)"));
    let mut server = rig.server().await;
    server.query().await;
    server.send(|b| {
        wire::error_response(
            b,
            "FATAL",
            "57P01",
            "terminating connection due to administrator command",
        );
    });
    let (tag, body) = client.frame().await;
    assert_eq!(tag, backend::ERROR_RESPONSE);
    assert_ne!(
        code(&body),
        "57P01",
        "the server's FATAL is about sluice's connection"
    );
    assert_eq!(client.frame().await.0, backend::READY_FOR_QUERY);
    client.send(|b| wire::query(b, "SELECT 1"));
    assert_eq!(rig.server().await.query().await, "SELECT 1");
}

/// Found by the `pg_relay` fuzz target: a server that answers the ROLLBACK of a departed
/// client's transaction with ReadyForQuery 'T' (still in a transaction) had that connection
/// pooled, so the next session would have run inside it. sluice's own queries must leave a
/// connection idle, or it is closed.
#[tokio::test]
async fn a_server_still_in_a_transaction_after_sluices_rollback_is_not_pooled() {
    let mut rig = Rig::new(1);
    let (mut client, task) = rig.session();
    let mut server = rig.begin(&mut client).await;
    drop(client);
    assert_eq!(server.query().await, "ROLLBACK");
    server.send(|b| done(b, "ROLLBACK", status::IN_TRANSACTION));
    task.await.unwrap();
    assert_eq!(
        rig.pool_after_settling().await,
        (0, 0),
        "a connection inside a transaction went back to the pool"
    );
}
