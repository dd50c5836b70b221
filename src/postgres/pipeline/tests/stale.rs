//! Statements a schema change made stale: retired from the shared cache, answered as the
//! session's own statement would answer, and requests sent again where the client cannot tell.

use super::*;

/// The ErrorResponse of RevalidateCachedQuery, as PostgreSQL 15 sends it.
fn stale() -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "0A000"),
        (b'M', "cached plan must not change result type"),
        (b'R', "RevalidateCachedQuery"),
    ] {
        body.push(k);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(b'E', &body)
}

fn describe_portal() -> Vec<u8> {
    frame(b'D', b"P\0")
}

/// A Bind naming a format for each of `n` result columns.
fn bind_formats(stmt: &str, n: u16) -> Vec<u8> {
    let mut body = format!("\0{stmt}\0\0\0\0\0").into_bytes();
    body.extend_from_slice(&n.to_be_bytes());
    body.extend(std::iter::repeat_n([0u8, 1], n.into()).flatten());
    frame(b'B', &body)
}

/// A rig whose statement `q` is prepared on `conn` and confirmed.
fn prepared(conn: &mut ServerStatements) -> Rig {
    let mut rig = Rig::new(1);
    rig.client(conn, &[parse("q", "select * from t"), sync()]);
    rig.sent();
    rig.server(conn, &[frame(b'1', b""), ready(b'I')]);
    rig
}

fn answers() -> Vec<Vec<u8>> {
    vec![
        frame(b'2', b""),
        frame(b'T', b"\0\0"),
        frame(b'C', b"SELECT 0\0"),
        ready(b'I'),
    ]
}

#[test]
fn a_request_that_describes_is_sent_again_after_a_stale_plan() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    // libpq's PQexecPrepared: the portal is described, so the client learns the new shape.
    let request = [bind("q"), describe_portal(), execute(), sync()];
    rig.client(&mut a, &request);
    rig.sent();
    let got = rig.server(&mut a, &[stale(), ready(b'I')]);
    assert_eq!(got, vec![], "the error and its ReadyForQuery are swallowed");
    assert_eq!(
        rig.sent(),
        vec![
            s('P', "_sluice_t_2"),
            s('B', "_sluice_t_2"),
            s('D', ""),
            s('E', ""),
            s('S', "")
        ],
        "a new statement prepared afresh, the same request again"
    );
    let mut again = vec![frame(b'1', b"")];
    again.extend(answers());
    let got = rig.server(&mut a, &again);
    assert_eq!(got, vec![s('2', ""), s('T', ""), s('C', ""), s('Z', "")]);
    assert!(rig.p.releasable());

    // Once only: the same failure again reaches the client.
    rig.client(&mut a, &request);
    rig.sent();
    rig.server(&mut a, &[stale(), ready(b'I')]);
    rig.sent();
    let got = rig.server(&mut a, &[frame(b'1', b""), stale(), ready(b'I')]);
    assert_eq!(got, vec![s('E', ""), s('Z', "")]);
}

#[test]
fn a_request_that_does_not_describe_gets_the_error_and_the_next_parse_a_new_statement() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[bind("q"), execute(), sync()]);
    rig.sent();
    let got = rig.server(&mut a, &[stale(), ready(b'I')]);
    assert_eq!(
        got,
        vec![s('E', ""), s('Z', "")],
        "the client's cached shape is stale"
    );
    assert_eq!(rig.sent(), vec![], "nothing sent again");
    // pgjdbc's recovery: close, prepare the same text again; it must be planned afresh.
    rig.client(
        &mut a,
        &[
            close_stmt("q"),
            parse("q2", "select * from t"),
            bind("q2"),
            execute(),
            sync(),
        ],
    );
    assert_eq!(
        rig.sent(),
        vec![
            s('P', "_sluice_t_2"),
            s('B', "_sluice_t_2"),
            s('E', ""),
            s('S', "")
        ]
    );
}

#[test]
fn a_bind_with_a_format_per_column_is_not_sent_again() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(
        &mut a,
        &[bind_formats("q", 2), describe_portal(), execute(), sync()],
    );
    rig.sent();
    let got = rig.server(&mut a, &[stale(), ready(b'I')]);
    assert_eq!(
        got,
        vec![s('E', ""), s('Z', "")],
        "written for the old shape"
    );
    assert_eq!(rig.sent(), vec![]);
}

#[test]
fn a_holder_of_a_stale_statement_gets_its_error_where_it_is_not_prepared() {
    let (mut a, mut b) = (ServerStatements::default(), ServerStatements::default());
    let mut first = prepared(&mut a);
    let mut second = Rig {
        registry: StatementRegistry::new(PREFIX.into(), Default::default()),
        ..Rig::new(2)
    };
    std::mem::swap(&mut second.registry, &mut first.registry);
    second.client(&mut a, &[parse("mine", "select * from t"), sync()]);
    second.server(&mut a, &[ready(b'I')]);
    second.sent();
    // The first session finds the statement stale on a.
    std::mem::swap(&mut second.registry, &mut first.registry);
    first.client(&mut a, &[bind("q"), execute(), sync()]);
    first.server(&mut a, &[stale(), ready(b'I')]);
    std::mem::swap(&mut second.registry, &mut first.registry);
    // On b, preparing it afresh would hand the second session a shape it never saw.
    second.client(&mut b, &[bind("mine"), execute(), sync()]);
    assert_eq!(
        second.sent(),
        vec![
            s('B', "_sluice_unnamed_statement_of_another_session"),
            s('E', ""),
            s('S', "")
        ]
    );
    for m in [error("26000"), ready(b'I')] {
        let (registry, sout) = (&second.registry, &mut second.sout);
        second
            .p
            .server_message(&m, &mut b, registry, PREFIX, sout, &mut second.cout);
    }
    let mut want = BytesMut::new();
    want.extend_from_slice(&stale());
    want.extend_from_slice(&ready(b'I'));
    assert_eq!(
        &second.cout[..],
        &want[..],
        "the stale statement's own error"
    );
}

#[test]
fn ddl_sluice_sees_gives_the_next_parse_a_new_statement() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[frame(b'Q', b"alter table t add column x int\0")]);
    rig.sent();
    rig.server(&mut a, &[frame(b'C', b"ALTER TABLE\0"), ready(b'I')]);
    rig.client(&mut a, &[parse("p", "select * from t"), sync()]);
    assert_eq!(rig.sent(), vec![s('P', "_sluice_t_2"), s('S', "")]);
    // DML leaves the cache alone.
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    rig.client(&mut a, &[frame(b'Q', b"delete from t\0")]);
    rig.sent();
    rig.server(&mut a, &[frame(b'C', b"DELETE 3\0"), ready(b'I')]);
    rig.client(&mut a, &[parse("p3", "select * from t"), sync()]);
    assert_eq!(
        rig.sent(),
        vec![s('S', "")],
        "the Parse answered from the cache"
    );
}

#[test]
fn deallocate_all_keeps_the_shared_statement_and_ddl_in_it_retires_again_at_commit() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    // Drivers free statements routinely: that alone changes nothing for the others.
    rig.client(&mut a, &[frame(b'Q', b"DEALLOCATE ALL\0")]);
    assert_eq!(rig.sent(), vec![], "answered by sluice");
    rig.cout.clear();
    rig.client(&mut a, &[parse("q", "select * from t"), sync()]);
    assert_eq!(
        rig.sent(),
        vec![s('S', "")],
        "the shared statement, answered from the cache"
    );
    rig.server(&mut a, &[ready(b'I')]);
    // DDL in a transaction: retired at the ALTER, and again at the COMMIT, since others may
    // have planned on the old schema in between.
    rig.client(&mut a, &[frame(b'Q', b"begin; alter table t add c int\0")]);
    rig.sent();
    rig.server(
        &mut a,
        &[
            frame(b'C', b"BEGIN\0"),
            frame(b'C', b"ALTER TABLE\0"),
            ready(b'T'),
        ],
    );
    let during = rig.registry.intern(b"select * from t\0\0\0", false);
    during.confirm();
    rig.client(&mut a, &[frame(b'Q', b"commit\0")]);
    rig.sent();
    rig.server(&mut a, &[frame(b'C', b"COMMIT\0"), ready(b'I')]);
    rig.client(&mut a, &[parse("p", "select * from t"), sync()]);
    let sent = rig.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_ne!(
        sent[0].1,
        String::from_utf8_lossy(&during.server_name),
        "planned afresh"
    );
}

#[test]
fn a_client_that_goes_on_gets_the_swallowed_error() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[bind("q"), describe_portal(), execute(), sync()]);
    rig.sent();
    assert_eq!(rig.server(&mut a, &[stale()]), vec![]);
    // Pipelining, the client sends its next request before the retry could start.
    rig.client(&mut a, &[frame(b'Q', b"select 1\0")]);
    let got = rig.server(&mut a, &[ready(b'I')]);
    assert_eq!(got, vec![s('E', ""), s('Z', "")]);
    assert_eq!(
        rig.sent(),
        vec![s('Q', "")],
        "no retry behind the client's back"
    );
}

#[test]
fn a_pipeline_that_flushed_without_sync_is_sent_again_behind_sluices_sync() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    // psycopg's pipeline mode: the results are flushed, the Sync comes when the block ends.
    let flush = frame(b'H', b"");
    rig.client(
        &mut a,
        &[bind("q"), describe_portal(), execute(), flush.clone()],
    );
    rig.sent();
    assert_eq!(rig.server(&mut a, &[stale()]), vec![]);
    assert_eq!(
        rig.sent(),
        vec![
            s('S', ""),
            s('P', "_sluice_t_2"),
            s('B', "_sluice_t_2"),
            s('D', ""),
            s('E', ""),
            s('H', "")
        ]
    );
    let mut again = vec![ready(b'I'), frame(b'1', b"")];
    again.extend(answers().into_iter().take(3));
    let got = rig.server(&mut a, &again);
    assert_eq!(got, vec![s('2', ""), s('T', ""), s('C', "")]);
    rig.client(&mut a, &[sync()]);
    assert_eq!(rig.server(&mut a, &[ready(b'I')]), vec![s('Z', "")]);
    assert!(rig.p.releasable());
}

#[test]
fn a_pipeline_that_already_executed_is_not_sent_again() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    // The error rolls the first Execute back: running only the second again would lose it.
    let insert = frame(b'B', b"\0\0\0\0\0\0\0\0");
    rig.client(
        &mut a,
        &[
            insert,
            execute(),
            bind("q"),
            describe_portal(),
            execute(),
            frame(b'H', b""),
        ],
    );
    rig.sent();
    let got = rig.server(
        &mut a,
        &[frame(b'2', b""), frame(b'C', b"INSERT 0 1\0"), stale()],
    );
    assert_eq!(got, vec![s('2', ""), s('C', ""), s('E', "")]);
    assert_eq!(rig.sent(), vec![]);
}

#[test]
fn a_request_of_two_binds_is_not_sent_again() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    // The Describe speaks for the second portal: the first one's new row shape would go unsaid.
    rig.client(
        &mut a,
        &[
            bind("q"),
            execute(),
            bind("q"),
            describe_portal(),
            execute(),
            sync(),
        ],
    );
    rig.sent();
    let got = rig.server(&mut a, &[stale(), ready(b'I')]);
    assert_eq!(got, vec![s('E', ""), s('Z', "")]);
    assert_eq!(rig.sent(), vec![]);
}

#[test]
fn a_swallowed_error_is_dropped_with_a_lost_server() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[bind("q"), describe_portal(), execute(), sync()]);
    rig.sent();
    assert_eq!(rig.server(&mut a, &[stale()]), vec![]);
    rig.p.cut(); // the server is gone before its ReadyForQuery
    let mut b = ServerStatements::default();
    rig.client(&mut b, &[frame(b'Q', b"select 1\0")]);
    assert_eq!(
        tags(&rig.cout, false),
        vec![],
        "no old error ahead of the new request"
    );
}

#[test]
fn a_discard_all_after_a_swallowed_error_is_answered_after_it() {
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[bind("q"), describe_portal(), execute(), sync()]);
    rig.sent();
    assert_eq!(rig.server(&mut a, &[stale()]), vec![]);
    rig.client(&mut a, &[frame(b'Q', b"DISCARD ALL\0")]);
    let got = rig.server(&mut a, &[ready(b'I')]);
    assert_eq!(
        got,
        vec![s('E', ""), s('Z', ""), s('C', ""), s('Z', "")],
        "the request's error and ReadyForQuery, then the DISCARD's answer"
    );
    assert_eq!(rig.sent(), vec![], "nothing sent again");
}

#[test]
fn a_describe_after_the_execute_or_untyped_binary_parameters_are_not_sent_again() {
    // The rows would come in the new shape before the description that tells it.
    let mut a = ServerStatements::default();
    let mut rig = prepared(&mut a);
    rig.client(&mut a, &[bind("q"), execute(), describe_portal(), sync()]);
    rig.sent();
    assert_eq!(
        rig.server(&mut a, &[stale(), ready(b'I')]),
        vec![s('E', ""), s('Z', "")]
    );
    // A binary parameter of a type the Parse left to the server was encoded for the old plan's
    // inference; one whose type the Parse gave means the same to a fresh plan.
    for (oid, retried) in [([0u8, 0, 0, 0], false), ([0, 0, 0, 23], true)] {
        let mut b = ServerStatements::default();
        let mut rig = Rig::new(1);
        let mut body = b"q\0select * from t where id = $1\0\0\x01".to_vec();
        body.extend_from_slice(&oid);
        rig.client(&mut b, &[frame(b'P', &body), sync()]);
        rig.sent();
        rig.server(&mut b, &[frame(b'1', b""), ready(b'I')]);
        let binary = frame(b'B', b"\0q\0\0\x01\0\x01\0\x01\0\0\0\x04\0\0\0\x07\0\0");
        rig.client(&mut b, &[binary, describe_portal(), execute(), sync()]);
        rig.sent();
        let got = rig.server(&mut b, &[stale(), ready(b'I')]);
        assert_eq!(got.is_empty(), retried, "type oid {oid:?}: {got:?}");
    }
}
