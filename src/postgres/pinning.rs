//! Which SQL leaves session state on the server that sluice cannot move: a keyword scanner that
//! understands comments, quotes and dollar quoting, costing a pass over the bytes, not a parse.

use crate::session::PinReason;

/// Words of one statement, outside literals and comments, lowercased on compare.
struct Words<'a> {
    sql: &'a [u8],
    pos: usize,
}

enum Token<'a> {
    Word(&'a [u8]),
    Semicolon,
}

impl<'a> Words<'a> {
    #[inline]
    fn next_token(&mut self) -> Option<Token<'a>> {
        let s = self.sql;
        while self.pos < s.len() {
            let c = s[self.pos];
            match c {
                b';' => {
                    self.pos += 1;
                    return Some(Token::Semicolon);
                }
                b'-' if s.get(self.pos + 1) == Some(&b'-') => {
                    self.pos = memchr(b'\n', s, self.pos).unwrap_or(s.len());
                }
                b'/' if s.get(self.pos + 1) == Some(&b'*') => self.skip_block_comment(),
                b'\'' => self.skip_quoted(b'\'', self.escape_string_prefix()),
                b'"' => self.skip_quoted(b'"', false),
                b'$' => self.skip_dollar(),
                c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                    let start = self.pos;
                    while self.pos < s.len()
                        && (s[self.pos].is_ascii_alphanumeric()
                            || s[self.pos] == b'_'
                            || s[self.pos] == b'$'
                            || s[self.pos] >= 0x80)
                    {
                        self.pos += 1;
                    }
                    return Some(Token::Word(&s[start..self.pos]));
                }
                _ => self.pos += 1,
            }
        }
        None
    }

    /// `E'...'` (backslash escapes) only when the `e` is a token of its own, not the end of a
    /// word such as `date'...'`.
    fn escape_string_prefix(&self) -> bool {
        let s = self.sql;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        self.pos > 0
            && s[self.pos - 1].eq_ignore_ascii_case(&b'e')
            && (self.pos < 2 || !ident(s[self.pos - 2]))
    }

    fn skip_block_comment(&mut self) {
        let s = self.sql;
        let mut depth = 0usize;
        while self.pos < s.len() {
            if s[self.pos] == b'/' && s.get(self.pos + 1) == Some(&b'*') {
                depth += 1;
                self.pos += 2;
            } else if s[self.pos] == b'*' && s.get(self.pos + 1) == Some(&b'/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        let s = self.sql;
        self.pos += 1;
        while self.pos < s.len() {
            let c = s[self.pos];
            if backslash_escapes && c == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if c == quote {
                if s.get(self.pos) == Some(&quote) {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// `$tag$ ... $tag$`; a `$` that does not open a dollar quote (e.g. `$1`) is skipped.
    fn skip_dollar(&mut self) {
        let s = self.sql;
        let start = self.pos;
        let mut end = start + 1;
        while end < s.len() && (s[end].is_ascii_alphanumeric() || s[end] == b'_') {
            end += 1;
        }
        if end >= s.len() || s[end] != b'$' || s.get(start + 1).is_some_and(u8::is_ascii_digit) {
            self.pos = start + 1;
            return;
        }
        let tag = &s[start..=end];
        let body = end + 1;
        self.pos = s[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map_or(s.len(), |i| body + i + tag.len());
    }
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| from + i)
}

#[inline]
fn is(word: &[u8], kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw.as_bytes())
}

/// The first reason `sql` would pin its session, if any.
pub fn pin_reason(sql: &[u8]) -> Option<PinReason> {
    let mut words = Words { sql, pos: 0 };
    let mut at_start = true;
    let mut stmt: [&[u8]; 4] = [b""; 4];
    let mut index = 0usize;
    let mut prev: &[u8] = b"";
    let mut in_declare = false;
    while let Some(tok) = words.next_token() {
        let word = match tok {
            Token::Semicolon => {
                at_start = true;
                index = 0;
                in_declare = false;
                continue;
            }
            Token::Word(w) => w,
        };
        if index < 4 {
            stmt[index] = word;
        }
        index += 1;
        if at_start {
            at_start = false;
            if let Some(r) = leading_keyword(word) {
                return Some(r);
            }
            in_declare = is(word, "declare");
        } else if index <= 4
            && let Some(r) = second_words(&stmt, index)
        {
            return Some(r);
        }
        if is(word, "pg_advisory_lock")
            || is(word, "pg_try_advisory_lock")
            || is(word, "pg_advisory_lock_shared")
            || is(word, "pg_try_advisory_lock_shared")
        {
            return Some(PinReason::AdvisoryLock);
        }
        if is(word, "set_config") {
            return Some(PinReason::SetParameter);
        }
        if is(prev, "into") && (is(word, "temp") || is(word, "temporary")) {
            return Some(PinReason::TempObject);
        }
        if in_declare && is(prev, "with") && is(word, "hold") {
            return Some(PinReason::CursorWithHold);
        }
        prev = word;
    }
    None
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
    let mut words = Words { sql, pos: 0 };
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
    let mut words = Words { sql, pos: 0 };
    let (Some(Token::Word(a)), Some(Token::Word(b))) = (words.next_token(), words.next_token())
    else {
        return false;
    };
    let end = match words.next_token() {
        None => true,
        Some(Token::Semicolon) => words.next_token().is_none(),
        Some(Token::Word(_)) => false,
    };
    end && is(a, "discard") && is(b, "all")
}

fn leading_keyword(word: &[u8]) -> Option<PinReason> {
    if is(word, "listen") {
        Some(PinReason::Listen)
    } else if is(word, "load") {
        Some(PinReason::Load)
    } else if is(word, "reset") {
        Some(PinReason::SetParameter)
    } else if is(word, "deallocate") {
        Some(PinReason::SessionReset)
    } else {
        None
    }
}

/// Decisions that need the second or third word of a statement.
fn second_words(stmt: &[&[u8]; 4], index: usize) -> Option<PinReason> {
    let first = stmt[0];
    if index == 2 && is(first, "set") {
        let w = stmt[1];
        // SET LOCAL and SET TRANSACTION end with the transaction; SET SESSION AUTHORIZATION,
        // SET ROLE and plain SET stay.
        let scoped = is(w, "local") || is(w, "transaction") || is(w, "constraints");
        return (!scoped).then_some(PinReason::SetParameter);
    }
    if index == 2 && is(first, "discard") && is(stmt[1], "all") {
        return Some(PinReason::SessionReset);
    }
    if index == 2 && is(first, "prepare") && !is(stmt[1], "transaction") {
        return Some(PinReason::SqlPrepare);
    }
    if is(first, "create") {
        let temp = |w: &[u8]| is(w, "temp") || is(w, "temporary");
        let scope = |w: &[u8]| is(w, "local") || is(w, "global");
        let or_replace = index == 4 && is(stmt[1], "or") && is(stmt[2], "replace");
        if (index == 2 && temp(stmt[1]))
            || (index == 3 && scope(stmt[1]) && temp(stmt[2]))
            || (or_replace && temp(stmt[3]))
        {
            return Some(PinReason::TempObject);
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
            ("SET search_path = x", Some(SetParameter)),
            ("set local statement_timeout = 5", None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            (
                "begin; set session characteristics as transaction read only",
                Some(SetParameter),
            ),
            ("RESET ALL", Some(SetParameter)),
            ("select set_config('a.b', '1', false)", Some(SetParameter)),
            ("PREPARE q AS select 1", Some(SqlPrepare)),
            ("PREPARE TRANSACTION 'x'", None),
            ("create temp table t (a int)", Some(TempObject)),
            ("CREATE LOCAL TEMPORARY TABLE t (a int)", Some(TempObject)),
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
            ("select date'\\'; set role x; --'", Some(SetParameter)),
            ("select 1; discard all", Some(SessionReset)),
            ("DEALLOCATE ALL", Some(SessionReset)),
            ("discard temp", None),
        ];
        for (sql, want) in cases {
            assert_eq!(pin_reason(sql.as_bytes()), *want, "{sql}");
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
        assert_eq!(pin_reason(b"/* c */ SET x = 1"), Some(SetParameter));
    }
}
