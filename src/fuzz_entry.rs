//! The fuzz targets' entry points: bytes in, sluice's own parsers and session bookkeeping run on
//! them, invariants checked (not just "no panic"). `fuzz/fuzz_targets/*.rs` call these under
//! cargo-fuzz; the unit tests replay every file of `fuzz/corpus/<target>/` through them, so the
//! corpora are regression tests without any fuzzing tool.

use bytes::BytesMut;

use crate::mysql::wire as my;
use crate::postgres::pipeline::Pipeline;
use crate::postgres::statements::{SchemaEpoch, ServerStatements, StatementRegistry};
use crate::postgres::wire as pg;

mod mysql_relay;
mod pg_relay;
mod script;
mod world;

pub use mysql_relay::mysql_relay;
pub use pg_relay::pg_relay;

/// What sluice may add on its own per message it handles (its replay and read-back queries,
/// a renamed statement name, an error text): output beyond this is unbounded buffering.
const SLACK_PER_MESSAGE: usize = 4096;

/// An entry point: one input, checked.
pub type Entry = fn(&[u8]);

/// The target names, each with its entry function; the corpus of each is `fuzz/corpus/<name>`.
pub const TARGETS: [(&str, Entry); 12] = [
    ("pg_startup", pg_startup),
    ("pg_session", pg_session),
    ("mysql_packets", mysql_packets),
    ("mysql_reply", mysql_reply),
    ("sql_scanners", sql_scanners),
    ("scram_server", scram_server),
    ("config", config),
    ("scram_client", scram_client),
    ("mysql_auth", mysql_auth),
    ("auth_tokens", auth_tokens),
    ("pg_relay", pg_relay),
    ("mysql_relay", mysql_relay),
];

/// `data` split at its first NUL.
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// A client's first bytes: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage, as the
/// login reads them, then its first messages.
pub fn pg_startup(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let before = buf.len();
    if let Ok(Some(_)) = pg::read_startup(&mut buf) {
        assert!(
            buf.len() < before,
            "a startup packet was read without consuming it"
        );
    }
    for frame in pg::Frames::new(&buf, 1 << 20) {
        let Ok((at, f)) = frame else { break };
        assert!(at + f.len <= buf.len(), "a frame reaches past its input");
    }
}

/// A session's pipeline driven by both sides: each record is a direction byte (even: the
/// client, odd: the server) and one whole frame. The bookkeeping must answer, rename or forward
/// without panicking and without buffering more than it was given.
pub fn pg_session(data: &[u8]) {
    let schema = std::sync::Arc::new(SchemaEpoch::default());
    let registry = StatementRegistry::new("_sluice_f_".into(), schema);
    let mut server = ServerStatements::default();
    let mut pipeline = Pipeline::new(1);
    let (mut sout, mut cout) = (BytesMut::new(), BytesMut::new());
    let mut rest = data;
    let mut handled = 0usize;
    while let Some((&direction, more)) = rest.split_first() {
        let Ok(Some(f)) = pg::next_frame(more, 1 << 20) else {
            break;
        };
        let frame = &more[..f.len];
        rest = &more[f.len..];
        handled += 1;
        if direction % 2 == 0 {
            let args = (&mut server, &registry, "_sluice_f_");
            if pipeline
                .client_message(frame, args.0, args.1, args.2, &mut sout, &mut cout)
                .is_err()
            {
                break; // the session ends with 08P01, as it does in the relay
            }
        } else {
            pipeline.server_message(
                frame,
                &mut server,
                &registry,
                "_sluice_f_",
                &mut sout,
                &mut cout,
            );
        }
        let bound = data.len() + handled * SLACK_PER_MESSAGE;
        assert!(sout.len() + cout.len() <= bound, "unbounded output");
        if pipeline.releasable() {
            assert_eq!(
                pipeline.status(),
                pg::status::IDLE,
                "released inside a transaction"
            );
            assert!(pipeline.pinned().is_none(), "released while pinned");
        }
    }
}

/// What a MySQL client or server sends at login: handshake response, greeting, ERR, auth switch.
pub fn mysql_packets(data: &[u8]) {
    let _ = my::HandshakeResponse::parse(data);
    let _ = my::Greeting::parse(data);
    let _ = my::parse_err(data);
    let _ = my::parse_ok(data);
    let _ = my::parse_auth_switch(data);
}

/// A server's reply to a command, walked packet by packet as the relay walks it: the first byte
/// picks the command's kind and DEPRECATE_EOF, the rest are packets.
pub fn mysql_reply(data: &[u8]) {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let kind = match head % 5 {
        0 => my::ReplyKind::Query,
        1 => my::ReplyKind::Prepare,
        2 => my::ReplyKind::FieldList,
        3 => my::ReplyKind::Fetch,
        _ => my::ReplyKind::Single,
    };
    let mut reply = my::Reply::new(kind, head & 0x80 != 0);
    while let Some(p) = my::next_packet(rest) {
        if rest.len() < p.len || reply.done() {
            break;
        }
        let payload = &rest[my::HEADER_LEN..p.len];
        if reply.on_packet(payload, payload.len()).is_err() {
            break; // the relay ends that server connection
        }
        rest = &rest[p.len..];
    }
}

/// The SQL scanners of both engines (pins, tracked state, read-only detection): total on any
/// bytes, including invalid UTF-8, unterminated quotes and comments.
pub fn sql_scanners(data: &[u8]) {
    let _ = crate::postgres::pinning::effects(data);
    let _ = crate::postgres::pinning::pin_reason(data);
    let _ = crate::postgres::pinning::deallocate(data);
    let _ = crate::postgres::pinning::discard_all(data);
    let _ = crate::postgres::settings::changes(data);
    let _ = crate::postgres::relay::transaction_access(data);
    for escapes in [true, false] {
        let fx = crate::mysql::pinning::effects_in(data, escapes);
        let _ = fx.pins().count();
    }
    scan_memo(data);
}

/// The scan memo's premise (`session::memo`): a text with other numbers scans alike, for
/// Postgres unless it holds a `$`, for MySQL when it does nothing; and the memo finds it.
fn scan_memo(data: &[u8]) {
    use crate::mysql::pinning::{Effects, effects_in};
    use crate::postgres::pinning::effects;
    use crate::session::memo::{MAX_BYTES, Memos, renumbered_all};
    let other = renumbered_all(data);
    if !data.contains(&b'$') {
        assert_eq!(
            effects(data),
            effects(&other),
            "the Postgres scan moved with numbers"
        );
    }
    for escapes in [true, false] {
        if effects_in(data, escapes) == Effects::default() {
            assert_eq!(effects_in(&other, escapes), Effects::default(), "MySQL");
        }
    }
    let mut memos = Memos::default();
    memos.keep(data, (), false);
    assert!(
        data.len() > MAX_BYTES || memos.recall(&other, |_| true).is_some(),
        "the memo did not find its own text renumbered"
    );
}

/// sluice as SCRAM-SHA-256 server: a client-first and a client-final message, split at the
/// first NUL. Only the right proof may pass.
pub fn scram_server(data: &[u8]) {
    use crate::auth::scram::{ScramExchange, ScramKeys};
    let (first, last) = split_nul(data);
    let Ok(mut exchange) = ScramExchange::start(first) else {
        return;
    };
    let keys = ScramKeys::for_fuzzing("pencil");
    let _ = exchange.server_first(&keys);
    assert!(
        exchange.finish(&keys, last).is_err(),
        "a proof made without the password passed"
    );
}

/// sluice as SCRAM-SHA-256 client of a server: a server-first and a server-final message,
/// split at the first NUL. The count asked for is bounded before anything is derived, and no
/// server-final made without the password passes.
pub fn scram_client(data: &[u8]) {
    use crate::auth::scram::{MAX_ITERATIONS, ScramClient};
    let (first, last) = split_nul(data);
    let mut client = ScramClient::for_fuzzing();
    let Ok(server_first) = client.read_server_first(first) else {
        return;
    };
    assert!(
        server_first.iterations() <= MAX_ITERATIONS,
        "an unbounded derivation"
    );
    // The salted password as if derived: the exchange, not PBKDF2, is what is fuzzed.
    let _ = client.answer(&server_first, &[7; 32]);
    assert!(
        client.finish(last).is_err(),
        "a server signature made without the password passed"
    );
}

/// The MySQL password exchanges sluice checks: a 20-byte nonce, then a client's
/// mysql_native_password or caching_sha2_password response; and an AuthSwitchRequest as a
/// server sends it. Only the right scramble may pass.
pub fn mysql_auth(data: &[u8]) {
    use crate::auth::mysql::MysqlKeys;
    let _ = my::parse_auth_switch(data);
    let Some((nonce, response)) = data.split_at_checked(20) else {
        return;
    };
    let keys = MysqlKeys::derive("pencil");
    if response != keys.native(nonce).as_slice() {
        assert!(
            !keys.verify_native(nonce, response),
            "a wrong native scramble passed"
        );
    }
    if response != keys.sha2(nonce).as_slice() {
        assert!(
            !keys.verify_sha2(nonce, response),
            "a wrong sha2 scramble passed"
        );
    }
}

/// Token logins: an RDS IAM auth token and a JWT from any text (split at the first NUL). No
/// token a fuzzer makes carries a valid signature, so every one is refused, without a panic.
pub fn auth_tokens(data: &[u8]) {
    use crate::auth::iam::IamVerifier;
    use crate::auth::jwt::JwtVerifier;
    use crate::config::{IamConfig, IamCredential, IamGrant, JwtConfig};
    let (iam, jwt) = split_nul(data);
    let iam_config = IamConfig {
        region: "us-east-1".into(),
        endpoint_host: "db.example.internal".into(),
        credentials: vec![IamCredential {
            access_key_id: "AKIAFUZZ".into(),
            secret_access_key_env: "FUZZ_SECRET".into(),
            principal: "arn:aws:iam::123456789012:role/app".into(),
        }],
        policy: vec![IamGrant {
            principal: "*".into(),
            db_users: vec!["*".into()],
        }],
    };
    let secret = |_: &str| Some("fuzz-secret-key".to_owned());
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    if let (Ok(token), Ok(v)) = (
        std::str::from_utf8(iam),
        IamVerifier::with_env(&iam_config, secret),
    ) {
        assert!(
            v.verify(token, "app", 5432, now).is_err(),
            "a forged IAM token passed"
        );
    }
    let jwt_config = JwtConfig {
        jwks_file: "/nonexistent/jwks.json".into(),
        issuer: "https://issuer.example".into(),
        audience: "sluice".into(),
        username_claim: "sub".into(),
        hs256_secret_env: Some("FUZZ_HS256".into()),
    };
    let keys = jsonwebtoken::jwk::JwkSet { keys: Vec::new() };
    if let (Ok(token), Ok(v)) = (
        std::str::from_utf8(jwt),
        JwtVerifier::with_env(&jwt_config, Some(keys), secret),
    ) {
        assert!(v.verify(token, "app").is_err(), "a forged JWT passed");
    }
}

/// The config loader on any text: every problem reported with a path, never a panic, and a
/// config it accepts is one it accepts again (validation does not depend on the order it ran).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent");
    match crate::config::parse(text, base) {
        Ok(_) => assert!(
            crate::config::parse(text, base).is_ok(),
            "accepted once only"
        ),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a problem");
            assert!(
                errors.0.iter().all(|p| !p.path.is_empty()),
                "a problem without a path"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every corpus file of every target, through its entry point: what the fuzzers found and
    /// kept stays a regression test.
    #[test]
    fn every_corpus_file_replays() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, run) in TARGETS {
            let dir = root.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            assert!(!files.is_empty(), "{name}: the corpus is empty");
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let replay = std::panic::catch_unwind(|| run(&data));
                assert!(replay.is_ok(), "{name}: {} fails", file.display());
            }
        }
    }
}
