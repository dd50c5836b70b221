//! Fake database servers for the attack tests: a listener whose every connection is handed to a
//! script, so a test can play a malicious or broken PostgreSQL or MySQL server, and a tampering
//! relay in front of a real one that answers chosen requests with crafted bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A listener on a free loopback port; each accepted connection runs `script` on its own thread.
#[derive(Debug)]
pub struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    /// Every byte each connection's peer sent, kept by the scripts that record.
    pub received: Arc<Mutex<Vec<u8>>>,
}

impl FakeServer {
    pub fn start(
        script: impl Fn(TcpStream, &Mutex<Vec<u8>>) + Send + Sync + 'static,
    ) -> FakeServer {
        // A port from free_port, never the kernel's pick: that could be one free_port has just
        // handed to a sluice that is about to listen on it.
        let listener = (0..20)
            .find_map(|_| TcpListener::bind(("127.0.0.1", super::tools::free_port())).ok())
            .expect("a free port for a fake server");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (stop2, accepted2, received2) = (stop.clone(), accepted.clone(), received.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                let (script, received) = (script.clone(), received2.clone());
                thread::spawn(move || script(conn, &received));
            }
        });
        FakeServer {
            port,
            stop,
            accepted,
            received,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// What the scripts recorded, lossily as text.
    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads a PostgreSQL client's startup packet, answering `N` to an SSLRequest first; None when
/// the peer closed or sent a CancelRequest.
pub fn pg_startup(s: &mut TcpStream) -> Option<Vec<u8>> {
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).checked_sub(4)?];
        s.read_exact(&mut body).ok()?;
        match body.get(..4) {
            Some([0x04, 0xd2, 0x16, 0x2f]) => s.write_all(b"N").ok()?,
            Some([0x04, 0xd2, 0x16, 0x2e]) => return None,
            _ => return Some(body),
        }
    }
}

/// Reads one tagged PostgreSQL message: (tag, body).
pub fn pg_read(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.checked_sub(4)?];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// A tagged PostgreSQL message.
pub fn pg_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    m.extend(body);
    m
}

/// An Authentication message of `code` with `data`.
pub fn pg_auth(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend(data);
    pg_message(b'R', &body)
}

/// What a tampering relay does with the server's answer to a request that matched.
#[derive(Debug, Clone)]
pub enum Tamper {
    /// Sends these bytes instead of the answer, then keeps the connection open, discarding.
    Replace(Vec<u8>),
    /// Sends these bytes instead of the answer, then closes both sides.
    ReplaceAndClose(Vec<u8>),
    /// Passes the answer on, then sends these bytes after `delay`, unasked.
    Append(Vec<u8>, Duration),
}

/// A relay to the real server at `upstream` that passes everything on, except that when a
/// chunk from sluice contains a rule's marker, the server's answer is handled as its `Tamper`
/// says.
pub fn tampering_relay(upstream: u16, rules: Vec<(&'static [u8], Tamper)>) -> FakeServer {
    let rules = Arc::new(rules);
    FakeServer::start(move |client, _| {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        // Which rule the request on its way matched, plus one; 0 for none.
        let tripped = Arc::new(AtomicUsize::new(0));
        let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (flag, matcher) = (tripped.clone(), rules.clone());
        let up = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = c_read.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Set before the request goes on, so the answer cannot overtake the flag.
                let chunk = &buf[..n];
                if let Some(i) = matcher
                    .iter()
                    .position(|(m, _)| chunk.windows(m.len()).any(|w| w == *m))
                {
                    flag.store(i + 1, Ordering::SeqCst);
                }
                if s_write.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = s_write.shutdown(Shutdown::Write);
        });
        let (mut s_read, mut c_write) = (server, client);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = s_read.read(&mut buf) {
            if n == 0 {
                break;
            }
            let rule = tripped.swap(0, Ordering::SeqCst);
            if rule == 0 {
                if c_write.write_all(&buf[..n]).is_err() {
                    break;
                }
                continue;
            }
            match &rules[rule - 1].1 {
                Tamper::Replace(bytes) => {
                    let _ = c_write.write_all(bytes);
                    while matches!(s_read.read(&mut buf), Ok(n) if n > 0) {}
                    break;
                }
                Tamper::ReplaceAndClose(bytes) => {
                    let _ = c_write.write_all(bytes);
                    let _ = c_write.shutdown(Shutdown::Both);
                    let _ = s_read.shutdown(Shutdown::Both);
                    break;
                }
                Tamper::Append(bytes, delay) => {
                    let _ = c_write.write_all(&buf[..n]);
                    thread::sleep(*delay);
                    let _ = c_write.write_all(bytes);
                }
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = up.join();
    })
}

/// What a chaos relay does to the bytes it passes while `on`: cuts them into `segment`-byte
/// writes with `delay` before each (slow drips, one-byte segments). While `hold`, nothing
/// passes either way and both sockets stay open, as in a network partition that TCP rides out.
#[derive(Debug, Default)]
pub struct Chaos {
    pub on: AtomicBool,
    pub hold: AtomicBool,
    pub segment: usize,
    pub delay: Duration,
}

/// A relay to the real server at `upstream` that passes every byte, both ways, as `chaos` says.
pub fn chaos_relay(upstream: u16, chaos: Arc<Chaos>) -> FakeServer {
    FakeServer::start(move |client, _| {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let pump = |mut from: TcpStream, mut to: TcpStream, chaos: Arc<Chaos>| {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let step = if chaos.on.load(Ordering::SeqCst) {
                    chaos.segment.max(1)
                } else {
                    n
                };
                for piece in buf[..n].chunks(step) {
                    while chaos.hold.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    if step < n || chaos.on.load(Ordering::SeqCst) {
                        thread::sleep(chaos.delay);
                    }
                    if to.write_all(piece).is_err() {
                        return;
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        };
        let (c2, s2, ch) = (
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            chaos.clone(),
        );
        let up = thread::spawn(move || pump(c2, s2, ch));
        pump(server, client, chaos.clone());
        let _ = up.join();
    })
}
