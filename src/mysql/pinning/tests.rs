//! Statements drivers and applications send, and what each does to pinning and tracking.

#![allow(clippy::unwrap_used)]

use super::*;

fn pin(sql: &str) -> Option<PinReason> {
    effects(sql.as_bytes()).pins().next()
}

#[test]
fn tracked_sets_read_back_instead_of_pinning() {
    for sql in [
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
        "SET @@session.autocommit = ON",
        "set autocommit=0",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET time_zone = '+03:00', sql_mode = 'ANSI,TRADITIONAL'",
        "SET CHARACTER SET utf8",
        "SET SESSION tx_read_only = 1",
        "USE appdb",
        "/* driver */ SET LOCAL wait_timeout = 10",
    ] {
        let fx = effects(sql.as_bytes());
        assert_eq!((fx.pin_bits, fx.read_back), (0, true), "{sql}");
    }
}

#[test]
fn what_cannot_move_pins() {
    for (sql, reason) in [
        ("SET @x = 1", PinReason::UserVariable),
        ("SET time_zone = '+00:00', @y := 2", PinReason::UserVariable),
        ("SELECT @n := @n + 1 FROM t", PinReason::UserVariable),
        ("SELECT id INTO @id FROM t LIMIT 1", PinReason::UserVariable),
        ("SET sql_log_bin = 0", PinReason::SetParameter),
        (
            "SET SESSION optimizer_switch = 'x=on'",
            PinReason::SetParameter,
        ),
        ("LOCK TABLES t WRITE", PinReason::LockTables),
        ("FLUSH TABLES WITH READ LOCK", PinReason::LockTables),
        ("SELECT GET_LOCK('job', 10)", PinReason::AdvisoryLock),
        ("CREATE TEMPORARY TABLE tmp (id int)", PinReason::TempObject),
        (
            "create or replace temporary table if not exists db.tmp (x int)",
            PinReason::TempObject,
        ),
        ("PREPARE s FROM 'SELECT 1'", PinReason::SqlPrepare),
        ("/*!40101 SET NAMES utf8 */", PinReason::ExecutableComment),
        ("SELECT /*M!100100 1, */ 2", PinReason::ExecutableComment),
        ("HANDLER t OPEN", PinReason::ServerCursor),
        ("XA START 'x'", PinReason::Xa),
        ("CALL p(1, @out)", PinReason::UserVariable),
        ("EXECUTE IMMEDIATE 'SET @x = 1'", PinReason::DynamicSql),
        ("BEGIN NOT ATOMIC SET @x = 1; END", PinReason::DynamicSql),
        ("CREATE TEMPORARY SEQUENCE s", PinReason::TempObject),
    ] {
        assert_eq!(pin(sql), Some(reason), "{sql}");
    }
}

#[test]
fn ordinary_statements_leave_no_trace() {
    for sql in [
        "SELECT 1",
        "SELECT 'SET @x = 1', `get_lock`, \"lock tables\" FROM t -- get_lock(\n",
        "INSERT INTO t (a) VALUES (@@session.time_zone)",
        "SET GLOBAL max_connections = 10",
        "SET @@global.sql_mode = ''",
        "SELECT @x",
        "BEGIN; UPDATE t SET a = 1; COMMIT",
        "SET STATEMENT max_statement_time=1 FOR SELECT 1",
        "CREATE TABLE t (id int)",
    ] {
        assert_eq!(effects(sql.as_bytes()), Effects::default(), "{sql}");
    }
}

#[test]
fn names_that_lift_pins() {
    let fx =
        effects(b"DROP TEMPORARY TABLE IF EXISTS a, db.b; DEALLOCATE PREPARE s; DROP PREPARE t");
    assert_eq!(
        fx.changes,
        vec![
            Change::TableDropped(b"a"),
            Change::TableDropped(b"db.b"),
            Change::Deallocated(b"s"),
            Change::Deallocated(b"t"),
        ]
    );
    let fx = effects(b"SELECT GET_LOCK('a', 1), GET_LOCK(CONCAT('b', 1), 1), RELEASE_LOCK('a'), RELEASE_ALL_LOCKS()");
    assert_eq!(
        fx.changes,
        vec![
            Change::LockTaken(Some(b"a")),
            Change::LockTaken(None),
            Change::LockReleased(b"a"),
            Change::AllLocksReleased,
        ]
    );
    assert_eq!(
        effects(b"UNLOCK TABLES").changes,
        vec![Change::TablesUnlocked]
    );
    assert_eq!(
        effects(b"CREATE TEMPORARY TABLE x (a int)").changes,
        vec![Change::TempCreated(b"x")]
    );
}

#[test]
fn holds_last_insert_id_and_kill() {
    assert!(effects(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").hold);
    assert!(!effects(b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").hold);
    assert!(effects(b"SELECT LAST_INSERT_ID()").last_insert_id);
    assert!(effects(b"select @@identity").last_insert_id);
    assert_eq!(effects(b"KILL QUERY 12").kill, Some(Kill::Query(12)));
    assert_eq!(effects(b"kill hard query 12;").kill, Some(Kill::Query(12)));
    assert_eq!(effects(b"KILL 12").kill, Some(Kill::Connection(12)));
    assert_eq!(effects(b"KILL QUERY ID 12").kill, Some(Kill::Unsupported));
    assert_eq!(
        effects(b"SELECT 1; KILL QUERY 12").kill,
        Some(Kill::Unsupported)
    );
}

#[test]
fn every_pin_of_a_statement_counts_and_prepared_text_is_scanned() {
    let fx = effects(b"CREATE TEMPORARY TABLE t AS SELECT GET_LOCK('x', 1)");
    let pins: Vec<_> = fx.pins().collect();
    assert_eq!(pins, vec![PinReason::TempObject, PinReason::AdvisoryLock]);
    let fx = effects(b"PREPARE s FROM 'SET @x = 1'");
    let pins: Vec<_> = fx.pins().collect();
    assert_eq!(pins, vec![PinReason::SqlPrepare, PinReason::UserVariable]);
    assert_eq!(
        effects(b"RENAME TABLE a TO b, c TO d").changes,
        vec![Change::Renamed(b"a", b"b"), Change::Renamed(b"c", b"d")]
    );
    assert_eq!(
        effects(b"ALTER TABLE tmp ADD x INT, RENAME TO tmp2").changes,
        vec![Change::Renamed(b"tmp", b"tmp2")]
    );
    assert_eq!(effects(b"XA COMMIT 'x'").changes, vec![Change::XaEnded]);
    assert!(effects(b"SELECT SQL_CALC_FOUND_ROWS * FROM t").soft_hold);
    assert!(!effects(b"CALL p(1, 2)").pin_bits != 0);
}

#[test]
fn no_backslash_escapes_ends_a_string_at_its_quote() {
    let sql = br"SELECT 'C:\' INTO @v";
    assert_eq!(
        effects_in(sql, true).pin_bits,
        0,
        "with escapes the string runs on"
    );
    let pins: Vec<_> = effects_in(sql, false).pins().collect();
    assert_eq!(pins, vec![PinReason::UserVariable]);
}

#[test]
fn handlers_open_and_close_by_name() {
    let fx = effects(b"HANDLER t OPEN AS h");
    assert_eq!(fx.pins().collect::<Vec<_>>(), vec![PinReason::ServerCursor]);
    assert_eq!(fx.changes, vec![Change::HandlerOpened(b"h")]);
    assert_eq!(
        effects(b"HANDLER db.t OPEN").changes,
        vec![Change::HandlerOpened(b"db.t")]
    );
    assert_eq!(
        effects(b"HANDLER h CLOSE").changes,
        vec![Change::HandlerClosed(b"h")]
    );
    assert_eq!(effects(b"HANDLER h READ FIRST").pin_bits, 0);
}

/// What the relay's memo of the last plain COM_QUERY counts on: a text that does nothing to
/// session state still does nothing with other digits (and one that does is never remembered).
#[test]
fn a_plain_text_stays_plain_with_other_digits() {
    let texts = [
        "SELECT c FROM sbtest1 WHERE id=5029",
        "SELECT 1; KILL 12",
        "KILL QUERY 7",
        "SELECT GET_LOCK('l1', 10)",
        "SELECT /*!50001 1 */ 2",
        "SELECT 1--2\nSET @a1 = 1",
        "SELECT 1 -- 2\n; LOCK TABLES t1 READ",
        "SELECT '1'; SET autocommit=1",
        "SELECT @v1 := 3",
        "SELECT 1 INTO @x2",
        "CREATE TEMPORARY TABLE t9 (a INT)",
        "SELECT `t1`.`c2` FROM `t1` WHERE x = 0x1F AND y = 1e5",
        "SELECT SQL_CALC_FOUND_ROWS a1 FROM t LIMIT 10",
        "SELECT LAST_INSERT_ID() + 1",
    ];
    for text in texts {
        let plain = effects(text.as_bytes()) == Effects::default();
        for other in crate::session::memo::renumberings(text.as_bytes()) {
            if plain {
                let shown = String::from_utf8_lossy(&other);
                assert_eq!(effects(&other), Effects::default(), "{text} then {shown}");
            }
        }
    }
}
