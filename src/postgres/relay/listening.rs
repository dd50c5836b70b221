//! A session's subscriptions: moved on its hub when the pipeline says a change committed, and
//! the notifications its inbox holds delivered between transactions, as Postgres delivers them.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::Interest;
use tokio::time::Duration;

use super::{Session, errors};
use crate::metrics::GroupMetrics;
use crate::postgres::listen::sql::Op;
use crate::postgres::listen::{Hub, Inbox};
use crate::session::spare;
use crate::tls::Socket;

/// What a session with subscriptions holds; dropping it unsubscribes them all.
#[derive(Debug)]
pub(super) struct Listening {
    hub: Arc<Hub>,
    pub inbox: Arc<Inbox>,
    channels: Vec<Arc<str>>,
    metrics: Arc<GroupMetrics>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for c in &self.channels {
            self.hub.unsubscribe(&self.inbox, c);
        }
        self.metrics.listening_sessions.dec();
    }
}

/// Resolves when the listening session's inbox has news; never without subscriptions. A small
/// future: it sits in the relay's selects.
pub(super) fn arrived(listening: Option<&Listening>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match listening {
        Some(l) => l.inbox.poll_arrived(cx),
        None => Poll::Pending,
    })
}

impl Session {
    /// Applies the subscription changes that committed; a new channel is answered only once
    /// the listening connection LISTENs on it (bounded by the borrow timeout: without a writer
    /// the client goes on, and the channel is listened on when one is back).
    pub(super) async fn apply_listen(&mut self) {
        let mut waits = Vec::new();
        for op in self.pipeline.take_listen() {
            match op {
                Op::Listen(name) => {
                    let l = self.listening.get_or_insert_with(|| {
                        let hub = self.pg.listeners.hub(&self.pg.login);
                        let metrics = self.route.cluster.metrics.clone();
                        metrics.listening_sessions.inc();
                        Box::new(Listening {
                            inbox: Arc::new(Inbox::new(hub.backlog())),
                            hub,
                            channels: Vec::new(),
                            metrics,
                        })
                    });
                    if l.channels.iter().any(|c| **c == *name) {
                        continue;
                    }
                    let (key, wait) = l.hub.subscribe(&self.route.cluster, &l.inbox, &name);
                    l.channels.push(key);
                    waits.extend(wait);
                }
                Op::Unlisten(name) => {
                    if let Some(l) = self.listening.as_mut()
                        && let Some(at) = l.channels.iter().position(|c| **c == *name)
                    {
                        let key = l.channels.swap_remove(at);
                        l.hub.unsubscribe(&l.inbox, &key);
                        l.inbox.forget(Some(&key));
                    }
                }
                Op::UnlistenAll => self.listening = None,
                _ => {}
            }
        }
        if self
            .listening
            .as_ref()
            .is_some_and(|l| l.channels.is_empty())
        {
            self.listening = None;
        }
        let limit = self
            .route
            .cluster
            .settings
            .borrow_timeout
            .min(Duration::from_secs(30));
        for wait in waits {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }

    /// Moves what the inbox holds to the client's output, unless the session fell too far
    /// behind: then the FATAL error to end it with.
    pub(super) fn deliver(&mut self) -> Result<(), (&'static str, String)> {
        let Some(l) = self.listening.as_ref() else {
            return Ok(());
        };
        if l.inbox.overflowed() {
            l.metrics.notification_backlog_closed.inc();
            let limit = l.inbox.limit();
            tracing::warn!(
                session = self.id,
                limit,
                "session closed: it fell behind its notifications"
            );
            return Err((
                errors::PROGRAM_LIMIT,
                format!(
                    "sluice: this session fell {limit} notifications behind \
                     (connection_pool.notification_backlog); closing it"
                ),
            ));
        }
        // The idle wait gave the buffers back: a spare one, not one grown from nothing.
        spare::ensure(&mut self.cout);
        let n = l.inbox.drain_into(&mut self.cout);
        l.metrics.notifications_delivered.inc_by(n as u64);
        Ok(())
    }

    /// Whether the inbox holds something (or overflowed): its wake-up may have been taken by a
    /// wait that could not deliver.
    pub(super) fn inbox_waiting(&self) -> bool {
        self.listening
            .as_ref()
            .is_some_and(|l| !l.inbox.is_empty() || l.inbox.overflowed())
    }

    /// Whether the inbox overflowed: checked where the session cannot deliver yet.
    pub(super) fn fell_behind(&self) -> bool {
        self.listening
            .as_ref()
            .is_some_and(|l| l.inbox.overflowed())
    }

    /// Writes the client's output, watching the inbox meanwhile: a client that stops reading
    /// while notifications pile up is closed when it falls `notification_backlog` behind, not
    /// waited for. `Err(None)`: the client is gone.
    pub(super) async fn write_listening(
        &mut self,
        client: &mut Socket,
    ) -> Result<(), Option<(&'static str, String)>> {
        loop {
            client.try_flush(&mut self.cout).map_err(|_| None)?;
            if self.cout.is_empty() && !client.pending_output() {
                return Ok(());
            }
            tokio::select! {
                r = client.ready(Interest::WRITABLE) => {
                    r.map_err(|_| None)?;
                }
                () = arrived(self.listening.as_deref()) => {
                    if self.fell_behind() {
                        self.cout.clear();
                        return Err(self.deliver().err());
                    }
                }
            }
        }
    }
}
