//! The pipeline against byte-level scripts of client and server messages.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use super::*;

const PREFIX: &str = "_sluice_t_";

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(stmt: &str) -> Vec<u8> {
    frame(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

fn describe_stmt(stmt: &str) -> Vec<u8> {
    frame(b'D', format!("S{stmt}\0").as_bytes())
}

fn close_stmt(stmt: &str) -> Vec<u8> {
    frame(b'C', format!("S{stmt}\0").as_bytes())
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn ready(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

fn error(code: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    wire::error_response(&mut b, "ERROR", code, "boom");
    b.to_vec()
}

/// Messages in a buffer, as (tag, statement-or-portal name) for easy comparison.
fn tags(buf: &[u8], frontend: bool) -> Vec<(char, String)> {
    let mut out = Vec::new();
    for f in wire::Frames::new(buf, 1 << 20) {
        let (at, f) = f.unwrap();
        let body = f.body(&buf[at..]);
        let name = match f.tag {
            _ if !frontend => String::new(),
            b'P' => String::from_utf8_lossy(Reader::new(body, "").cstr().unwrap()).into_owned(),
            b'B' => {
                let mut r = Reader::new(body, "");
                r.cstr().unwrap();
                String::from_utf8_lossy(r.cstr().unwrap()).into_owned()
            }
            b'D' | b'C' if !body.is_empty() && body[0] == b'S' => {
                String::from_utf8_lossy(&body[1..body.len() - 1]).into_owned()
            }
            _ => String::new(),
        };
        out.push((f.tag as char, name));
    }
    out
}

struct Rig {
    p: Pipeline,
    registry: StatementRegistry,
    sout: BytesMut,
    cout: BytesMut,
}

impl Rig {
    fn new(session: u64) -> Self {
        Self {
            p: Pipeline::new(session),
            registry: StatementRegistry::new(PREFIX.into(), Default::default()),
            sout: BytesMut::new(),
            cout: BytesMut::new(),
        }
    }

    fn client(&mut self, server: &mut ServerStatements, msgs: &[Vec<u8>]) {
        for m in msgs {
            self.p
                .client_message(
                    m,
                    server,
                    &self.registry,
                    PREFIX,
                    &mut self.sout,
                    &mut self.cout,
                )
                .unwrap();
        }
    }

    /// Feeds server messages; returns those forwarded to the client (plus synthetic ones).
    fn server(&mut self, server: &mut ServerStatements, msgs: &[Vec<u8>]) -> Vec<(char, String)> {
        for m in msgs {
            self.p.server_message(
                m,
                server,
                &self.registry,
                PREFIX,
                &mut self.sout,
                &mut self.cout,
            );
        }
        let out = tags(&self.cout, false);
        self.cout.clear();
        out
    }

    fn sent(&mut self) -> Vec<(char, String)> {
        let out = tags(&self.sout, true);
        self.sout.clear();
        out
    }
}

fn s(tag: char, name: &str) -> (char, String) {
    (tag, name.to_owned())
}

#[test]
fn named_statement_is_renamed_and_reprepared_on_another_connection() {
    let mut rig = Rig::new(1);
    let (mut a, mut b) = (ServerStatements::default(), ServerStatements::default());
    rig.client(
        &mut a,
        &[parse("q", "select 1"), bind("q"), execute(), sync()],
    );
    assert_eq!(
        rig.sent(),
        vec![
            s('P', "_sluice_t_1"),
            s('B', "_sluice_t_1"),
            s('E', ""),
            s('S', "")
        ]
    );
    let got = rig.server(
        &mut a,
        &[
            frame(b'1', b""),
            frame(b'2', b""),
            frame(b'C', b"SELECT 1\0"),
            ready(b'I'),
        ],
    );
    assert_eq!(got.len(), 4);
    assert!(rig.p.releasable());

    // Next transaction lands on connection b, which never saw the statement.
    rig.client(&mut b, &[bind("q"), execute(), sync()]);
    assert_eq!(
        rig.sent(),
        vec![
            s('P', "_sluice_t_1"),
            s('B', "_sluice_t_1"),
            s('E', ""),
            s('S', "")
        ]
    );
    let got = rig.server(
        &mut b,
        &[
            frame(b'1', b""),
            frame(b'2', b""),
            frame(b'C', b"SELECT 1\0"),
            ready(b'I'),
        ],
    );
    assert_eq!(
        got,
        vec![s('2', ""), s('C', ""), s('Z', "")],
        "the injected ParseComplete is swallowed"
    );
}

/// A parked session keeps its pipeline only when it holds something: a simple query leaves
/// nothing behind, a named statement must survive the park.
#[test]
fn a_pipeline_is_pristine_until_it_holds_a_statement() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    assert!(rig.p.pristine());
    rig.client(&mut a, &[frame(b'Q', b"select 1\0")]);
    rig.sent();
    assert!(!rig.p.pristine(), "a request in flight");
    rig.server(&mut a, &[frame(b'C', b"SELECT 1\0"), ready(b'I')]);
    assert!(rig.p.pristine(), "answered, nothing kept");
    rig.client(&mut a, &[parse("q", "select 1"), sync()]);
    rig.sent();
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    assert!(rig.p.releasable());
    assert!(!rig.p.pristine(), "the named statement is kept");
}

#[test]
fn describe_without_a_replayed_parse_supavisor_1174() {
    let mut rig = Rig::new(1);
    let (mut a, mut b) = (ServerStatements::default(), ServerStatements::default());
    rig.client(&mut a, &[parse("s1", "select $1"), sync()]);
    rig.sent();
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    rig.client(&mut b, &[describe_stmt("s1"), sync()]);
    assert_eq!(
        rig.sent(),
        vec![s('P', "_sluice_t_1"), s('D', "_sluice_t_1"), s('S', "")]
    );
    let got = rig.server(
        &mut b,
        &[
            frame(b'1', b""),
            frame(b't', b"\0\0"),
            frame(b'n', b""),
            ready(b'I'),
        ],
    );
    assert_eq!(got, vec![s('t', ""), s('n', ""), s('Z', "")]);
}

#[test]
fn failed_parse_leaves_no_stale_mapping_supavisor_1175() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    rig.client(&mut a, &[parse("bad", "selec oops"), sync()]);
    rig.sent();
    let got = rig.server(&mut a, &[error("42601"), ready(b'I')]);
    assert_eq!(got, vec![s('E', ""), s('Z', "")]);
    assert_eq!(rig.p.statements_len(), 0);
    assert!(a.is_empty(), "the server never prepared it");
    // The same name can be prepared again, correctly this time.
    rig.client(&mut a, &[parse("bad", "select 1"), sync()]);
    assert_eq!(rig.sent(), vec![s('P', "_sluice_t_2"), s('S', "")]);
}

#[test]
fn second_session_reuses_the_servers_statement_with_a_synthetic_parse_complete() {
    let mut a = ServerStatements::default();
    let mut first = Rig::new(1);
    first.client(&mut a, &[parse("q", "select 1"), sync()]);
    first.sent();
    first.server(&mut a, &[frame(b'1', b""), ready(b'I')]);

    let mut second = Rig {
        registry: first.registry,
        ..Rig::new(2)
    };
    second.client(
        &mut a,
        &[
            parse("other_name", "select 1"),
            bind("other_name"),
            execute(),
            sync(),
        ],
    );
    assert_eq!(
        second.sent(),
        vec![s('B', "_sluice_t_1"), s('E', ""), s('S', "")]
    );
    assert_eq!(
        tags(&second.cout, false),
        vec![s('1', "")],
        "answered at once, nothing in flight"
    );
    second.cout.clear();
    let got = second.server(
        &mut a,
        &[frame(b'2', b""), frame(b'C', b"SELECT 1\0"), ready(b'I')],
    );
    assert_eq!(got, vec![s('2', ""), s('C', ""), s('Z', "")]);
}

#[test]
fn synthetic_responses_keep_their_place_in_a_pipeline() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    rig.client(&mut a, &[parse("q", "select 1"), sync()]);
    rig.sent();
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    // Pipelined: Bind/Execute/Sync, then Close q (synthetic), Sync.
    rig.client(
        &mut a,
        &[bind("q"), execute(), sync(), close_stmt("q"), sync()],
    );
    assert!(
        rig.cout.is_empty(),
        "CloseComplete must wait for the first Sync's responses"
    );
    assert_eq!(
        rig.sent(),
        vec![s('B', "_sluice_t_1"), s('E', ""), s('S', ""), s('S', "")]
    );
    let got = rig.server(
        &mut a,
        &[frame(b'2', b""), frame(b'C', b"SELECT 1\0"), ready(b'I')],
    );
    assert_eq!(got, vec![s('2', ""), s('C', ""), s('Z', ""), s('3', "")]);
    assert!(!rig.p.releasable(), "one Sync still in flight");
    assert_eq!(rig.server(&mut a, &[ready(b'I')]), vec![s('Z', "")]);
    assert!(rig.p.releasable());
    // Name reuse after Close with another text.
    rig.client(&mut a, &[parse("q", "select 2"), sync()]);
    assert_eq!(rig.sent(), vec![s('P', "_sluice_t_2"), s('S', "")]);
}

#[test]
fn error_skips_to_sync_and_drops_the_skipped_synthetic_parse() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    rig.client(&mut a, &[parse("q", "select 1"), sync()]);
    rig.sent();
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    // Execute fails; the following Parse of "r" (same text, answered by sluice) never happened.
    rig.client(
        &mut a,
        &[bind("q"), execute(), parse("r", "select 1"), sync()],
    );
    let got = rig.server(&mut a, &[frame(b'2', b""), error("22012"), ready(b'E')]);
    assert_eq!(got, vec![s('2', ""), s('E', ""), s('Z', "")]);
    assert_eq!(rig.p.statements_len(), 1, "r was forgotten, q kept");
    assert!(
        !rig.p.releasable(),
        "failed transaction keeps the connection"
    );
}

#[test]
fn another_sessions_unnamed_statement_is_never_bound() {
    let mut a = ServerStatements::default();
    let mut one = Rig::new(1);
    one.client(&mut a, &[parse("", "select secret from t"), sync()]);
    one.sent();
    let mut two = Rig::new(2);
    two.client(&mut a, &[bind(""), execute(), sync()]);
    assert_eq!(
        two.sent(),
        vec![
            s('B', std::str::from_utf8(MISSING_UNNAMED).unwrap()),
            s('E', ""),
            s('S', "")
        ]
    );
    one.client(&mut a, &[bind(""), sync()]);
    assert_eq!(one.sent(), vec![s('B', ""), s('S', "")]);
}

#[test]
fn internal_query_is_swallowed_and_its_error_reported() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    rig.p
        .internal_query(Purpose::Replay, "SET x = 1", &mut rig.sout);
    rig.client(&mut a, &[frame(b'Q', b"select 1\0")]);
    let got = rig.server(
        &mut a,
        &[
            error("42704"),
            ready(b'I'),
            frame(b'T', b"\0\0"),
            frame(b'C', b"SELECT 1\0"),
            ready(b'I'),
        ],
    );
    assert_eq!(got, vec![s('T', ""), s('C', ""), s('Z', "")]);
    assert_eq!(rig.p.take_internal_error().as_deref(), Some("boom (42704)"));
}

#[test]
fn parse_of_a_confirmed_statement_is_answered_without_a_server() {
    let mut a = ServerStatements::default();
    let mut first = Rig::new(1);
    let batch: Vec<u8> = [parse("q", "select 1"), sync()].concat();
    assert_eq!(
        first
            .p
            .answer_locally(&batch, &first.registry, &mut first.cout),
        0,
        "never seen"
    );
    first.client(&mut a, &[parse("q", "select 1"), sync()]);
    first.sent();
    first.server(&mut a, &[frame(b'1', b""), ready(b'I')]);

    let mut second = Rig {
        registry: first.registry,
        ..Rig::new(2)
    };
    let n = second
        .p
        .answer_locally(&batch, &second.registry, &mut second.cout);
    assert_eq!(n, batch.len());
    assert_eq!(tags(&second.cout, false), vec![s('1', ""), s('Z', "")]);
    // The session can now bind it on any connection: it is prepared there first.
    let mut b = ServerStatements::default();
    second.client(&mut b, &[bind("q"), execute(), sync()]);
    assert_eq!(
        second.sent(),
        vec![
            s('P', "_sluice_t_1"),
            s('B', "_sluice_t_1"),
            s('E', ""),
            s('S', "")
        ]
    );

    // A failed Parse is never confirmed; a batch with anything else needs a server.
    let mut third = Rig {
        registry: second.registry,
        ..Rig::new(3)
    };
    third.client(&mut a, &[parse("bad", "selec 1"), sync()]);
    third.server(&mut a, &[error("42601"), ready(b'I')]);
    let bad: Vec<u8> = [parse("x", "selec 1"), sync()].concat();
    assert_eq!(
        third
            .p
            .answer_locally(&bad, &third.registry, &mut third.cout),
        0
    );
    let mixed: Vec<u8> = [parse("y", "select 1"), bind("y"), sync()].concat();
    assert_eq!(
        third
            .p
            .answer_locally(&mixed, &third.registry, &mut third.cout),
        0
    );
}

#[test]
fn sql_deallocate_of_a_remapped_statement_is_answered_in_order() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    rig.client(&mut a, &[parse("_pg3_0", "select 1"), sync()]);
    rig.sent();
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    // In a transaction: BEGIN goes to the server, DEALLOCATE is answered after its reply.
    rig.client(
        &mut a,
        &[frame(b'Q', b"begin\0"), frame(b'Q', b"DEALLOCATE _pg3_0\0")],
    );
    assert_eq!(rig.sent(), vec![s('Q', "")]);
    assert!(rig.cout.is_empty());
    let got = rig.server(&mut a, &[frame(b'C', b"BEGIN\0"), ready(b'T')]);
    assert_eq!(got, vec![s('C', ""), s('Z', ""), s('C', ""), s('Z', "")]);
    assert_eq!(&rig.cout[..], b"", "all flushed");
    assert_eq!(rig.p.statements_len(), 0);
    // Unknown names go to the server, which answers 26000 as it should.
    rig.client(&mut a, &[frame(b'Q', b"DEALLOCATE nope\0")]);
    assert_eq!(rig.sent(), vec![s('Q', "")]);
}

#[test]
fn a_confirmed_statement_that_pins_is_never_answered_locally() {
    let mut a = ServerStatements::default();
    let mut first = Rig::new(1);
    first.client(&mut a, &[parse("s", "listen x"), sync()]);
    first.sent();
    first.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    let mut second = Rig {
        registry: first.registry,
        ..Rig::new(2)
    };
    let batch: Vec<u8> = [parse("s", "listen x"), sync()].concat();
    assert_eq!(
        second
            .p
            .answer_locally(&batch, &second.registry, &mut second.cout),
        0
    );
}

#[test]
fn names_with_sluices_prefix_never_reach_the_server_unmapped() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    let missing = std::str::from_utf8(MISSING_UNNAMED).unwrap();
    rig.client(
        &mut a,
        &[
            bind("_sluice_1234abcd_1"),
            close_stmt("_sluice_1234abcd_1"),
            sync(),
        ],
    );
    assert_eq!(
        rig.sent(),
        vec![s('B', missing), s('C', missing), s('S', "")]
    );
    rig.client(&mut a, &[bind("mine"), sync()]);
    assert_eq!(
        rig.sent(),
        vec![s('B', "mine"), s('S', "")],
        "other names pass: SQL PREPARE"
    );
    rig.client(&mut a, &[frame(b'Q', b"DEALLOCATE _sluice_1234abcd_1\0")]);
    let sent = rig.sout.clone();
    rig.sent();
    assert!(String::from_utf8_lossy(&sent).contains(missing));
}

#[test]
fn an_eviction_close_skipped_after_an_error_is_undone() {
    let mut a = ServerStatements::default();
    let mut rig = Rig::new(1);
    let cap = crate::postgres::statements::SERVER_STATEMENT_CAPACITY;
    for i in 0..cap {
        a.insert(10_000 + i as u64);
    }
    // Execute fails, then a new statement needs room: sluice queues Close(oldest) + Parse.
    rig.client(
        &mut a,
        &[frame(b'E', b"\0\0\0\0\0"), parse("n", "select 42"), sync()],
    );
    assert!(!a.touch(10_000), "evicted when the Close was queued");
    rig.server(&mut a, &[error("23505"), ready(b'I')]);
    assert!(
        a.touch(10_000),
        "the server skipped the Close: still prepared there"
    );
    assert_eq!(rig.p.statements_len(), 0, "and the Parse never happened");
}

#[test]
fn a_remembered_scan_answers_only_for_a_text_that_scans_alike() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    let mut pin_of = |rig: &mut Rig, message: Vec<u8>| {
        let pin = rig
            .p
            .client_message(
                &message,
                &mut a,
                &rig.registry,
                PREFIX,
                &mut rig.sout,
                &mut rig.cout,
            )
            .unwrap();
        rig.sent();
        pin
    };
    let query = |sql: &str| frame(b'Q', format!("{sql}\0").as_bytes());
    assert_eq!(pin_of(&mut rig, parse("", "select 1")), None);
    assert_eq!(pin_of(&mut rig, parse("", "select 1")), None);
    assert_eq!(
        pin_of(&mut rig, parse("", "select pg_advisory_lock(1)")),
        Some(PinReason::AdvisoryLock),
        "a new text is scanned, not answered from the last one"
    );
    // Simple queries with only their numbers changed share a scan (one without a `$`); the
    // session above is pinned now, so a second one shows the pin.
    let mut other = Rig::new(2);
    assert_eq!(pin_of(&mut other, query("select f(12)")), None);
    assert_eq!(pin_of(&mut other, query("select f(34)")), None);
    assert_eq!(
        pin_of(&mut other, query("select pg_advisory_lock(34)")),
        Some(PinReason::AdvisoryLock)
    );
    let remembered = |rig: &Rig, parse: bool| {
        let scans = rig
            .p
            .scans
            .as_ref()
            .expect("a second statement was remembered");
        if parse { &scans.parse } else { &scans.query }.remembered()
    };
    assert_eq!(remembered(&rig, true), 2);
    assert_eq!(remembered(&other, false), 2);
    rig.p.forget_scan();
    assert!(rig.p.scans.is_none(), "a parked session keeps no copy");
}

mod listen;
mod rows;
mod stale;
mod tracking;
