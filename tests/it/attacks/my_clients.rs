//! Hostile MySQL clients, named after the advisories that found these holes in ProxySQL and
//! PgBouncer: plaintext behind an SSL request, malformed handshake responses and
//! COM_CHANGE_USER, lengths past their packet, compression, and logins as unknown users.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sluice::auth::mysql::MysqlKeys;
use sluice::mysql::wire::{Greeting, HandshakeResponse, caps, write_packet};

use super::with_client_tls;
use crate::my_proxy::{proxy, raw_login, read_packet, send_command};
use crate::support::mariadb::{APP, MONITOR, MY_APPDB, MariaDb, cli_at};
use crate::support::sluice::{ProxyOptions, Sluice, config_for_mariadb};

const BASE: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;

/// Everything sluice sends until it closes; None when it was still waiting after 5 s.
fn until_close(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(out),
        }
    }
}

/// A connection that has read sluice's greeting.
fn greeted(port: u16) -> (TcpStream, Greeting) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let greeting = Greeting::parse(&read_packet(&mut s)).unwrap();
    (s, greeting)
}

fn response(user: &str, auth: Vec<u8>, extra: u32) -> HandshakeResponse {
    HandshakeResponse {
        caps: BASE | caps::CONNECT_WITH_DB | extra,
        max_packet: 1 << 24,
        charset: 45,
        user: user.into(),
        auth,
        database: Some(MY_APPDB.into()),
        plugin: Some("mysql_native_password".into()),
        ..HandshakeResponse::default()
    }
}

/// Is `bytes` a MySQL ERR packet (first packet's payload starts with 0xFF)?
fn is_err(bytes: &[u8]) -> bool {
    bytes.len() > 4 && bytes[4] == 0xff
}

/// PgBouncer CVE-2021-3935's MySQL twin: a plaintext HandshakeResponse pipelined behind the
/// SSL request. The bytes behind the request go to the TLS handshake, which they fail; they
/// never log anyone in.
#[test]
fn cve_2021_3935_mysql_twin_plaintext_behind_the_ssl_request_is_never_a_login() {
    let db = MariaDb::start();
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::default());
    let (yaml, _certs) = with_client_tls(&yaml);
    let proxy = Sluice::start_with_secrets(&yaml, &secrets);
    let (mut s, greeting) = greeted(proxy.port());
    assert_ne!(greeting.caps & caps::SSL, 0, "TLS is offered");
    let mut attack = Vec::new();
    let ssl = BASE | caps::SSL;
    let mut prefix = ssl.to_le_bytes().to_vec();
    prefix.extend((1u32 << 24).to_le_bytes());
    prefix.push(45);
    prefix.extend([0; 23]);
    write_packet(&mut attack, 1, &prefix);
    let auth = MysqlKeys::derive(APP.1).native(&greeting.nonce);
    response(APP.0, auth, caps::SSL).write(&mut attack, 2);
    s.write_all(&attack).unwrap();
    let answer = until_close(&mut s).expect("sluice kept waiting");
    let ok = answer.len() > 4 && answer[3] == 2 && answer[4] == 0;
    assert!(!ok, "the plaintext response logged in: {answer:?}");
    // The TLS alert, if any, is all there is: a record of type 21.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
}

/// ProxySQL CVE-2026-48773 and its GHSA batch: handshake responses that lie about their own
/// layout. Each gets an ERR packet or a close at once, and sluice serves others after all.
#[test]
fn proxysql_cve_2026_48773_malformed_handshake_responses_get_an_error_or_a_close() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let port = sluice.port();
    let head = |caps: u32| {
        let mut p = caps.to_le_bytes().to_vec();
        p.extend((1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend([0; 23]);
        p
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push((
        "user without its NUL",
        [head(BASE), b"app".to_vec()].concat(),
    ));
    cases.push((
        "auth length past the packet",
        [head(BASE), b"app\0".to_vec(), vec![200, 1, 2, 3]].concat(),
    ));
    for marker in [0xfc_u8, 0xfd, 0xfe, 0xfb, 0xff] {
        cases.push((
            "truncated lenenc auth",
            [
                head(BASE | caps::PLUGIN_AUTH_LENENC_DATA),
                b"app\0".to_vec(),
                vec![marker, 1],
            ]
            .concat(),
        ));
    }
    cases.push((
        "connect attributes past the packet",
        [
            head(BASE | caps::CONNECT_ATTRS),
            b"app\0".to_vec(),
            vec![0],
            b"mysql_native_password\0".to_vec(),
            vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ]
        .concat(),
    ));
    cases.push(("a pre-4.1 response", head(caps::SECURE_CONNECTION)));
    for (what, payload) in cases {
        let (mut s, _) = greeted(port);
        let mut out = Vec::new();
        write_packet(&mut out, 1, &payload);
        s.write_all(&out).unwrap();
        let answer = until_close(&mut s).unwrap_or_else(|| panic!("{what}: still waiting"));
        assert!(is_err(&answer), "{what}: {answer:?}");
    }
    // A first packet declaring 16 MiB that never comes, and one past the pre-login cap.
    let (mut s, _) = greeted(port);
    s.write_all(&[0xff, 0xff, 0xff, 1, 0x0d, 0xa2]).unwrap();
    assert!(
        until_close(&mut s).is_some(),
        "a 16 MiB first packet is waited for"
    );
    // Malformed COM_CHANGE_USER after a login: a user without NUL, and an auth length past it.
    for payload in [b"\x11app".to_vec(), b"\x11app\0\xc8ab".to_vec()] {
        let mut s = raw_login(port, 0);
        send_command(&mut s, &payload);
        let answer = until_close(&mut s).expect("a malformed COM_CHANGE_USER is waited on");
        assert!(is_err(&answer), "{payload:?}: {answer:?}");
    }
    assert_eq!(
        cli_at(port, APP.0, APP.1, MY_APPDB, "SELECT 7").unwrap(),
        "7"
    );
}

/// ProxySQL CVE-2026-102664 (a compressed packet's length trusted): sluice never offers
/// CLIENT_COMPRESS, and a client that claims it anyway is served uncompressed.
#[test]
fn proxysql_cve_2026_102664_compression_is_never_negotiated() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    let (_, greeting) = greeted(sluice.port());
    assert_eq!(greeting.caps & caps::COMPRESS, 0, "compression offered");
    let mut s = raw_login(sluice.port(), caps::COMPRESS);
    send_command(&mut s, b"\x03SELECT 42");
    let columns = read_packet(&mut s);
    assert_eq!(columns, [1], "an uncompressed result set header");
}

/// PgBouncer CVE-2015-6817 (an unknown user logged in as the lookup identity): a user sluice
/// does not know is refused with the password of every identity sluice does know.
#[test]
fn cve_2015_6817_an_unknown_user_never_logs_in_as_a_known_identity() {
    let db = MariaDb::start();
    let sluice = proxy(&db, 2, "mysql_native_password");
    for password in [APP.1, "", MONITOR.1] {
        for plugin in ["mysql_native_password", "caching_sha2_password"] {
            let (mut s, greeting) = greeted(sluice.port());
            let keys = MysqlKeys::derive(password);
            let auth = if plugin == "mysql_native_password" {
                keys.native(&greeting.nonce)
            } else {
                keys.sha2(&greeting.nonce)
            };
            let mut r = response("nobody", auth, 0);
            r.plugin = Some(plugin.into());
            let mut out = Vec::new();
            r.write(&mut out, 1);
            s.write_all(&out).unwrap();
            // Unknown users get the exchange a known one would (no user enumeration), so an
            // AuthSwitchRequest to the configured plugin may come first.
            let mut answer = read_packet(&mut s);
            if answer[0] == 0xfe {
                let rest = &answer[1..];
                let name_end = rest.iter().position(|b| *b == 0).unwrap();
                let salt = &rest[name_end + 1..];
                let salt = salt.strip_suffix(&[0]).unwrap_or(salt);
                let mut out = Vec::new();
                write_packet(&mut out, 3, &keys.native(salt));
                s.write_all(&out).unwrap();
                answer = read_packet(&mut s);
            }
            assert_eq!(answer[0], 0xff, "{plugin} {password:?}: {answer:?}");
            assert_eq!(u16::from_le_bytes([answer[1], answer[2]]), 1045);
            assert!(until_close(&mut s).is_some(), "then closed");
        }
    }
}
