//! Session parameters that move with their session: which parameters a statement may change,
//! the query that reads their values back from the server once its transaction is over, and
//! the SQL that sets them on whichever connection the session borrows next.
//!
//! The values come from the server (`current_setting`), never from the statement text: a
//! rolled-back `SET`, a `SET` that failed, `SET x TO DEFAULT` and role defaults all come out as
//! Postgres itself resolved them.

use std::ops::Deref;
use std::sync::Arc;

use super::scan::{Token, Words, is};

/// `(name, value)` pairs sorted by name; names in lower case. Shared and copied on change: a
/// session's startup parameters, its current ones and those of the server connection it last
/// set them on are one allocation until one of them changes, and a pool hands sessions that log
/// in with the same parameters one copy (`PgPool::share`). A JDBC client sends five of them:
/// ten strings, twice, in every idle session otherwise.
#[derive(Debug, Clone, Default)]
pub struct Settings(Option<Arc<[(String, String)]>>);

impl Settings {
    /// From pairs already sorted by name, without duplicates.
    pub fn from_sorted(pairs: Vec<(String, String)>) -> Self {
        Self((!pairs.is_empty()).then(|| pairs.into()))
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether both are the same allocation (or both empty): equal without comparing.
    pub fn same(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

impl Deref for Settings {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or_default()
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || **self == **other
    }
}

impl Eq for Settings {}

/// What a query string may do to session parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Parameters to read back after the transaction (lower case).
    pub names: Vec<String>,
    /// `RESET ALL`: every session-level value is gone, sluice's replayed ones included.
    pub reset_all: bool,
    /// Parameters whose last change here is a `RESET`, after any `RESET ALL`: back to the
    /// session's startup value, which the shared connection's `RESET` does not know.
    pub resets: Vec<String>,
    /// Parameters set here after a `RESET ALL` (the reset must not undo them).
    pub set_after_reset_all: bool,
    /// A change sluice cannot name (`set_config` of a computed name, `SET SESSION
    /// AUTHORIZATION`): the session must keep its connection.
    pub untracked: bool,
}

/// The parameters `sql` may change at session level. Called only for statements the pinning
/// scanner flagged, so it may allocate.
pub fn changes(sql: &[u8]) -> Changes {
    let mut out = Changes::default();
    let tokens: Vec<Token<'_>> = std::iter::from_fn({
        let mut words = Words::detailed(sql);
        move || words.next_token()
    })
    .collect();
    for stmt in tokens.split(|t| *t == Token::Semicolon) {
        statement(stmt, &mut out);
        set_config_calls(stmt, &mut out);
    }
    out.names.sort();
    out.names.dedup();
    out
}

fn word(t: Option<&Token<'_>>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if is(w, kw))
}

/// `SET ...` and `RESET ...` at the start of a statement.
fn statement(t: &[Token<'_>], out: &mut Changes) {
    let reset = word(t.first(), "reset");
    if !reset && !word(t.first(), "set") {
        return;
    }
    let mut i = 1;
    if word(t.get(1), "local") || word(t.get(1), "transaction") || word(t.get(1), "constraints") {
        return; // over with the transaction
    }
    if word(t.get(1), "session") {
        if word(t.get(2), "authorization") {
            out.untracked = true;
            return;
        }
        if word(t.get(2), "characteristics") {
            for name in [
                "default_transaction_isolation",
                "default_transaction_read_only",
                "default_transaction_deferrable",
            ] {
                note(out, name, false);
                out.names.push(name.into());
            }
            return;
        }
        i = 2;
    }
    let next = t.get(i + 1);
    let name = match t.get(i) {
        Some(Token::Word(w)) if reset && is(w, "all") => {
            out.reset_all = true;
            out.resets.clear();
            out.set_after_reset_all = false;
            return;
        }
        Some(Token::Word(w)) if is(w, "time") && word(next, "zone") => "timezone".into(),
        Some(Token::Word(w)) if is(w, "xml") && word(next, "option") => "xmloption".into(),
        Some(Token::Word(w)) if !reset && is(w, "names") => "client_encoding".into(),
        Some(Token::Word(w)) if !reset && is(w, "schema") => "search_path".into(),
        _ => match dotted_name(&t[i.min(t.len())..]) {
            Some(name) => name,
            None => {
                out.untracked = true;
                return;
            }
        },
    };
    note(out, &name, reset);
    out.names.push(name);
}

impl Changes {
    /// Takes in the changes of a later query of the same transaction: the same rules as
    /// between the statements of one query (`note`), so the last change of each name wins.
    pub fn then(&mut self, later: Changes) {
        if later.reset_all {
            self.reset_all = true;
            self.resets.clear();
            self.set_after_reset_all = later.set_after_reset_all;
        } else {
            let sets = later.names.iter().any(|n| !later.resets.contains(n));
            self.set_after_reset_all |= self.reset_all && sets;
        }
        // Set later (not reset): no longer reset.
        self.resets
            .retain(|n| !later.names.contains(n) || later.resets.contains(n));
        for name in later.resets {
            if !self.resets.contains(&name) {
                self.resets.push(name);
            }
        }
        for name in later.names {
            if !self.names.contains(&name) {
                self.names.push(name);
            }
        }
        self.untracked |= later.untracked;
    }
}

/// The last change to `name` so far was a `RESET` (or a `SET`).
fn note(out: &mut Changes, name: &str, reset: bool) {
    out.resets.retain(|n| n != name);
    if reset {
        out.resets.push(name.to_owned());
    }
    out.set_after_reset_all |= out.reset_all && !reset;
}

/// `name` or `"Name"`, with `.`-separated parts (custom parameters such as `app.tenant`).
fn dotted_name(t: &[Token<'_>]) -> Option<String> {
    let mut name = String::new();
    let mut i = 0;
    loop {
        match t.get(i)? {
            Token::Word(w) => name.push_str(&String::from_utf8_lossy(w)),
            Token::Quoted(q) => name.push_str(&String::from_utf8_lossy(q).replace("\"\"", "\"")),
            _ => return None,
        }
        if t.get(i + 1) != Some(&Token::Punct(b'.')) {
            return Some(name.to_lowercase());
        }
        name.push('.');
        i += 2;
    }
}

/// `set_config('name', value, is_local)` anywhere in a statement; a literal `true` for
/// `is_local` ends with the transaction.
fn set_config_calls(t: &[Token<'_>], out: &mut Changes) {
    for (at, tok) in t.iter().enumerate() {
        if !matches!(tok, Token::Word(w) if is(w, "set_config")) {
            continue;
        }
        if t.get(at + 1) != Some(&Token::Punct(b'(')) {
            continue; // a column or a word in another role
        }
        let args = arguments(&t[at + 2..]);
        let name = match args.first() {
            Some([Token::Str(s)]) => String::from_utf8_lossy(s).replace("''", "'"),
            _ => {
                out.untracked = true;
                continue;
            }
        };
        let local = matches!(args.get(2), Some([Token::Word(w)]) if is(w, "true"));
        if !local {
            let name = name.to_lowercase();
            note(out, &name, false);
            out.names.push(name);
        }
    }
}

/// The comma-separated arguments of a call, up to its closing parenthesis.
fn arguments<'t, 'a>(t: &'t [Token<'a>]) -> Vec<&'t [Token<'a>]> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, tok) in t.iter().enumerate() {
        match tok {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') if depth == 0 => {
                args.push(&t[start..i]);
                return args;
            }
            Token::Punct(b')') => depth -= 1,
            Token::Punct(b',') if depth == 0 => {
                args.push(&t[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(&t[start..]);
    args
}

/// One row per name: the name and its value now, NULL for a custom parameter never defined.
pub fn read_back_sql(names: &[String]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("E'{}'", quote(n))).collect();
    format!(
        "SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) AS n",
        list.join(", ")
    )
}

/// SQL that turns a connection's settings (`have`) into a session's (`want`); both sorted.
/// A parameter reset to its default loses what `init_query` set too, so the init query runs
/// again after resets (or when `rerun_init`) and every wanted value is set after it.
/// `set_config` takes the raw string as a startup parameter would (lists like search_path).
pub fn replay_sql(
    have: &[(String, String)],
    want: &[(String, String)],
    init: &str,
    rerun_init: bool,
) -> String {
    let mut sql = String::new();
    for (name, _) in have {
        if !want.iter().any(|(n, _)| n == name) {
            sql.push_str(&format!("RESET \"{}\"; ", name.replace('"', "\"\"")));
        }
    }
    let init_ran = (rerun_init || !sql.is_empty()) && !init.is_empty();
    if init_ran {
        sql.push_str(init);
        sql.push_str("; ");
    }
    let sets: Vec<String> = want
        .iter()
        .filter(|&(name, value)| init_ran || !have.iter().any(|(n, v)| n == name && v == value))
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config(E'{}', E'{}', false)",
                quote(name),
                quote(value)
            )
        })
        .collect();
    if !sets.is_empty() {
        sql.push_str("SELECT ");
        sql.push_str(&sets.join(", "));
    }
    sql.trim_end_matches("; ").to_owned()
}

/// Body of an `E'...'` literal: means the same whatever `standard_conforming_strings` is.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

/// Sets `name` to `value` (None: removes it) in `settings`; a copy only if it changes.
pub fn put(settings: &mut Settings, name: &str, value: Option<&str>) {
    let at = settings.binary_search_by(|(n, _)| n.as_str().cmp(name));
    let mut pairs = match (at, value) {
        (Ok(i), Some(v)) if settings[i].1 == v => return,
        (Err(_), None) => return,
        _ => settings.to_vec(),
    };
    match (at, value) {
        (Ok(i), Some(v)) => v.clone_into(&mut pairs[i].1),
        (Ok(i), None) => {
            pairs.remove(i);
        }
        (Err(i), Some(v)) => pairs.insert(i, (name.to_owned(), v.to_owned())),
        (Err(_), None) => {}
    }
    *settings = Settings::from_sorted(pairs);
}

#[cfg(test)]
mod tests;
