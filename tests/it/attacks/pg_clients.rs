//! Hostile PostgreSQL clients, each named after the advisory that found the hole in another
//! pooler: plaintext behind SSLRequest, a second StartupMessage during SCRAM, lying lengths,
//! startup options that spun PgBouncer, and cancel keys guessed by the thousand.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use sluice::postgres::wire;

use super::{cpu_ticks, with_client_tls};
use crate::pg_faults::{finish_md5_login, login_raw_port, startup};
use crate::support::client::{connect, scalar};
use crate::support::fake::pg_message;
use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for};
use crate::support::tools::rss_kib;

/// What sluice sends until it closes the connection; `closed` is false when it was still
/// waiting for more after the 5 s read timeout (the hole these tests look for).
struct Answer {
    bytes: Vec<u8>,
    closed: bool,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn read_to_close(s: &mut TcpStream) -> Answer {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => {
                return Answer {
                    bytes,
                    closed: true,
                };
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Answer {
                    bytes,
                    closed: false,
                };
            }
            Err(_) => {
                return Answer {
                    bytes,
                    closed: true,
                };
            }
        }
    }
}

fn send(port: u16, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = s.write_all(bytes);
    read_to_close(&mut s)
}

fn startup_with(params: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    wire::startup_message(&mut buf, params);
    buf.to_vec()
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// AuthenticationOk: a login that went through.
const AUTH_OK: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];

/// PgBouncer CVE-2021-3935 (PostgreSQL CVE-2021-23214): a man in the middle appends a plaintext
/// StartupMessage to the client's SSLRequest. Read after the TLS switch, it would pass as the
/// client's own; sluice refuses any byte sent behind the request, with or without TLS.
#[test]
fn cve_2021_3935_plaintext_pipelined_behind_sslrequest_is_never_read() {
    let pg = PgServer::start();
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let (yaml, _certs) = with_client_tls(&yaml);
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    for injected in [startup(MD5USER.0, APPDB), b"Q\0\0\0\x0dselect 1\0".to_vec()] {
        let mut attack = SSL_REQUEST.to_vec();
        attack.extend(&injected);
        let answer = send(proxy.port(), &attack);
        assert!(answer.closed, "sluice waited for more: {:?}", answer.bytes);
        assert_ne!(answer.bytes.first(), Some(&b'S'), "TLS was started");
        assert!(answer.text().contains("08P01"), "{}", answer.text());
        assert!(
            !answer.text().contains("R\0\0\0"),
            "the injected login was read"
        );
    }
    // An SSLRequest on its own still gets TLS.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.write_all(&SSL_REQUEST).unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"S");
}

/// PgBouncer CVE-2026-107350: a StartupMessage for another user sent in the middle of SCRAM
/// must not switch the identity being authenticated.
#[test]
fn cve_2026_107350_a_second_startup_during_scram_is_a_protocol_violation() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&startup(APP.0, APPDB)).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!((head[0], head[8]), (b'R', 10), "AuthenticationSASL");
    let mut rest = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 8];
    s.read_exact(&mut rest).unwrap();
    let mut buf = BytesMut::new();
    wire::sasl_initial_response(
        &mut buf,
        "SCRAM-SHA-256",
        b"n,,n=,r=0123456789abcdefghijklmn",
    );
    s.write_all(&buf).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!((head[0], head[8]), (b'R', 11), "AuthenticationSASLContinue");
    let mut rest = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 8];
    s.read_exact(&mut rest).unwrap();
    // The switch: a StartupMessage for md5user where the SCRAM response belongs.
    s.write_all(&startup(MD5USER.0, APPDB)).unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.closed, "sluice waited for more: {}", answer.text());
    assert!(answer.text().contains("08P01"), "{}", answer.text());
    assert!(!answer.bytes.windows(9).any(|w| w == AUTH_OK), "logged in");
}

/// PgBouncer CVE-2026-6664, 6668 and 107348: lengths of 0, 3, 2^31-1, 2^31 and 2^32-1 in the
/// startup packet, in SASLInitialResponse's inner length and in every message a client sends.
/// Each connection is closed at once (not left waiting for gigabytes), memory stays flat, and
/// a session opened before never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_6664_6668_107348_lying_lengths_close_at_once() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let port = proxy.port();
    let bystander = connect(&proxy, APP, APPDB).await.unwrap();
    let rss_before = rss_kib(proxy.pid());
    let lengths: [u32; 5] = [0, 3, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
    for len in lengths {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend([0, 3, 0, 0, b'u', b's', b'e', b'r', 0]);
        let answer = send(port, &bytes);
        assert!(answer.closed, "startup length {len:#x}: still waiting");

        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend(len.to_be_bytes());
        body.extend(b"n,,n=,r=abc");
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&startup(APP.0, APPDB)).unwrap();
        s.write_all(&pg_message(b'p', &body)).unwrap();
        let answer = read_to_close(&mut s);
        assert!(answer.closed, "SASL inner length {len:#x}: still waiting");
        let text = answer.text();
        assert!(text.contains("08P01") || text.contains("28P01"), "{text}");

        for tag in *b"BCDEFHPQSXcdfp" {
            let mut s = login_raw_port(port);
            let mut bytes = vec![tag];
            bytes.extend(len.to_be_bytes());
            bytes.extend(b"abc");
            s.write_all(&bytes).unwrap();
            let answer = read_to_close(&mut s);
            assert!(
                answer.closed,
                "{} with length {len:#x}: still waiting",
                tag as char
            );
        }
    }
    // A PROXY protocol header: sluice takes none (allowed_cidrs sees the real peer), so it is a
    // startup packet of an impossible length.
    let answer = send(port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 5432\r\n");
    assert!(
        answer.closed && answer.bytes.is_empty(),
        "{}",
        answer.text()
    );
    assert_eq!(scalar(&bystander, "select 'unharmed'").await, "unharmed");
    let grown = rss_kib(proxy.pid()).saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "sluice grew by {grown} KiB");
}

/// PgBouncer CVE-2026-107349: startup `options` such as `-c=` sent its parser into a loop.
/// Each gets an answer (an authentication request or an error) or a close at once, and
/// sluice's CPU is idle afterwards.
#[test]
fn cve_2026_107349_startup_options_that_spun_pgbouncer_are_answered_at_once() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let huge = "-c a=b ".repeat(9000);
    for options in [
        "-c=", "-c", "--=", "--", "-c =x", "-c a", "-ca=", "\\", "-c a=\\", &huge,
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&startup_with(&[
            ("user", MD5USER.0),
            ("database", APPDB),
            ("options", options),
        ]));
        let mut first = [0u8; 1];
        match s.read(&mut first) {
            // A startup packet past the 10,000-byte limit is closed unread, as PostgreSQL does.
            Ok(0) => assert_eq!(options, huge, "closed without a word"),
            Ok(_) => assert!(matches!(&first, b"R" | b"E"), "{options:?}: {first:?}"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && options == huge => {}
            Err(e) => panic!(
                "options {:?}: no answer: {e}",
                &options[..options.len().min(20)]
            ),
        }
    }
    let before = cpu_ticks(proxy.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(proxy.pid()) - before;
    assert!(
        spent < 50,
        "sluice used {spent} ticks of CPU in 2 s of quiet"
    );
}

/// Cancel keys guessed by the thousand (the brute force PgBouncer's random keys answer): 10,000
/// CancelRequests with the pid sluice gave a client and wrong keys leave its query running.
#[test]
fn cancel_key_guessing_cancels_nothing() {
    let pg = PgServer::start();
    let proxy = Sluice::start_for(&pg, ProxyOptions::default());
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&startup(MD5USER.0, APPDB)).unwrap();
    let (pid, key) = md5_login_keeping_key(&mut s);
    s.write_all(&pg_message(b'Q', b"select pg_sleep(4)\0"))
        .unwrap();
    let port = proxy.port();
    let guessers: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..2500u32 {
                    let guess = key.wrapping_add(1 + t * 2500 + i);
                    let mut m = 16u32.to_be_bytes().to_vec();
                    m.extend(80_877_102u32.to_be_bytes());
                    m.extend(pid.to_be_bytes());
                    m.extend(guess.to_be_bytes());
                    if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = c.write_all(&m);
                    }
                }
            })
        })
        .collect();
    for g in guessers {
        g.join().unwrap();
    }
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(&[b'Z', 0, 0, 0, 5]) {
        s.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("SELECT 1"), "{text}");
    assert!(
        !text.contains("57014"),
        "a guessed key cancelled the query: {text}"
    );
}

/// Answers md5user's MD5 challenge and reads up to ReadyForQuery; returns the BackendKeyData.
fn md5_login_keeping_key(s: &mut TcpStream) -> (u32, u32) {
    let seen = finish_md5_login(s);
    let at = seen
        .windows(5)
        .position(|w| w == [b'K', 0, 0, 0, 12])
        .unwrap();
    let word = |i: usize| u32::from_be_bytes(seen[i..i + 4].try_into().unwrap());
    (word(at + 5), word(at + 9))
}
