//! An in-process socket pair: the seam that lets the relays run without a kernel socket, for
//! scripted unit tests and fuzzing. What one end writes, the other reads; dropping an end is a
//! close the other sees as end of stream (reads) and a broken pipe (writes). Writes never
//! block, so a test plays its side in any order.

use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

/// One direction of the pair.
#[derive(Debug, Default)]
struct Way {
    buf: BytesMut,
    /// The writing end is gone (or shut down): reads end once `buf` is drained.
    closed: bool,
    /// The reading end is gone: writes fail.
    unread: bool,
    reader: Option<Waker>,
}

type Shared = Arc<Mutex<Way>>;

/// One end of an in-process connection.
#[derive(Debug)]
pub struct MemorySocket {
    rx: Shared,
    tx: Shared,
}

/// Two connected ends.
pub fn pair() -> (MemorySocket, MemorySocket) {
    let (a, b) = (Shared::default(), Shared::default());
    (
        MemorySocket {
            rx: a.clone(),
            tx: b.clone(),
        },
        MemorySocket { rx: b, tx: a },
    )
}

fn lock(way: &Shared) -> std::sync::MutexGuard<'_, Way> {
    way.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemorySocket {
    /// Ready to read when bytes wait or the peer closed.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut way = lock(&self.rx);
        if !way.buf.is_empty() || way.closed {
            return Poll::Ready(());
        }
        way.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    pub async fn readable(&self) {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await;
    }

    /// Up to `chunk` bytes now; `Ok(0)` once the peer closed and everything was read.
    pub fn read_some(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        self.take(chunk, |bytes| buf.extend_from_slice(bytes))
    }

    /// Copies what is waiting into `out`; `Ok(0)` at end of stream.
    pub fn read_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.take(out.len(), |bytes| out[..bytes.len()].copy_from_slice(bytes))
    }

    /// Hands up to `max` waiting bytes to `to`: `WouldBlock` while none wait and the peer is
    /// open, `Ok(0)` once it closed.
    fn take(&mut self, max: usize, to: impl FnOnce(&[u8])) -> io::Result<usize> {
        let mut way = lock(&self.rx);
        if way.buf.is_empty() {
            return if way.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = max.min(way.buf.len());
        to(&way.buf.split_to(n));
        Ok(n)
    }

    /// Takes all of `data`, or fails if the peer is gone.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut way = lock(&self.tx);
        if way.unread || way.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        way.buf.extend_from_slice(data);
        if let Some(w) = way.reader.take() {
            w.wake();
        }
        Ok(data.len())
    }

    /// Ends this end's writing: the peer reads what was sent, then end of stream.
    pub fn shutdown(&mut self) {
        let mut way = lock(&self.tx);
        way.closed = true;
        if let Some(w) = way.reader.take() {
            w.wake();
        }
    }

    /// Neither data nor a close is waiting.
    pub fn idle_and_open(&self) -> bool {
        let way = lock(&self.rx);
        way.buf.is_empty() && !way.closed
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.shutdown();
        lock(&self.rx).unread = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn bytes_cross_and_a_dropped_end_is_a_close() {
        let (mut a, mut b) = pair();
        let mut got = BytesMut::new();
        assert_eq!(
            b.read_some(&mut got, 64).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.write(b"hello").unwrap();
        b.readable().await;
        assert_eq!(b.read_some(&mut got, 3).unwrap(), 3);
        assert_eq!(b.read_some(&mut got, 64).unwrap(), 2);
        assert_eq!(&got[..], b"hello");
        let reader = tokio::spawn(async move {
            b.readable().await;
            let mut rest = BytesMut::new();
            (b.read_some(&mut rest, 64).unwrap(), rest)
        });
        a.write(b"!").unwrap();
        assert_eq!(reader.await.unwrap().0, 1);
        let (mut c, d) = pair();
        drop(d);
        assert_eq!(c.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(c.read_some(&mut got, 64).unwrap(), 0, "end of stream");
    }
}
