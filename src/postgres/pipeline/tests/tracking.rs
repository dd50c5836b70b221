//! Parameter tracking, sluice's own read-back and pin-check queries, and resets learned from the
//! server's CommandComplete.

use super::*;

fn complete(tag: &str) -> Vec<u8> {
    frame(b'C', format!("{tag}\0").as_bytes())
}

fn row(cols: &[Option<&str>]) -> Vec<u8> {
    let mut body = (cols.len() as u16).to_be_bytes().to_vec();
    for c in cols {
        match c {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    frame(b'D', &body)
}

#[test]
fn set_statements_are_tracked_and_executions_of_prepared_ones_too() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    let q = frame(b'Q', b"SET app.tenant = 1; set local x.y = 2\0");
    rig.client(&mut a, &[q]);
    assert!(rig.p.pins.pinned.is_none());
    assert_eq!(rig.p.tracked().changes.names, ["app.tenant"]);
    rig.p.tracked = None;
    rig.client(
        &mut a,
        &[
            parse("s", "select set_config('app.tenant', $1, false)"),
            bind("s"),
            execute(),
            sync(),
        ],
    );
    assert_eq!(rig.p.tracked().changes.names, ["app.tenant"]);
    rig.p.tracked = None;
    // Executing the statement again, even with no Parse, is read back again.
    rig.client(&mut a, &[bind("s"), execute(), sync()]);
    assert_eq!(rig.p.tracked().changes.names, ["app.tenant"]);
    // A computed name cannot be read back: the session pins.
    rig.client(
        &mut a,
        &[frame(b'Q', b"select set_config(n, 'v', false) from t\0")],
    );
    assert_eq!(rig.p.pins.pinned, Some(PinReason::SetParameter));
    assert!(rig.p.pins.untracked);
}

#[test]
fn read_back_rows_and_pin_check_are_kept_not_forwarded() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    rig.p
        .internal_query(Purpose::ReadBack, "SELECT ...", &mut rig.sout);
    rig.p
        .internal_query(Purpose::PinCheck, "SELECT ...", &mut rig.sout);
    let forwarded = rig.server(
        &mut a,
        &[
            row(&[Some("search_path"), Some("a, b")]),
            row(&[Some("app.x"), None]),
            complete("SELECT 2"),
            ready(b'I'),
            row(&[Some("0")]),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert!(forwarded.is_empty(), "{forwarded:?}");
    assert_eq!(
        rig.p.tracked().read_back,
        [
            ("search_path".to_owned(), Some("a, b".to_owned())),
            ("app.x".to_owned(), None)
        ]
    );
    assert_eq!(rig.p.pins.check, Some(true));
    assert!(rig.p.quiet());
}

#[test]
fn resets_follow_the_servers_command_complete() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    rig.client(&mut a, &[parse("q", "select 1"), sync()]);
    rig.server(&mut a, &[frame(b'1', b""), ready(b'I')]);
    assert_eq!(a.len(), 1);
    // DISCARD ALL through the extended protocol: sluice learns of it from its outcome.
    rig.client(
        &mut a,
        &[parse("", "discard all"), bind(""), execute(), sync()],
    );
    rig.server(&mut a, &[frame(b'1', b""), frame(b'2', b"")]);
    assert_eq!(a.len(), 1, "not before the server says so");
    rig.server(&mut a, &[complete("DISCARD ALL"), ready(b'I')]);
    assert!(a.is_empty());
    assert_eq!(rig.p.statements_len(), 0);
    assert_eq!(rig.p.take_discard(), Some(Discard::Server));
    // A DEALLOCATE sluice cannot attribute retires the connection.
    rig.client(&mut a, &[frame(b'Q', b"select 1; deallocate x\0")]);
    rig.server(
        &mut a,
        &[complete("SELECT 1"), complete("DEALLOCATE"), ready(b'I')],
    );
    assert!(rig.p.pins.retire);
    // Unpinned DISCARD ALL is answered by sluice and resets the session's parameters.
    rig.client(&mut a, &[frame(b'Q', b"DISCARD ALL\0")]);
    assert_eq!(rig.p.take_discard(), Some(Discard::Local));
}

/// A pin check answers for the moment it ran on the server. A statement that pins, sent behind
/// it before its answer was taken in (psycopg's next query right after a DROP), makes its
/// "nothing pins" stale: the session keeps its connection (found with psycopg: another session
/// was handed the connection and read this one's temporary table).
#[test]
fn a_pin_made_behind_a_pin_check_outlives_the_check() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    rig.client(&mut a, &[frame(b'Q', b"create temp table t1 (x int)\0")]);
    rig.server(&mut a, &[complete("CREATE TABLE"), ready(b'I')]);
    assert_eq!(rig.p.pinned(), Some(PinReason::TempObject));
    assert!(!rig.p.end_transaction().check_pins);
    rig.client(&mut a, &[frame(b'Q', b"drop table t1\0")]);
    rig.server(&mut a, &[complete("DROP TABLE"), ready(b'I')]);
    assert!(rig.p.end_transaction().check_pins);
    rig.p
        .internal_query(Purpose::PinCheck, "SELECT ...", &mut rig.sout);
    // The client's next statement arrives before the check's answer.
    rig.client(&mut a, &[frame(b'Q', b"create temp table t7 (x int)\0")]);
    rig.server(
        &mut a,
        &[row(&[Some("0")]), complete("SELECT 1"), ready(b'I')],
    );
    rig.server(&mut a, &[complete("CREATE TABLE"), ready(b'I')]);
    let end = rig.p.end_transaction();
    assert_eq!(end.unpinned, None, "unpinned by a stale check");
    assert_eq!(rig.p.pinned(), Some(PinReason::TempObject));

    // A check sent after the pin answers for it.
    rig.client(&mut a, &[frame(b'Q', b"drop table t7\0")]);
    rig.server(&mut a, &[complete("DROP TABLE"), ready(b'I')]);
    assert!(rig.p.end_transaction().check_pins);
    rig.p
        .internal_query(Purpose::PinCheck, "SELECT ...", &mut rig.sout);
    rig.server(
        &mut a,
        &[row(&[Some("0")]), complete("SELECT 1"), ready(b'I')],
    );
    assert_eq!(
        rig.p.end_transaction().unpinned,
        Some(PinReason::TempObject)
    );
    assert_eq!(rig.p.pinned(), None);
}

/// A read-back answers for the moment it ran. A DISCARD ALL sent right behind it returned the
/// session to its startup parameters: the value read before must not come back (found with
/// psycopg: `SET statement_timeout` then `DISCARD ALL`, and the session, unpinned, was handed a
/// connection with the old timeout replayed).
#[test]
fn a_read_back_from_before_a_discard_all_is_dropped() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    // Pinned: the server runs the DISCARD ALL.
    rig.client(&mut a, &[frame(b'Q', b"create temp table t (x int)\0")]);
    rig.server(&mut a, &[complete("CREATE TABLE"), ready(b'I')]);
    let _ = rig.p.end_transaction();
    rig.client(&mut a, &[frame(b'Q', b"set statement_timeout = 35000\0")]);
    rig.server(&mut a, &[complete("SET"), ready(b'I')]);
    assert_eq!(rig.p.end_transaction().touched, ["statement_timeout"]);
    rig.p
        .internal_query(Purpose::ReadBack, "SELECT ...", &mut rig.sout);
    rig.client(&mut a, &[frame(b'Q', b"DISCARD ALL\0")]);
    rig.server(
        &mut a,
        &[
            row(&[Some("statement_timeout"), Some("35s")]),
            complete("SELECT 1"),
            ready(b'I'),
            complete("DISCARD ALL"),
            ready(b'I'),
        ],
    );
    assert_eq!(rig.p.take_discard(), Some(Discard::Server));
    rig.p.server_discarded();
    assert_eq!(rig.p.end_transaction().read_back, []);
}

/// An unpinned session's DISCARD ALL is answered by sluice only when nothing of the session is
/// still on its way: behind a read-back, the server runs it, so the value read back cannot
/// outlive it.
#[test]
fn discard_all_behind_a_read_back_goes_to_the_server() {
    let mut rig = Rig::new(1);
    let mut a = ServerStatements::default();
    rig.client(&mut a, &[frame(b'Q', b"set statement_timeout = 35000\0")]);
    rig.server(&mut a, &[complete("SET"), ready(b'I')]);
    assert_eq!(rig.p.end_transaction().touched, ["statement_timeout"]);
    rig.p
        .internal_query(Purpose::ReadBack, "SELECT ...", &mut rig.sout);
    rig.sout.clear();
    rig.client(&mut a, &[frame(b'Q', b"DISCARD ALL\0")]);
    assert_eq!(rig.p.take_discard(), None);
    assert!(rig.sout.ends_with(b"DISCARD ALL\0"), "{:?}", rig.sout);
}
