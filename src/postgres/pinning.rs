//! Which SQL leaves session state on the server that sluice cannot move (a pin), which may
//! change session parameters (tracked instead), and which may release a pin; and the server-side
//! check that decides whether a pin is really gone.

use super::scan::{Token, Words, is};
use crate::session::PinReason;

/// Counts what would keep a session on its connection: temporary objects, session advisory
/// locks, LISTEN channels, cursors WITH HOLD, SQL-level prepared statements. Zero: the session
/// can move (parameters are tracked; protocol-level statements are sluice's own).
pub const PIN_CHECK_SQL: &str = "SELECT \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_catalog.pg_type WHERE typnamespace = pg_catalog.pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_catalog.pg_locks \
       WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
    + (SELECT count(*) FROM pg_catalog.pg_listening_channels()) \
    + (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable) \
    + (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)";

/// What running `sql` may do to its session's server-side state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// The first reason the statement pins its session.
    pub pin: Option<PinReason>,
    /// It may change session parameters (`SET`, `RESET`, `set_config`): read them back after.
    pub settings: bool,
    /// It may drop what pins a session: a pinned session checks the server after.
    pub unpin_hint: bool,
    /// `LOAD`: a library stays loaded whatever else is undone, so the pin never lifts.
    pub permanent: bool,
}

/// The first reason `sql` would pin its session, if any.
pub fn pin_reason(sql: &[u8]) -> Option<PinReason> {
    effects(sql).pin
}

/// Scans `sql` once for everything the session must know about it.
pub fn effects(sql: &[u8]) -> Effects {
    let mut out = Effects::default();
    let mut words = Words::new(sql);
    let mut at_start = true;
    let mut stmt: [&[u8]; 4] = [b""; 4];
    let mut index = 0usize;
    let mut prev = Kw::Other;
    let mut in_declare = false;
    fn pin(out: &mut Effects, r: PinReason) {
        if out.pin.is_none() {
            out.pin = Some(r);
        }
    }
    while let Some(tok) = words.next_token() {
        let word = match tok {
            Token::Semicolon => {
                at_start = true;
                index = 0;
                in_declare = false;
                continue;
            }
            Token::Word(w) => w,
            _ => continue, // only in detailed mode
        };
        if index < 4 {
            stmt[index] = word;
        }
        index += 1;
        if at_start {
            at_start = false;
            match leading_keyword(word) {
                Some(Leading::Pin(r)) => {
                    out.permanent |= r == PinReason::Load;
                    pin(&mut out, r);
                }
                Some(Leading::Settings) => out.settings = true,
                None => {}
            }
            in_declare = is(word, "declare");
        } else if index <= 4 {
            match second_words(&stmt, index) {
                Some(Leading::Pin(r)) => pin(&mut out, r),
                Some(Leading::Settings) => out.settings = true,
                None => {}
            }
        }
        let kw = keyword(word);
        match kw {
            Kw::AdvisoryLock => pin(&mut out, PinReason::AdvisoryLock),
            Kw::SetConfig => out.settings = true,
            Kw::PgTemp => pin(&mut out, PinReason::TempObject),
            Kw::Temp if prev == Kw::Into => pin(&mut out, PinReason::TempObject),
            Kw::Hold if in_declare && prev == Kw::With => {
                pin(&mut out, PinReason::CursorWithHold);
            }
            Kw::Release => out.unpin_hint = true,
            _ => {}
        }
        prev = kw;
    }
    out
}

/// The words `effects` looks for anywhere in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    AdvisoryLock,
    SetConfig,
    PgTemp,
    /// `temp` or `temporary`.
    Temp,
    Into,
    With,
    Hold,
    /// A word of a statement that may drop what pins a session (checked on the server after).
    Release,
    Other,
}

/// Which of `effects`' words `word` is. Every word of every query comes through here, so it
/// dispatches on the length and compares only the keywords of that length (callgrind: a compare
/// per keyword per word was most of the pinning scan's cost).
fn keyword(word: &[u8]) -> Kw {
    let kw = |k: &str, kw: Kw| if is(word, k) { kw } else { Kw::Other };
    match word.len() {
        4 => match word[0] | 0x20 {
            b't' => kw("temp", Kw::Temp),
            b'i' => kw("into", Kw::Into),
            b'w' => kw("with", Kw::With),
            b'h' => kw("hold", Kw::Hold),
            b'd' => kw("drop", Kw::Release),
            _ => Kw::Other,
        },
        5 => kw("close", Kw::Release),
        7 => match word[0] | 0x20 {
            b'p' => kw("pg_temp", Kw::PgTemp),
            _ => kw("discard", Kw::Release),
        },
        8 => kw("unlisten", Kw::Release),
        9 => kw("temporary", Kw::Temp),
        10 => match word[0] | 0x20 {
            b's' => kw("set_config", Kw::SetConfig),
            _ => kw("deallocate", Kw::Release),
        },
        16 => kw("pg_advisory_lock", Kw::AdvisoryLock),
        20 => kw("pg_try_advisory_lock", Kw::AdvisoryLock),
        23 => kw("pg_advisory_lock_shared", Kw::AdvisoryLock),
        27 => kw("pg_try_advisory_lock_shared", Kw::AdvisoryLock),
        18 => kw("pg_advisory_unlock", Kw::Release),
        22 => kw("pg_advisory_unlock_all", Kw::Release),
        25 => kw("pg_advisory_unlock_shared", Kw::Release),
        _ => Kw::Other,
    }
}

/// What a `DEALLOCATE` statement frees, when the statement is exactly that.
#[derive(Debug, PartialEq, Eq)]
pub enum Deallocate {
    All,
    /// The statement name as the server would see it (unquoted identifiers fold to lower case).
    Name(Vec<u8>),
}

/// Recognises `DEALLOCATE [PREPARE] name|ALL [;]`, the SQL that drivers such as psycopg (before
/// libpq 17) and ActiveRecord use to free protocol-level statements.
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let mut words = Words::new(sql);
    let Some(Token::Word(first)) = words.next_token() else {
        return None;
    };
    if !is(first, "deallocate") {
        return None;
    }
    let mut target = match words.next_token() {
        Some(Token::Word(w)) => w,
        _ => return None,
    };
    if is(target, "prepare") {
        target = match words.next_token() {
            Some(Token::Word(w)) => w,
            _ => return None,
        };
    }
    match words.next_token() {
        None | Some(Token::Semicolon) if words.next_token().is_none() => {}
        _ => return None,
    }
    // A quoted name was skipped by the scanner: leave those to the server.
    if sql.contains(&b'"') {
        return None;
    }
    Some(if is(target, "all") {
        Deallocate::All
    } else {
        Deallocate::Name(target.to_ascii_lowercase())
    })
}

/// `DISCARD ALL [;]` and nothing else.
pub fn discard_all(sql: &[u8]) -> bool {
    let mut words = Words::new(sql);
    let (Some(Token::Word(a)), Some(Token::Word(b))) = (words.next_token(), words.next_token())
    else {
        return false;
    };
    let end = match words.next_token() {
        None => true,
        Some(Token::Semicolon) => words.next_token().is_none(),
        Some(_) => false,
    };
    end && is(a, "discard") && is(b, "all")
}

enum Leading {
    Pin(PinReason),
    Settings,
}

fn leading_keyword(word: &[u8]) -> Option<Leading> {
    if is(word, "listen") {
        Some(Leading::Pin(PinReason::Listen))
    } else if is(word, "load") {
        Some(Leading::Pin(PinReason::Load))
    } else if is(word, "reset") {
        Some(Leading::Settings)
    } else {
        None
    }
}

/// Decisions that need the second or third word of a statement.
fn second_words(stmt: &[&[u8]; 4], index: usize) -> Option<Leading> {
    let first = stmt[0];
    if index == 2 && is(first, "set") {
        let w = stmt[1];
        // SET LOCAL and SET TRANSACTION end with the transaction; the rest is tracked.
        let scoped = is(w, "local") || is(w, "transaction") || is(w, "constraints");
        return (!scoped).then_some(Leading::Settings);
    }
    if index == 2 && is(first, "prepare") && !is(stmt[1], "transaction") {
        return Some(Leading::Pin(PinReason::SqlPrepare));
    }
    if is(first, "create") {
        let temp = |w: &[u8]| is(w, "temp") || is(w, "temporary");
        let scope = |w: &[u8]| is(w, "local") || is(w, "global");
        let or_replace = index == 4 && is(stmt[1], "or") && is(stmt[2], "replace");
        if (index == 2 && temp(stmt[1]))
            || (index == 3 && scope(stmt[1]) && temp(stmt[2]))
            || (or_replace && temp(stmt[3]))
        {
            return Some(Leading::Pin(PinReason::TempObject));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use PinReason::*;

    #[test]
    fn pins() {
        let cases: &[(&str, Option<PinReason>)] = &[
            ("select 1", None),
            ("PREPARE q AS select 1", Some(SqlPrepare)),
            ("PREPARE TRANSACTION 'x'", None),
            ("create temp table t (a int)", Some(TempObject)),
            ("CREATE LOCAL TEMPORARY TABLE t (a int)", Some(TempObject)),
            ("create table pg_temp.t (a int)", Some(TempObject)),
            ("create table temp (a int)", None),
            ("select * into temp t from x", Some(TempObject)),
            ("LISTEN chan", Some(Listen)),
            ("select pg_advisory_lock(1)", Some(AdvisoryLock)),
            ("select pg_advisory_xact_lock(1)", None),
            (
                "declare c cursor with hold for select 1",
                Some(CursorWithHold),
            ),
            ("declare c cursor without hold for select 1", None),
            ("LOAD 'auto_explain'", Some(Load)),
            (
                "create or replace temp view v as select 1",
                Some(TempObject),
            ),
            ("select date'\\'; listen x; --'", Some(Listen)),
            // What these reset shows in their outcome (CommandComplete), not their text.
            ("select 1; discard all", None),
            ("DEALLOCATE ALL", None),
            ("discard temp", None),
        ];
        for (sql, want) in cases {
            assert_eq!(pin_reason(sql.as_bytes()), *want, "{sql}");
        }
    }

    #[test]
    fn parameters_are_tracked_not_pinned() {
        let tracked = [
            "SET search_path = x",
            "set session statement_timeout = 5",
            "begin; set session characteristics as transaction read only",
            "RESET ALL",
            "select set_config('a.b', '1', false)",
            "select date'\\'; set role x; --'",
            "/* c */ SET x = 1",
        ];
        for sql in tracked {
            let e = effects(sql.as_bytes());
            assert_eq!((e.pin, e.settings), (None, true), "{sql}");
        }
        let scoped = [
            "set local statement_timeout = 5",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "set constraints all deferred",
            "update t set x = 1",
            "create function f() returns int set search_path = x as 'select 1' language sql",
        ];
        for sql in scoped {
            assert_eq!(effects(sql.as_bytes()), Effects::default(), "{sql}");
        }
    }

    #[test]
    fn release_hints() {
        for sql in [
            "drop table t",
            "DISCARD TEMP",
            "unlisten *",
            "select pg_advisory_unlock_all()",
            "close c",
            "create temp table t (x int) on commit drop",
        ] {
            assert!(effects(sql.as_bytes()).unpin_hint, "{sql}");
        }
        assert!(!effects(b"select 1").unpin_hint);
        assert!(effects(b"load 'x'").permanent);
    }

    /// Each keyword of the length dispatch, in both cases: a wrong length or first letter there
    /// would drop a pin silently.
    #[test]
    fn every_keyword_is_found_in_any_case() {
        let pins = [
            ("select pg_advisory_lock(1)", AdvisoryLock),
            ("select pg_try_advisory_lock(1)", AdvisoryLock),
            ("select pg_advisory_lock_shared(1)", AdvisoryLock),
            ("select pg_try_advisory_lock_shared(1)", AdvisoryLock),
            ("create table pg_temp.t (a int)", TempObject),
            ("select * into temp t from x", TempObject),
            ("select * into temporary t from x", TempObject),
            ("declare c cursor with hold for select 1", CursorWithHold),
        ];
        for (sql, want) in pins {
            for sql in [sql.to_owned(), sql.to_uppercase()] {
                assert_eq!(pin_reason(sql.as_bytes()), Some(want), "{sql}");
            }
        }
        let releases = [
            "drop table t",
            "close c",
            "discard temp",
            "unlisten x",
            "deallocate x",
            "select pg_advisory_unlock(1)",
            "select pg_advisory_unlock_all()",
            "select pg_advisory_unlock_shared(1)",
        ];
        for sql in releases {
            for sql in [sql.to_owned(), sql.to_uppercase()] {
                assert!(effects(sql.as_bytes()).unpin_hint, "{sql}");
            }
        }
        for sql in [
            "select set_config('a.b', '1', false)",
            "SELECT SET_CONFIG('a.b', '1', false)",
        ] {
            assert!(effects(sql.as_bytes()).settings, "{sql}");
        }
        for sql in ["select temp from with_hold", "select hold, into_x from t"] {
            assert_eq!(effects(sql.as_bytes()), Effects::default(), "{sql}");
        }
    }

    #[test]
    fn deallocate_statements() {
        assert_eq!(
            deallocate(b"DEALLOCATE _pg3_5"),
            Some(Deallocate::Name(b"_pg3_5".to_vec()))
        );
        assert_eq!(
            deallocate(b"deallocate prepare A1;"),
            Some(Deallocate::Name(b"a1".to_vec()))
        );
        assert_eq!(deallocate(b" DEALLOCATE ALL "), Some(Deallocate::All));
        assert_eq!(deallocate(b"DEALLOCATE a; select 1"), None);
        assert_eq!(deallocate(b"DEALLOCATE \"Mixed\""), None);
        assert_eq!(deallocate(b"select 1"), None);
        assert!(discard_all(b"DISCARD ALL;"));
        assert!(!discard_all(b"discard temp"));
        assert!(!discard_all(b"discard all; select 1"));
    }

    #[test]
    fn ignores_literals_and_comments() {
        let cases = [
            "select 'set x = 1; listen y'",
            "select E'it\\'s; listen y'",
            "select $$; listen y$$",
            "select $body$ listen $body$",
            "-- listen y\nselect 1",
            "/* listen /* nested */ y */ select 1",
            "select \"listen\" from t",
            "select $1::int",
        ];
        for sql in cases {
            assert_eq!(pin_reason(sql.as_bytes()), None, "{sql}");
        }
        assert_eq!(pin_reason(b"select 1; listen y"), Some(Listen));
        assert_eq!(pin_reason(b"/* c */ LISTEN x"), Some(Listen));
    }
}
