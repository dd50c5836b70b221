//! Which statements change which parameters, and the SQL that reads and replays them.

use super::*;

fn names(sql: &str) -> Vec<String> {
    let c = changes(sql.as_bytes());
    assert!(!c.untracked && !c.reset_all, "{sql}: {c:?}");
    c.names
}

#[test]
fn statements_name_the_parameters_they_change() {
    assert_eq!(names("SET search_path TO a, \"B\""), ["search_path"]);
    assert_eq!(
        names("set session Statement_Timeout = '5s'"),
        ["statement_timeout"]
    );
    assert_eq!(
        names("SET app.Tenant = 7; set \"My\".\"X\" to 1"),
        ["app.tenant", "my.x"]
    );
    assert_eq!(names("set time zone 'UTC'; reset time zone"), ["timezone"]);
    assert_eq!(
        names("SET NAMES 'UTF8'; set schema 'x'"),
        ["client_encoding", "search_path"]
    );
    assert_eq!(names("set role app; reset role"), ["role"]);
    assert_eq!(names("set xml option document"), ["xmloption"]);
    assert_eq!(
        names("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        [
            "default_transaction_deferrable",
            "default_transaction_isolation",
            "default_transaction_read_only"
        ]
    );
    assert_eq!(
        names("select set_config('App.X', $1, false), pg_catalog.set_config('b', 'v', $3)"),
        ["app.x", "b"]
    );
    assert!(names("select set_config('a.b', 'v', true)").is_empty());
    assert!(names("set local work_mem = '1MB'; SET TRANSACTION READ ONLY").is_empty());
    assert!(names("update t set x = 1; select 'set y = 2'").is_empty());
}

#[test]
fn what_cannot_be_named_is_untracked() {
    assert!(changes(b"SET SESSION AUTHORIZATION bob").untracked);
    assert!(changes(b"reset session authorization").untracked);
    assert!(changes(b"select set_config(name, 'v', false) from t").untracked);
    let all = changes(b"RESET ALL; SET a.b = 1");
    assert!(all.reset_all && !all.untracked);
    assert_eq!(all.names, ["a.b"]);
}

#[test]
fn read_back_quotes_names() {
    assert_eq!(
        read_back_sql(&["a'b".into(), "search_path".into()]),
        "SELECT n, pg_catalog.current_setting(n, true) FROM \
         pg_catalog.unnest(ARRAY[E'a''b', E'search_path']::pg_catalog.text[]) AS n"
    );
}

#[test]
fn replay_sets_what_differs_and_resets_what_is_gone() {
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let have = vec![s("application_name", "old"), s("timezone", "UTC")];
    let want = vec![s("application_name", "it's"), s("search_path", "a,b")];
    let slash = vec![s("application_name", "a\\'b")];
    assert_eq!(
        replay_sql(&[], &slash, "", false),
        "SELECT pg_catalog.set_config(E'application_name', E'a\\\\''b', false)"
    );
    assert_eq!(
        replay_sql(&have, &want, "", false),
        "RESET \"timezone\"; SELECT pg_catalog.set_config(E'application_name', E'it''s', false), \
         pg_catalog.set_config(E'search_path', E'a,b', false)"
    );
    assert_eq!(replay_sql(&want, &want, "", false), "");
    assert_eq!(replay_sql(&want, &want, "SET jit = off", false), "");
    // A reset undoes the init query's SETs too: it runs again, then every wanted value.
    assert_eq!(
        replay_sql(&have, &have[..1], "SET jit = off", false),
        "RESET \"timezone\"; SET jit = off; \
         SELECT pg_catalog.set_config(E'application_name', E'old', false)"
    );
    assert_eq!(replay_sql(&[], &[], "SET jit = off", true), "SET jit = off");
}

#[test]
fn put_keeps_settings_sorted() {
    let mut s = Settings::default();
    put(&mut s, "b", Some("1"));
    put(&mut s, "a", Some("2"));
    put(&mut s, "b", Some("3"));
    put(&mut s, "c", None);
    assert_eq!(*s, [("a".into(), "2".into()), ("b".into(), "3".into())]);
    let shared = s.clone();
    put(&mut s, "b", Some("3"));
    assert!(s.same(&shared), "an unchanged value keeps the shared copy");
    put(&mut s, "a", None);
    assert_eq!(*s, [("b".into(), "3".into())]);
    assert_eq!(
        *shared,
        [("a".into(), "2".into()), ("b".into(), "3".into())],
        "copied on change"
    );
    put(&mut s, "b", None);
    assert!(s.same(&Settings::default()), "empty holds no allocation");
}

#[test]
fn the_last_change_of_each_name_says_whether_it_was_reset() {
    let c = changes(b"RESET datestyle; SET search_path = a; RESET search_path; RESET timezone");
    assert_eq!(c.resets, ["datestyle", "search_path", "timezone"]);
    let c = changes(b"RESET datestyle; SET datestyle = iso; SELECT set_config('x.y', '1', false)");
    assert!(c.resets.is_empty() && !c.set_after_reset_all, "{c:?}");
    let c = changes(b"RESET search_path; RESET ALL; RESET timezone");
    assert!(c.reset_all && !c.set_after_reset_all, "{c:?}");
    assert_eq!(
        c.resets,
        ["timezone"],
        "a reset before RESET ALL is part of it"
    );
    let c = changes(b"RESET ALL; SET application_name = 'after'");
    assert!(
        c.reset_all && c.set_after_reset_all && c.resets.is_empty(),
        "{c:?}"
    );
    let c = changes(b"SET application_name = 'before'; RESET ALL");
    assert!(c.reset_all && !c.set_after_reset_all, "{c:?}");
}

#[test]
fn a_later_query_of_the_transaction_has_the_last_word() {
    let mut c = changes(b"RESET datestyle; RESET timezone");
    c.then(changes(b"SET datestyle = iso"));
    assert_eq!(c.resets, ["timezone"]);
    assert_eq!(c.names, ["datestyle", "timezone"]);
    c.then(changes(b"RESET ALL"));
    assert!(
        c.reset_all && c.resets.is_empty() && !c.set_after_reset_all,
        "{c:?}"
    );
    c.then(changes(b"RESET search_path"));
    assert!(!c.set_after_reset_all, "{c:?}");
    c.then(changes(b"SET application_name = 'after'"));
    assert!(
        c.set_after_reset_all && c.resets == ["search_path"],
        "{c:?}"
    );
}
