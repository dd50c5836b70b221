//! The hub's bookkeeping without a server: who is subscribed, and what a notification reaches.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Hub, HubState, Inbox};
use crate::postgres::server::ServerLogin;

fn hub() -> Hub {
    Hub {
        login: ServerLogin {
            addr: "db:5432".into(),
            user: "app".into(),
            credentials: crate::pool::scripted::credentials(),
            database: "app".into(),
            scram: Default::default(),
            access: Default::default(),
            role: Default::default(),
        },
        state: std::sync::Mutex::new(HubState::default()),
        wake: tokio::sync::Notify::new(),
        open: Default::default(),
        backlog: 4,
    }
}

fn subscribe(hub: &Hub, inbox: &Arc<Inbox>, channel: &str) {
    let mut s = hub.state();
    s.subscribers
        .entry(channel.into())
        .or_default()
        .insert(super::address(inbox), inbox.clone());
}

#[test]
fn a_notification_reaches_each_subscriber_of_its_channel_once() {
    let hub = hub();
    let (a, b) = (Arc::new(Inbox::new(4)), Arc::new(Inbox::new(4)));
    subscribe(&hub, &a, "jobs");
    subscribe(&hub, &b, "jobs");
    subscribe(&hub, &b, "other");
    hub.fan_out("jobs", b"J");
    hub.fan_out("other", b"O");
    hub.fan_out("nobody", b"N");
    hub.tell_all(Bytes::from_static(b"!"));
    let drained = |i: &Inbox| {
        let mut out = BytesMut::new();
        i.drain_into(&mut out);
        out
    };
    assert_eq!(&drained(&a)[..], b"J!");
    assert_eq!(&drained(&b)[..], b"JO!");

    hub.unsubscribe(&b, "jobs");
    hub.fan_out("jobs", b"J");
    assert_eq!(&drained(&b)[..], b"");
    assert!(!hub.stop_if_unused());
    hub.unsubscribe(&a, "jobs");
    hub.unsubscribe(&b, "other");
    assert!(hub.stop_if_unused(), "the last one out ends the connection");
}

#[test]
fn a_waiter_for_a_channel_nobody_wants_any_more_is_let_go() {
    let hub = hub();
    let inbox = Arc::new(Inbox::new(4));
    subscribe(&hub, &inbox, "a");
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    hub.state().waiters.push(("a".into(), tx));
    hub.unsubscribe(&inbox, "a");
    assert!(
        matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ),
        "LISTEN a; UNLISTEN a in one commit must not wait for a LISTEN that never comes"
    );
}
