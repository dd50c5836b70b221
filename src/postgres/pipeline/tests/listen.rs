//! LISTEN and UNLISTEN through the pipeline: the server gets a no-op UNLISTEN, the client the
//! LISTEN tag, and the change is handed to the relay when Postgres would apply it (at commit).

use super::*;
use crate::postgres::listen::sql::Op;

fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', format!("{sql}\0").as_bytes())
}

fn complete(tag: &str) -> Vec<u8> {
    frame(b'C', format!("{tag}\0").as_bytes())
}

/// Runs one request through: what the server was sent (as text), and the CommandComplete tags
/// the client got, given the server's answer.
fn round(rig: &mut Rig, client: &[Vec<u8>], server: &[Vec<u8>]) -> (String, Vec<String>) {
    let mut conn = ServerStatements::default();
    rig.client(&mut conn, client);
    let sent = String::from_utf8_lossy(&rig.sout).into_owned();
    rig.sout.clear();
    for m in server {
        rig.p.server_message(
            m,
            &mut conn,
            &rig.registry,
            PREFIX,
            &mut rig.sout,
            &mut rig.cout,
        );
    }
    let mut tags = Vec::new();
    for f in wire::Frames::new(&rig.cout, 1 << 20) {
        let (at, f) = f.unwrap();
        if f.tag == b'C' {
            let body = f.body(&rig.cout[at..]);
            tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned());
        }
    }
    rig.cout.clear();
    (sent, tags)
}

fn simple(rig: &mut Rig, sql: &str, tag: &str, status: u8) -> (String, Vec<String>) {
    round(rig, &[query(sql)], &[complete(tag), ready(status)])
}

#[test]
fn a_listen_runs_as_a_no_op_unlisten_and_applies_at_once_outside_a_transaction() {
    let mut rig = Rig::new(1);
    let (sent, tags) = simple(&mut rig, "/* x */ LISTEN Jobs", "UNLISTEN", b'I');
    assert!(sent.contains("/* x */ UNLISTEN Jobs"), "{sent:?}");
    assert_eq!(tags, ["LISTEN"]);
    assert_eq!(rig.p.pinned(), None, "LISTEN no longer pins");
    assert!(rig.p.listen_due());
    assert_eq!(rig.p.take_listen(), [Op::Listen("jobs".into())]);
    assert!(!rig.p.listen_due());

    let (sent, tags) = simple(&mut rig, "UNLISTEN *", "UNLISTEN", b'I');
    assert!(sent.contains("UNLISTEN *"), "{sent:?}");
    assert_eq!(tags, ["UNLISTEN"]);
    assert_eq!(rig.p.take_listen(), [Op::UnlistenAll]);
}

#[test]
fn changes_in_a_transaction_apply_at_commit_and_a_rollback_drops_them() {
    let mut rig = Rig::new(1);
    simple(&mut rig, "BEGIN", "BEGIN", b'T');
    simple(&mut rig, "LISTEN a", "UNLISTEN", b'T');
    assert!(!rig.p.listen_due(), "not before commit");
    simple(&mut rig, "ROLLBACK", "ROLLBACK", b'I');
    assert!(!rig.p.listen_due(), "rolled back");

    simple(&mut rig, "BEGIN", "BEGIN", b'T');
    simple(&mut rig, "LISTEN b", "UNLISTEN", b'T');
    simple(&mut rig, "SAVEPOINT s", "SAVEPOINT", b'T');
    simple(&mut rig, "LISTEN c", "UNLISTEN", b'T');
    simple(&mut rig, "ROLLBACK TO SAVEPOINT s", "ROLLBACK", b'T');
    simple(&mut rig, "UNLISTEN d", "UNLISTEN", b'T');
    simple(&mut rig, "RELEASE s", "RELEASE", b'T');
    assert!(!rig.p.listen_due());
    simple(&mut rig, "COMMIT", "COMMIT", b'I');
    assert_eq!(
        rig.p.take_listen(),
        [Op::Listen("b".into()), Op::Unlisten("d".into())]
    );

    // A failed transaction's COMMIT answers ROLLBACK.
    simple(&mut rig, "BEGIN", "BEGIN", b'T');
    simple(&mut rig, "LISTEN e", "UNLISTEN", b'T');
    round(
        &mut rig,
        &[query("select 1/0")],
        &[error("22012"), ready(b'E')],
    );
    simple(&mut rig, "COMMIT", "ROLLBACK", b'I');
    assert!(!rig.p.listen_due());
}

#[test]
fn a_refused_listen_changes_nothing() {
    let mut rig = Rig::new(1);
    simple(&mut rig, "BEGIN", "BEGIN", b'T');
    round(
        &mut rig,
        &[query("select 1/0")],
        &[error("22012"), ready(b'E')],
    );
    let (_, tags) = round(
        &mut rig,
        &[query("LISTEN a")],
        &[error("25P02"), ready(b'E')],
    );
    assert!(tags.is_empty());
    simple(&mut rig, "ROLLBACK", "ROLLBACK", b'I');
    assert!(!rig.p.listen_due());
}

#[test]
fn extended_protocol_listen_commits_with_its_implicit_transaction() {
    let mut rig = Rig::new(1);
    let ok = [
        frame(b'1', b""),
        frame(b'2', b""),
        complete("UNLISTEN"),
        ready(b'I'),
    ];
    let (sent, tags) = round(
        &mut rig,
        &[parse("", "LISTEN x"), bind(""), execute(), sync()],
        &ok,
    );
    assert!(sent.contains("UNLISTEN x"), "{sent:?}");
    assert_eq!(tags, ["LISTEN"]);
    assert_eq!(rig.p.take_listen(), [Op::Listen("x".into())]);

    // A later statement of the same implicit transaction fails: nothing happened.
    let (_, tags) = round(
        &mut rig,
        &[
            parse("", "LISTEN y"),
            bind(""),
            execute(),
            parse("", "select 1/0"),
            bind(""),
            execute(),
            sync(),
        ],
        &[
            frame(b'1', b""),
            frame(b'2', b""),
            complete("UNLISTEN"),
            frame(b'1', b""),
            frame(b'2', b""),
            error("22012"),
            ready(b'I'),
        ],
    );
    assert_eq!(tags, ["LISTEN"]);
    assert!(!rig.p.listen_due());

    // A named statement carries its change to every Execute of it.
    let (sent, _) = round(
        &mut rig,
        &[parse("l", "UNLISTEN x"), bind("l"), execute(), sync()],
        &ok,
    );
    assert!(sent.contains("UNLISTEN x"), "{sent:?}");
    assert_eq!(rig.p.take_listen(), [Op::Unlisten("x".into())]);
}

#[test]
fn listen_among_other_statements_still_pins() {
    let mut rig = Rig::new(1);
    let (sent, _) = round(
        &mut rig,
        &[query("select 1; listen a")],
        &[complete("SELECT 1"), complete("LISTEN"), ready(b'I')],
    );
    assert!(sent.contains("; listen a"));
    assert_eq!(rig.p.pinned(), Some(PinReason::Listen));
    assert!(!rig.p.listen_due());
}

#[test]
fn discard_all_ends_subscriptions_in_its_place_and_close_forgets_a_statement() {
    let mut rig = Rig::new(1);
    simple(&mut rig, "LISTEN a", "UNLISTEN", b'I');
    // Answered by sluice (unpinned, idle): in order after the LISTEN.
    round(&mut rig, &[query("DISCARD ALL")], &[]);
    assert_eq!(
        rig.p.take_listen(),
        [Op::Listen("a".into()), Op::UnlistenAll]
    );

    // A closed statement's name reused for another statement carries no change.
    round(
        &mut rig,
        &[parse("l", "LISTEN b"), close_stmt("l"), sync()],
        &[frame(b'1', b""), frame(b'3', b""), ready(b'I')],
    );
    let (_, tags) = round(
        &mut rig,
        &[parse("l", "select 1"), bind("l"), execute(), sync()],
        &[
            frame(b'1', b""),
            frame(b'2', b""),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert_eq!(tags, ["SELECT 1"]);
    assert!(!rig.p.listen_due());
}

#[test]
fn an_unlisten_among_other_statements_ends_the_subscription_with_its_transaction() {
    let mut rig = Rig::new(1);
    simple(&mut rig, "LISTEN a", "UNLISTEN", b'I');
    assert_eq!(rig.p.take_listen(), [Op::Listen("a".into())]);
    let many = |rig: &mut Rig, sql: &str, last: Vec<u8>| {
        round(
            rig,
            &[query(sql)],
            &[complete("SELECT 1"), last, ready(b'I')],
        )
    };
    many(&mut rig, "select 1; select 1/0; unlisten a", error("22012"));
    assert!(!rig.p.listen_due(), "the failed query rolled it back");
    many(&mut rig, "select 1; unlisten a", complete("UNLISTEN"));
    assert_eq!(rig.p.take_listen(), [Op::Unlisten("a".into())]);
}
