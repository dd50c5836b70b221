//! TLS over loopback between sluice's own acceptor and connector, with certificates made here.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::BytesMut;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Duration;

use super::*;

/// A CA and a leaf for `names` signed by it, written as PEM files into `dir`.
pub(crate) fn write_certs(dir: &Path, names: &[&str]) -> (Tls, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sluice test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let tls = Tls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&tls.cert, leaf.pem()).unwrap();
    std::fs::write(&tls.key, key.serialize_pem()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    (tls, ca_file)
}

/// A TLS pair over loopback: (sluice's client side as accepted, sluice's server side).
async fn pair(mode: ServerTlsMode, name: &str) -> io::Result<(Socket, Socket)> {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca_file) = write_certs(dir.path(), &["localhost", "127.0.0.1"]);
    let accept = ClientTls::load(&files).unwrap();
    let connect = ServerConnector::new(&ServerTls {
        mode,
        ca_file: Some(ca_file),
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept.accept(Flavor::Mysql, tcp, &[]).await
    };
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connect
            .connect(&format!("{name}:{}", addr.port()), tcp)
            .await
    };
    let (accepted, connected) = tokio::join!(server, client);
    Ok((accepted?, connected?))
}

#[tokio::test]
async fn verify_full_checks_the_name_and_verify_ca_does_not() {
    assert!(pair(ServerTlsMode::VerifyFull, "localhost").await.is_ok());
    assert!(pair(ServerTlsMode::VerifyFull, "127.0.0.1").await.is_ok());
    assert!(pair(ServerTlsMode::VerifyFull, "db.example").await.is_err());
    assert!(pair(ServerTlsMode::VerifyCa, "db.example").await.is_ok());
    assert!(pair(ServerTlsMode::Require, "db.example").await.is_ok());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_certs(dir.path(), &["localhost"]);
    let other = tempfile::tempdir().unwrap();
    let (_, foreign_ca) = write_certs(other.path(), &["localhost"]);
    let accept = ClientTls::load(&files).unwrap();
    let connect = ServerConnector::new(&ServerTls {
        mode: ServerTlsMode::VerifyCa,
        ca_file: Some(foreign_ca),
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept.accept(Flavor::Postgres, tcp, &[]).await.is_err()
    };
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connect.connect("localhost:1", tcp).await.is_err()
    };
    assert_eq!(tokio::join!(server, client), (true, true));
}

/// Megabytes both ways at once through the pump interface on one side and the async
/// interface on the other: partial writes, queued records and decrypted-but-unread data.
#[tokio::test]
async fn bulk_data_crosses_both_interfaces_intact() {
    let (mut a, mut b) = pair(ServerTlsMode::Require, "localhost").await.unwrap();
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let pump = async move {
        let mut out = BytesMut::from(&sent[..]);
        let mut got = BytesMut::new();
        while !out.is_empty() || a.pending_output() || got.len() < sent.len() {
            let mut want = Interest::READABLE;
            if !out.is_empty() || a.pending_output() {
                want |= Interest::WRITABLE;
            }
            let ready = a.ready(want).await.unwrap();
            a.try_flush(&mut out).unwrap();
            if ready.is_readable() {
                match a.read_some(&mut got, 16 * 1024) {
                    Ok(0) => panic!("closed early"),
                    Ok(_) => {}
                    Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                }
            }
        }
        got
    };
    let echo = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < expected.len() {
            let n = b.read(&mut buf).await.unwrap();
            assert!(n > 0);
            assert_eq!(&buf[..n], &expected[total..total + n]);
            b.write_all(&buf[..n]).await.unwrap();
            total += n;
        }
        b.shutdown().await.unwrap();
        total
    };
    let (got, echoed) = tokio::join!(pump, echo);
    assert_eq!(echoed, 3_000_000);
    assert_eq!(got.len(), 3_000_000);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test]
async fn an_idle_connection_is_open_until_the_peer_closes() {
    let (mut a, mut b) = pair(ServerTlsMode::Require, "localhost").await.unwrap();
    // Let post-handshake records (TLS 1.3 tickets) arrive first.
    b.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    a.read_exact(&mut one).await.unwrap();
    assert!(a.idle_and_open(&[]));
    b.write_all(b"late").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !a.idle_and_open(&[]),
        "data while idle means the session is gone"
    );
    let (mut a, b) = pair(ServerTlsMode::Require, "localhost").await.unwrap();
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!a.idle_and_open(&[]));
}

#[test]
fn a_broken_reload_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_certs(dir.path(), &["localhost"]);
    let tls = ClientTls::load(&files).unwrap();
    let before = tls.configs.load_full();
    std::fs::write(&files.key, "not a key").unwrap();
    assert!(tls.reload(true).is_err());
    assert!(Arc::ptr_eq(&before, &tls.configs.load_full()));
    write_certs(dir.path(), &["localhost"]);
    assert!(tls.reload(false).unwrap() || tls.reload(true).unwrap());
    assert!(!Arc::ptr_eq(&before, &tls.configs.load_full()));
    let err = ClientTls::load(&Tls {
        cert: files.cert.clone(),
        key: dir.path().join("missing.key"),
    })
    .unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
}

/// A server still streaming a reply (its client gone mid-result) is not read to its end: the
/// close gives up and the connection is dropped.
#[tokio::test]
async fn a_close_stops_reading_a_server_that_keeps_sending() {
    let (ours, mut theirs) = memory::pair();
    let mut stream = Socket::Memory(ours);
    let chunk = vec![b'D'; 64 * 1024];
    for _ in 0..16 {
        theirs.write(&chunk).unwrap();
    }
    let waited = tokio::time::timeout(Duration::from_secs(5), until_closed(&mut stream)).await;
    assert!(
        waited.is_ok(),
        "read on past a megabyte, waiting for a close"
    );
    drop(theirs);
    // A server that lets go is still waited for.
    let (ours, theirs) = memory::pair();
    let mut stream = Socket::Memory(ours);
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(theirs);
    });
    let started = tokio::time::Instant::now();
    until_closed(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(40));
    closer.await.unwrap();
}

/// A wait the client only sits through (a login's wait for the database) ends as soon as the
/// client hangs up, and what the client sent meanwhile is kept; a wait already done never reads.
#[tokio::test]
async fn a_wait_ends_when_the_client_hangs_up_and_keeps_what_it_sent() {
    let (ours, mut theirs) = memory::pair();
    let mut stream = Socket::Memory(ours);
    let mut buf = BytesMut::new();
    theirs.write(b"early").unwrap();
    let done = unless_hung_up(&mut stream, &mut buf, std::future::ready(7)).await;
    assert_eq!(done, Some(7));
    assert!(buf.is_empty(), "read although the wait was done");
    let closer = async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(theirs);
    };
    let forever = tokio::time::sleep(Duration::from_secs(3600));
    let (got, ()) = tokio::join!(unless_hung_up(&mut stream, &mut buf, forever), closer);
    assert_eq!(got, None, "still waiting after the client left");
    assert_eq!(&buf[..], b"early");
}
