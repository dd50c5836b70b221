//! A bare TCP hop for the load benches: each client gets its own server connection and bytes are
//! relayed unread, by tokio (epoll readiness, as sluice's relay), by io_uring alone (completions,
//! one `io_uring_enter` per batch), or by io_uring under tokio (`tokio-uring`: the ring's
//! descriptor in tokio's epoll, submissions flushed when the runtime parks, a task per direction:
//! what an io_uring path inside sluice's runtime would keep of the ring's gain). What the I/O path
//! alone costs per transaction, beside HAProxy's hop and sluice's pooling relay (`BENCH_HOPS=1
//! benches/load/compare.sh`). Built on its own:
//! `cargo build --release --manifest-path benches/load/hop/Cargo.toml --target-dir target/hop`.
//!
//! `hop tokio|uring|tokio-uring LISTEN_ADDR UPSTREAM_ADDR`

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addrs = match args.as_slice() {
        [_, listen, upstream] => listen.parse().and_then(|l| Ok((l, upstream.parse()?))),
        _ => {
            eprintln!("usage: hop tokio|uring|tokio-uring LISTEN_ADDR UPSTREAM_ADDR");
            return ExitCode::FAILURE;
        }
    };
    let Ok((listen, upstream)) = addrs else {
        eprintln!("hop: addresses are ip:port");
        return ExitCode::FAILURE;
    };
    let result = match args[0].as_str() {
        "tokio" => tokio_hop(listen, upstream),
        "uring" => uring::run(listen, upstream),
        "tokio-uring" => hybrid(listen, upstream),
        other => Err(io::Error::other(format!("unknown mode {other}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hop: {e}");
            ExitCode::FAILURE
        }
    }
}

/// sluice's runtime (one current-thread scheduler) with tokio's own bidirectional copy.
fn tokio_hop(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}

/// io_uring inside a tokio current-thread runtime (`tokio-uring`): each direction a task that
/// receives into an owned buffer and sends it on, the ring's completions reaching tokio through
/// its epoll.
fn hybrid(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    use std::rc::Rc;
    use tokio_uring::net::{TcpListener, TcpStream};

    async fn pump(from: Rc<TcpStream>, to: Rc<TcpStream>) {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let (got, back) = from.read(buf).await;
            buf = back;
            let n = match got {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            // The same allocation comes back, whole, after the send.
            let (sent, back) = to
                .write_all(tokio_uring::buf::BoundedBuf::slice(buf, ..n))
                .await;
            buf = back.into_inner();
            if sent.is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    }

    // Completions' task work runs when the thread enters the kernel anyway, not by interrupting
    // it, and the ring has one submitter: the setup the uring mode uses, short of deferring task
    // work to a wait on the ring, which tokio's epoll never makes.
    let mut ring = tokio_uring::uring_builder();
    ring.setup_coop_taskrun().setup_single_issuer();
    tokio_uring::builder()
        .uring_builder(&ring)
        .start(async move {
            let listener = TcpListener::bind(listen)?;
            loop {
                let (client, _) = listener.accept().await?;
                tokio_uring::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client, server) = (Rc::new(client), Rc::new(server));
                    tokio_uring::spawn(pump(client.clone(), server.clone()));
                    pump(server, client).await;
                });
            }
        })
}

/// One ring on one thread: a receive stays armed on each side of each pair; a completed
/// receive becomes a send to the other side, and a completed send re-arms the receive.
mod uring {
    use std::io;
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    use io_uring::{IoUring, opcode, squeue, types};

    const BUF: usize = 16 << 10;
    const ACCEPT: u64 = u64::MAX;
    const RECV: u64 = 0;
    const SEND: u64 = 1;
    /// Linux's MSG_NOSIGNAL: a peer gone mid-send is an error result, not a signal.
    const NO_SIGNAL: i32 = 0x4000;

    /// One direction's buffer: what its socket received and how much of it was sent on.
    struct Side {
        stream: TcpStream,
        buf: Box<[u8]>,
        len: usize,
        sent: usize,
    }

    struct Pair {
        sides: [Side; 2],
        open: bool,
        /// Operations in the ring that point into this pair's buffers.
        in_flight: u32,
    }

    fn data(pair: usize, side: usize, op: u64) -> u64 {
        (pair as u64) << 2 | (side as u64) << 1 | op
    }

    pub fn run(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
        let listener = TcpListener::bind(listen)?;
        // Task work run only when the thread waits on the ring, not by interrupting it.
        let mut ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4096)
            .or_else(|_| IoUring::new(4096))?;
        let mut pairs: Vec<Option<Pair>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut done: Vec<(u64, i32)> = Vec::new();
        let accept = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT);
        push(&mut ring, &accept)?;
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(4 | 16)) => {} // EINTR, EBUSY
                Err(e) => return Err(e),
            }
            done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for (user_data, result) in done.drain(..) {
                if user_data == ACCEPT {
                    push(&mut ring, &accept)?;
                    if result >= 0 {
                        // SAFETY: the accepted descriptor is new and owned by nothing else.
                        let client = unsafe { TcpStream::from_raw_fd(result) };
                        if let Ok(i) = open(&mut pairs, &mut free, client, upstream) {
                            for side in 0..2 {
                                arm(&mut ring, &mut pairs, i, side, RECV)?;
                            }
                        }
                    }
                    continue;
                }
                let i = (user_data >> 2) as usize;
                let side = (user_data >> 1 & 1) as usize;
                let Some(pair) = pairs[i].as_mut() else {
                    continue;
                };
                pair.in_flight -= 1;
                if !pair.open || result <= 0 {
                    close(&mut pairs, &mut free, i);
                    continue;
                }
                let s = &mut pair.sides[side];
                if user_data & 1 == RECV {
                    s.len = result as usize;
                    s.sent = 0;
                } else {
                    s.sent += result as usize;
                }
                if s.sent < s.len {
                    arm(&mut ring, &mut pairs, i, side, SEND)?;
                } else {
                    arm(&mut ring, &mut pairs, i, side, RECV)?;
                }
            }
        }
    }

    fn open(
        pairs: &mut Vec<Option<Pair>>,
        free: &mut Vec<usize>,
        client: TcpStream,
        upstream: SocketAddr,
    ) -> io::Result<usize> {
        // A blocking connect: the hop is for steady-state relaying, not connection storms.
        let server = TcpStream::connect(upstream)?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let side = |stream| Side {
            stream,
            buf: vec![0; BUF].into_boxed_slice(),
            len: 0,
            sent: 0,
        };
        let pair = Pair {
            sides: [side(client), side(server)],
            open: true,
            in_flight: 0,
        };
        Ok(match free.pop() {
            Some(i) => {
                pairs[i] = Some(pair);
                i
            }
            None => {
                pairs.push(Some(pair));
                pairs.len() - 1
            }
        })
    }

    /// Shuts both sockets so the ring's pending receives complete; the pair is freed once
    /// nothing in the ring points into it.
    fn close(pairs: &mut [Option<Pair>], free: &mut Vec<usize>, i: usize) {
        let Some(pair) = pairs[i].as_mut() else {
            return;
        };
        if pair.open {
            pair.open = false;
            for s in &pair.sides {
                let _ = s.stream.shutdown(Shutdown::Both);
            }
        }
        if pair.in_flight == 0 {
            pairs[i] = None;
            free.push(i);
        }
    }

    /// Arms side `side` of pair `i`: a receive into its buffer (`RECV`), or a send of what of it
    /// is still unsent to the other side (`SEND`).
    fn arm(
        ring: &mut IoUring,
        pairs: &mut [Option<Pair>],
        i: usize,
        side: usize,
        op: u64,
    ) -> io::Result<()> {
        let Some(pair) = pairs[i].as_mut() else {
            return Ok(());
        };
        let peer = pair.sides[1 - side].stream.as_raw_fd();
        let s = &mut pair.sides[side];
        let entry = if op == RECV {
            let fd = types::Fd(s.stream.as_raw_fd());
            opcode::Recv::new(fd, s.buf.as_mut_ptr(), BUF as u32).build()
        } else {
            let rest = &s.buf[s.sent..s.len];
            opcode::Send::new(types::Fd(peer), rest.as_ptr(), rest.len() as u32)
                .flags(NO_SIGNAL)
                .build()
        };
        pair.in_flight += 1;
        push(ring, &entry.user_data(data(i, side, op)))
    }

    fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points into lives in its pair until the pair's
            // operations have all completed (`in_flight`).
            if unsafe { ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            ring.submit()?;
        }
    }
}
