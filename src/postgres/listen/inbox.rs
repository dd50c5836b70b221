//! A listening session's inbox: the notifications the listening connection fanned out to it,
//! waiting for the session to be between transactions, bounded so that a client that stops
//! reading is closed instead of growing sluice's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

#[derive(Debug)]
pub struct Inbox {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Whole backend messages (NotificationResponse, NoticeResponse) and the channel each
    /// came for (`None`: sluice's own notice), shared with every other subscriber's inbox.
    queue: VecDeque<(Option<Arc<str>>, Bytes)>,
    overflowed: bool,
    /// Something arrived (or the inbox overflowed) since the session last looked.
    signalled: bool,
    /// The session's task, waiting: a waker rather than a `Notify` keeps the wait an 8-byte
    /// future in every listening session's select.
    waker: Option<Waker>,
}

impl Inbox {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            limit: limit.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`; past the limit the session is marked to be closed (and the message
    /// dropped with it). Returns whether it was queued.
    pub fn push(&self, channel: Option<Arc<str>>, message: Bytes) -> bool {
        let (queued, waker) = {
            let mut s = self.state();
            if s.overflowed {
                return false;
            }
            let queued = if s.queue.len() >= self.limit {
                s.overflowed = true;
                s.queue.clear();
                false
            } else {
                s.queue.push_back((channel, message));
                true
            };
            s.signalled = true;
            (queued, s.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// Moves every queued message to `out`; how many.
    pub fn drain_into(&self, out: &mut BytesMut) -> usize {
        let mut s = self.state();
        let n = s.queue.len();
        for (_, m) in s.queue.drain(..) {
            out.extend_from_slice(&m);
        }
        n
    }

    /// Drops what is queued for `channel` (`None`: every channel): after UNLISTEN, Postgres
    /// delivers nothing more of it, even what was already on its way.
    pub fn forget(&self, channel: Option<&str>) {
        let mut s = self.state();
        s.queue.retain(|(c, _)| match (c, channel) {
            (None, _) => true,
            (Some(c), Some(ch)) => &**c != ch,
            (Some(_), None) => false,
        });
    }

    pub fn overflowed(&self) -> bool {
        self.state().overflowed
    }

    pub fn is_empty(&self) -> bool {
        self.state().queue.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Ready once something arrived (or the inbox overflowed) since the last time it was.
    pub fn poll_arrived(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state();
        if std::mem::take(&mut s.signalled) {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_order_and_forgets_a_channel() {
        let inbox = Inbox::new(3);
        let a: Arc<str> = "a".into();
        assert!(inbox.push(Some(a.clone()), Bytes::from_static(b"1")));
        assert!(inbox.push(None, Bytes::from_static(b"n")));
        assert!(inbox.push(Some("b".into()), Bytes::from_static(b"2")));
        inbox.forget(Some("a"));
        let mut out = BytesMut::new();
        assert_eq!(inbox.drain_into(&mut out), 2);
        assert_eq!(&out[..], b"n2");
        for _ in 0..3 {
            assert!(inbox.push(Some(a.clone()), Bytes::from_static(b"x")));
        }
        assert!(!inbox.overflowed());
        assert!(!inbox.push(Some(a), Bytes::from_static(b"y")));
        assert!(inbox.overflowed());
        assert!(inbox.is_empty(), "an overflowed inbox holds nothing");
    }
}
