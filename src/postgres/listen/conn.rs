//! The listening connection of one hub: on the writer, LISTENs the union of its sessions'
//! channels, fans notifications out, and follows the writer through a failover, telling the
//! sessions that notifications sent while it moved are lost (as for a direct client that
//! reconnects). It ends, closing its connection, once no session listens.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::{Addressed, Hub};
use crate::pool::PooledConnection;
use crate::postgres::server::{Role, ServerConn};
use crate::postgres::wire::{self, Reader, backend};
use crate::routing::{Cluster, Want};

/// How often the task checks that its instance is still the writer.
const WRITER_CHECK: Duration = Duration::from_millis(250);
/// Pause before connecting again after a failed attempt.
const RETRY: Duration = Duration::from_millis(500);
/// Pause before listening again after a lost connection.
const AFTER_LOSS: Duration = Duration::from_millis(100);
/// Largest message read from the listening connection (a notification's payload is < 8 kB).
const MAX_MESSAGE: usize = 1 << 20;

/// Why serving one connection stopped.
enum Stop {
    /// No session listens any more: the task ends.
    Unused,
    /// The connection broke or its instance is no longer the writer.
    Lost(String),
}

/// Runs while any session of `hub` listens. A LISTEN waits for its channel to be listened on
/// only while the connection can be had: when it cannot, the sessions go on (their channels
/// are listened on once it is back; what is sent meanwhile is lost, as in a failover).
pub(super) async fn run<P: Addressed>(hub: Arc<Hub>, cluster: Arc<Cluster<P>>) {
    // Whether a connection served channels before: its loss may have lost notifications.
    let mut lost: Option<String> = None;
    loop {
        if hub.stop_if_unused() {
            return;
        }
        let Ok(member) = cluster.route(Want::Writer).await else {
            continue;
        };
        let Some(pools) = cluster.members.get(member) else {
            hub.release_waiters();
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut login = hub.login.clone();
        login.addr = pools.addr().to_owned();
        login.role = Role::Listener;
        let connect = ServerConn::connect(&login);
        let mut conn = match tokio::time::timeout(cluster.settings.connect_timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::warn!(instance = %login.addr, error = %e, "listening connection failed");
                hub.release_waiters();
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(instance = %login.addr, "listening connection timed out");
                hub.release_waiters();
                continue;
            }
        };
        tracing::info!(instance = %login.addr, database = %login.database, user = %login.user, pid = conn.key.pid, "listening connection open");
        cluster.metrics.listener_connections.inc();
        hub.open.fetch_add(1, Ordering::Relaxed);
        let stop = serve(&hub, &cluster, member, &mut conn, lost.take()).await;
        hub.open.fetch_sub(1, Ordering::Relaxed);
        cluster.metrics.listener_connections.dec();
        hub.state().confirmed.clear();
        conn.close();
        match stop {
            Stop::Unused => return,
            Stop::Lost(why) => {
                tracing::warn!(instance = %login.addr, why, "listening connection lost; listening again on the writer");
                lost = Some(why);
                // A server that keeps refusing is not asked again at once.
                tokio::time::sleep(AFTER_LOSS).await;
            }
        }
    }
}

async fn serve<P>(
    hub: &Hub,
    cluster: &Cluster<P>,
    member: usize,
    conn: &mut ServerConn,
    mut after_loss: Option<String>,
) -> Stop {
    let mut check = tokio::time::interval(WRITER_CHECK);
    loop {
        let (listen, unlisten) = {
            let mut s = hub.state();
            let listen: Vec<Arc<str>> = s
                .subscribers
                .keys()
                .filter(|c| !s.confirmed.contains(*c))
                .cloned()
                .collect();
            let unlisten: Vec<Arc<str>> = s
                .confirmed
                .iter()
                .filter(|c| !s.subscribers.contains_key(*c))
                .cloned()
                .collect();
            // Not confirmed from now on: a session that wants one of them again waits for the
            // LISTEN that follows, not for the UNLISTEN in flight.
            for c in &unlisten {
                s.confirmed.remove(c);
            }
            (listen, unlisten)
        };
        if hub.stop_if_unused() {
            return Stop::Unused;
        }
        if !listen.is_empty() || !unlisten.is_empty() {
            if let Err(why) = change(hub, conn, &listen, &unlisten).await {
                return Stop::Lost(why);
            }
            if let Some(why) = after_loss.take() {
                let mut notice = BytesMut::new();
                let message = format!(
                    "sluice: the connection that listens for this session was lost ({why}) and \
                     listens again on {}; notifications sent in between were lost",
                    conn.peer
                );
                wire::notice_response(&mut notice, "00000", &message);
                hub.tell_all(notice.freeze());
            }
            continue;
        }
        tokio::select! {
            r = conn.stream.read_buf(&mut conn.buf) => match r {
                Ok(0) => return Stop::Lost("the server closed it".into()),
                Err(e) => return Stop::Lost(e.to_string()),
                Ok(_) => {
                    if let Err(why) = take_messages(hub, &mut conn.buf) {
                        return Stop::Lost(why);
                    }
                }
            },
            () = hub.wake.notified() => {}
            _ = check.tick() => {
                if cluster.router.pick(Want::Writer) != Some(member) {
                    return Stop::Lost("its instance is no longer the writer".into());
                }
            }
        }
    }
}

/// Sends one query of LISTENs and UNLISTENs and reads its answer, fanning out notifications
/// that arrive meanwhile; then marks the channels confirmed and wakes who waits for them.
async fn change(
    hub: &Hub,
    conn: &mut ServerConn,
    listen: &[Arc<str>],
    unlisten: &[Arc<str>],
) -> Result<(), String> {
    // (`unlisten` left `confirmed` when it was chosen.)
    let mut sql = String::new();
    for (verb, channels) in [("LISTEN", listen), ("UNLISTEN", unlisten)] {
        for c in channels {
            sql.push_str(&format!("{verb} \"{}\";", c.replace('"', "\"\"")));
        }
    }
    let mut out = BytesMut::new();
    wire::query(&mut out, &sql);
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if take_messages(hub, &mut conn.buf)? {
            break;
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => return Err("the server closed it".into()),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
    }
    let mut s = hub.state();
    for c in listen {
        s.confirmed.insert(c.clone());
    }
    let waiters = std::mem::take(&mut s.waiters);
    for (channel, tx) in waiters {
        if s.confirmed.contains(&channel) {
            let _ = tx.send(());
        } else if !tx.is_closed() {
            s.waiters.push((channel, tx));
        }
    }
    Ok(())
}

/// Handles the whole messages in `buf`: notifications fan out, an error ends the connection.
/// Returns whether a ReadyForQuery was among them.
fn take_messages(hub: &Hub, buf: &mut BytesMut) -> Result<bool, String> {
    let mut ready = false;
    loop {
        let frame = match wire::next_frame(buf, MAX_MESSAGE) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(ready),
            Err(e) => return Err(format!("unreadable message: {e}")),
        };
        let body = frame.body(buf);
        match frame.tag {
            backend::NOTIFICATION_RESPONSE => {
                let mut r = Reader::new(body, "NotificationResponse");
                let _pid = r.i32().map_err(|e| e.to_string())?;
                let channel = r.utf8().map_err(|e| e.to_string())?;
                hub.fan_out(channel, &buf[..frame.len]);
            }
            backend::ERROR_RESPONSE => {
                // The connection runs only sluice's LISTENs and UNLISTENs: refused (a demoted
                // instance answers "cannot execute LISTEN during recovery"), none of them took
                // effect, and the channels must not count as listened on. Start over.
                let f = wire::parse_error_fields(body).unwrap_or_default();
                return Err(format!("{} ({})", f.message, f.code));
            }
            backend::READY_FOR_QUERY => ready = true,
            _ => {}
        }
        let _ = buf.split_to(frame.len);
    }
}
