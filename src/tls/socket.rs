//! A client or server socket, plain TCP, TLS over TCP or a Unix-domain socket to a local
//! instance, with both ways sessions drive one:
//! readiness plus non-blocking reads and writes (the Postgres relay's pumps) and
//! `AsyncRead`/`AsyncWrite` (logins and the MySQL relay).
//!
//! TLS is rustls driven by hand over the tokio socket rather than tokio-rustls' stream, which
//! offers only the poll interface: a pump needs "is there plaintext already decrypted" and "are
//! encrypted bytes still queued" to decide what to wait for. The handshake is driven here too,
//! since a MySQL client sends its ClientHello right behind the SSLRequest, before any answer:
//! bytes the login already read are the start of the handshake.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::{TcpStream, UnixStream};

use super::memory::MemorySocket;

/// A connected socket; the plain variant costs what a bare `TcpStream` does.
#[derive(Debug)]
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
    /// An in-process pair's end: relays driven by scripted tests and fuzzers.
    Memory(MemorySocket),
    /// A Unix-domain socket to an instance on the same host (`unix:/path` instances).
    Unix(UnixStream),
}

/// rustls state over a socket.
pub struct TlsSocket {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Decrypted bytes rustls holds that have not been read yet.
    plain: usize,
    closing: bool,
}

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSocket")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

/// `Read`/`Write` over the tokio socket that never blocks: `WouldBlock` clears readiness.
struct TryIo<'a>(&'a TcpStream);

impl Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The two kinds of plain stream: both poll readiness the same way.
trait PollReady {
    fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl PollReady for TcpStream {
    fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_ready(cx)
    }
}

impl PollReady for UnixStream {
    fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_ready(cx)
    }
}

/// Readiness through the stream's one waker slot per direction rather than tokio's `ready()`
/// future, which queues a node on the socket's waiter list (a lock to add, another to remove)
/// on every wait: callgrind counted that future among the relay's costliest parts. Only the
/// session that owns a socket waits on it, so one slot per direction is enough; a waker left in
/// a slot after a `select!` dropped this future at worst wakes its task once for nothing.
fn poll_ready_plain(
    stream: &impl PollReady,
    cx: &mut Context<'_>,
    interest: Interest,
) -> Poll<io::Result<Ready>> {
    if interest.is_readable()
        && let Poll::Ready(r) = stream.poll_read(cx)
    {
        return Poll::Ready(r.map(|()| Ready::READABLE));
    }
    if interest.is_writable()
        && let Poll::Ready(r) = stream.poll_write(cx)
    {
        return Poll::Ready(r.map(|()| Ready::WRITABLE));
    }
    Poll::Pending
}

/// Drops the first `n` bytes of `buf`. All of them: cleared instead of advanced, so the buffer
/// keeps its start and the next read's `reserve` finds room without moving anything (an
/// advanced-to-empty buffer is compacted by `reserve` on every transaction otherwise).
#[inline]
pub fn consume(buf: &mut BytesMut, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TlsSocket {
    /// Runs the handshake of `conn` over `tcp`, starting with `early`: TLS bytes the caller
    /// already read from the socket.
    pub async fn handshake(
        tcp: TcpStream,
        conn: impl Into<rustls::Connection>,
        mut early: &[u8],
    ) -> io::Result<Self> {
        let mut t = Self {
            tcp,
            conn: conn.into(),
            plain: 0,
            closing: false,
        };
        while !early.is_empty() {
            t.conn.read_tls(&mut early)?;
            t.process()?;
        }
        while t.conn.is_handshaking() {
            if t.conn.wants_write() {
                match t.flush_tls() {
                    Err(e) if would_block(&e) => t.tcp.writable().await?,
                    r => r?,
                }
                continue;
            }
            match t.fill() {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => t.tcp.readable().await?,
                Err(e) => return Err(e),
            }
        }
        while t.conn.wants_write() {
            match t.flush_tls() {
                Err(e) if would_block(&e) => t.tcp.writable().await?,
                r => r?,
            }
        }
        Ok(t)
    }

    /// Decrypts what rustls has buffered; a protocol error sends rustls' alert first.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain = state.plaintext_bytes_to_read();
                Ok(())
            }
            Err(e) => {
                let _ = self.flush_tls();
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Reads and decrypts the TLS records the socket has now. `Ok(0)`: the peer closed.
    fn fill(&mut self) -> io::Result<usize> {
        let n = self.conn.read_tls(&mut TryIo(&self.tcp))?;
        self.process()?;
        if self.conn.wants_write() {
            // Post-handshake messages (tickets, key updates) go out with the next write anyway.
            match self.flush_tls() {
                Err(e) if !would_block(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(n)
    }

    /// Sends queued TLS records until done or the socket is full (`WouldBlock`).
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut TryIo(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Reads plaintext into `buf`'s spare room (at least `min` bytes of room).
    fn read_plain(&mut self, buf: &mut BytesMut, min: usize) -> io::Result<usize> {
        buf.reserve(min.max(self.plain));
        let start = buf.len();
        let room = buf.capacity() - start;
        buf.resize(start + room, 0);
        let result = loop {
            match self.conn.reader().read(&mut buf[start..]) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(0),
                Err(e) if would_block(&e) => match self.fill() {
                    Ok(0) => break Ok(0),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                },
                Err(e) => break Err(e),
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        self.plain = self.plain.saturating_sub(n);
        result
    }

    /// Queues plaintext for sending, but only once earlier records have left: at most one
    /// write's worth of records is ever pending, and `WouldBlock` means none was taken.
    fn write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        let n = self.conn.writer().write(data)?;
        match self.flush_tls() {
            Err(e) if !would_block(&e) => Err(e),
            _ => Ok(n),
        }
    }
}

impl Socket {
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Encrypted bytes waiting for the socket to take them (never for plain sockets).
    pub fn pending_output(&self) -> bool {
        match self {
            Self::Plain(_) | Self::Memory(_) | Self::Unix(_) => false,
            Self::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Waits until a read or a write (as asked) can make progress. With TLS, readable may
    /// also mean "plaintext already decrypted", and queued records are sent while waiting.
    pub async fn ready(&mut self, interest: Interest) -> io::Result<Ready> {
        let t = match self {
            Self::Plain(tcp) => {
                return std::future::poll_fn(|cx| poll_ready_plain(tcp, cx, interest)).await;
            }
            Self::Unix(unix) => {
                return std::future::poll_fn(|cx| poll_ready_plain(unix, cx, interest)).await;
            }
            Self::Tls(t) => t,
            Self::Memory(m) => {
                // Writes never wait; a read waits for bytes or the peer's close.
                if interest.is_writable() && (!interest.is_readable() || m.idle_and_open()) {
                    return Ok(Ready::WRITABLE);
                }
                m.readable().await;
                return Ok(Ready::READABLE);
            }
        };
        loop {
            if interest.is_readable() && t.plain > 0 {
                return Ok(Ready::READABLE);
            }
            if interest.is_writable() && !t.conn.wants_write() {
                return Ok(Ready::WRITABLE);
            }
            let mut want = if interest.is_readable() {
                Interest::READABLE
            } else {
                Interest::WRITABLE
            };
            if t.conn.wants_write() {
                want |= Interest::WRITABLE;
            }
            let r = t.tcp.ready(want).await?;
            if r.is_writable() {
                match t.flush_tls() {
                    Err(e) if !would_block(&e) => return Err(e),
                    _ => {}
                }
            }
            if interest.is_readable() && (r.is_readable() || r.is_read_closed()) {
                return Ok(r);
            }
        }
    }

    pub async fn readable(&mut self) -> io::Result<()> {
        self.ready(Interest::READABLE).await.map(|_| ())
    }

    /// Reads what is available now without waiting; `Ok(0)` is end of stream. A short plain
    /// read is reported to tokio as `WouldBlock`, which clears readiness as of the snapshot
    /// taken before the read: no wasted `recv` after every message.
    pub fn read_some(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        // The same for both stream kinds; a macro since they share no trait for `try_io`.
        macro_rules! short_read_clears_readiness {
            ($stream:expr) => {{
                let stream = $stream;
                buf.reserve(chunk);
                let room = buf.capacity() - buf.len();
                let mut got = 0;
                let result = stream.try_io(Interest::READABLE, || {
                    got = stream.try_read_buf(buf)?;
                    if got > 0 && got < room {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(())
                    }
                });
                match result {
                    Err(e) if got == 0 => Err(e),
                    _ => Ok(got),
                }
            }};
        }
        match self {
            Self::Plain(tcp) => short_read_clears_readiness!(tcp),
            Self::Unix(unix) => short_read_clears_readiness!(unix),
            Self::Tls(t) => t.read_plain(buf, chunk),
            Self::Memory(m) => m.read_some(buf, chunk),
        }
    }

    /// Writes what the socket takes now, advancing `buf`; an error means the peer is gone.
    pub fn try_flush(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        while !buf.is_empty() {
            let n = match self {
                Self::Plain(tcp) => tcp.try_write(buf),
                Self::Unix(unix) => unix.try_write(buf),
                Self::Tls(t) => t.write_plain(buf),
                Self::Memory(m) => m.write(buf),
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => consume(buf, n),
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        buf.clear();
        if let Self::Tls(t) = self {
            match t.flush_tls() {
                Err(e) if !would_block(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Best effort, never waits: for a goodbye message on a connection about to be dropped.
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.try_write(data),
            Self::Unix(unix) => unix.try_write(data),
            Self::Tls(t) => t.write_plain(data),
            Self::Memory(m) => m.write(data),
        }
    }

    /// Writes all of `data` and, with TLS, every record it became: callers write a reply and
    /// then wait for the peer, so nothing may stay queued here.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(self, data).await?;
        if self.pending_output() {
            tokio::io::AsyncWriteExt::flush(self).await?;
        }
        Ok(())
    }

    /// Whether a pooled connection stayed silent while idle: data or EOF from the server means
    /// it ended the connection (terminated backend, restart) in the meantime.
    pub fn idle_and_open(&mut self, unread: &[u8]) -> bool {
        if !unread.is_empty() {
            return false;
        }
        match self {
            Self::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if would_block(&e))
            }
            Self::Unix(unix) => {
                let mut probe = [0u8; 1];
                matches!(unix.try_read(&mut probe), Err(e) if would_block(&e))
            }
            Self::Tls(t) => loop {
                match t.fill() {
                    // Records that carried no data (a session ticket) leave it open.
                    Ok(n) if n > 0 && t.plain == 0 => {}
                    Err(e) => return would_block(&e) && t.plain == 0,
                    Ok(_) => return false,
                }
            },
            Self::Memory(m) => m.idle_and_open(),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let t = match self.get_mut() {
            Self::Plain(tcp) => return Pin::new(tcp).poll_read(cx, out),
            Self::Unix(unix) => return Pin::new(unix).poll_read(cx, out),
            Self::Tls(t) => t,
            Self::Memory(m) => {
                ready!(m.poll_readable(cx));
                let n = m.read_into(out.initialize_unfilled())?;
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
        };
        loop {
            match t.conn.reader().read(out.initialize_unfilled()) {
                Ok(n) => {
                    out.advance(n);
                    t.plain = t.plain.saturating_sub(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Ok(()));
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match t.fill() {
                Ok(_) => {}
                Err(e) if would_block(&e) => ready!(t.tcp.poll_read_ready(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let t = match self.get_mut() {
            Self::Plain(tcp) => return Pin::new(tcp).poll_write(cx, data),
            Self::Unix(unix) => return Pin::new(unix).poll_write(cx, data),
            Self::Tls(t) => t,
            Self::Memory(m) => return Poll::Ready(m.write(data)),
        };
        loop {
            match t.write_plain(data) {
                Err(e) if would_block(&e) => ready!(t.tcp.poll_write_ready(cx))?,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let t = match self.get_mut() {
            Self::Plain(tcp) => return Pin::new(tcp).poll_flush(cx),
            Self::Unix(unix) => return Pin::new(unix).poll_flush(cx),
            Self::Tls(t) => t,
            Self::Memory(_) => return Poll::Ready(Ok(())),
        };
        loop {
            match t.flush_tls() {
                Err(e) if would_block(&e) => ready!(t.tcp.poll_write_ready(cx))?,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Self::Tls(t) = this
            && !t.closing
        {
            t.closing = true;
            t.conn.send_close_notify();
        }
        ready!(Pin::new(&mut *this).poll_flush(cx))?;
        match this {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Unix(unix) => Pin::new(unix).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(&mut t.tcp).poll_shutdown(cx),
            Self::Memory(m) => {
                m.shutdown();
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// Reads and drops whatever the peer still sends until it closes its end (or the read fails):
/// how a closing side learns the server has let the connection go. Past `CLOSE_DISCARD` bytes
/// it gives up: a server still streaming a reply is not about to let go, and reading the rest
/// would cost more than the slot it frees (a client gone in the middle of a large result).
pub async fn until_closed(stream: &mut Socket) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let mut discarded = 0;
    while let Ok(n) = stream.read(&mut buf).await {
        discarded += n;
        if n == 0 || discarded > CLOSE_DISCARD {
            break;
        }
    }
}

/// What `until_closed` reads at most.
const CLOSE_DISCARD: usize = 64 * 1024;

/// Runs `wait`, something only the database is awaited for (a login's wait for an instance),
/// while watching the client: one that hangs up meanwhile ends the wait at once instead of
/// holding its task, socket and `max_client_connections` place until the wait's own timeout (a
/// Lambda fleet retrying against a database still starting would pile them up). Bytes the
/// client sends meanwhile are kept in `buf`, up to `WATCH_KEEP`; past that it is no longer read.
/// `None`: the client hung up.
pub async fn unless_hung_up<T>(
    client: &mut Socket,
    buf: &mut BytesMut,
    wait: impl Future<Output = T>,
) -> Option<T> {
    let mut wait = std::pin::pin!(wait);
    // One poll function rather than a select over nested futures: on a queued borrow (a wait
    // that is over at its first wake-up) the select's machinery cost more than the watch.
    std::future::poll_fn(|cx| {
        // The wait first: when the database is there it is done at its first poll, and the
        // client is never looked at.
        if let Poll::Ready(done) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        match client.poll_hung_up(cx, buf) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl Socket {
    /// Ready once the peer has closed (or the socket failed); what it sends meanwhile is read
    /// into `buf`, up to `WATCH_KEEP` bytes, past which it is no longer read (and never ready).
    /// Readiness before a read: a read future would reserve room in `buf` at every wait.
    fn poll_hung_up(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<()> {
        while buf.len() < WATCH_KEEP {
            let ready = match self {
                Self::Plain(tcp) => tcp.poll_read_ready(cx),
                Self::Unix(unix) => unix.poll_read_ready(cx),
                Self::Tls(t) if t.plain > 0 => Poll::Ready(Ok(())),
                Self::Tls(t) => t.tcp.poll_read_ready(cx),
                Self::Memory(m) => m.poll_readable(cx).map(Ok),
            };
            match ready {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            match self.read_some(buf, WATCH_CHUNK) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }
}

/// What `unless_hung_up` keeps of a client's early bytes, and reads at a time.
const WATCH_KEEP: usize = 16 * 1024;
const WATCH_CHUNK: usize = 1024;
