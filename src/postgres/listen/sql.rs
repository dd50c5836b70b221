//! The statements that change a session's subscriptions, and the savepoint statements that can
//! undo such a change before its commit: recognised only when a query is exactly one of them.

use crate::postgres::scan::{Token, Words, is};

/// Longest identifier Postgres keeps (NAMEDATALEN - 1); longer ones are truncated.
const MAX_IDENTIFIER: usize = 63;

/// What a statement does to the session's subscriptions, or to the savepoints that scope them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Listen(Box<str>),
    Unlisten(Box<str>),
    UnlistenAll,
    Savepoint(Box<str>),
    RollbackTo(Box<str>),
    Release(Box<str>),
}

/// A `LISTEN` or `UNLISTEN` statement sluice takes over: the change it asks for, and for
/// `LISTEN` where its keyword starts. The server gets `UNLISTEN` with the same operand instead:
/// the same syntax check and transaction rules (an aborted transaction refuses it), and nothing
/// left on a pooled connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscription {
    pub op: Op,
    pub listen_at: Option<usize>,
}

/// `LISTEN name`, `UNLISTEN name` or `UNLISTEN *`, alone in `sql` (a trailing `;` and comments
/// allowed). Anything else (several statements, `U&"..."` names) is left to the server as
/// before: it pins.
pub fn subscription(sql: &[u8]) -> Option<Subscription> {
    let mut words = Words::detailed(sql);
    let Some(Token::Word(keyword)) = words.next_token() else {
        return None;
    };
    let listen = is(keyword, "listen");
    if !listen && !is(keyword, "unlisten") {
        return None;
    }
    let operand = words.next_token()?;
    if !at_end(&mut words) {
        return None;
    }
    let op = match operand {
        Token::Punct(b'*') if !listen => Op::UnlistenAll,
        Token::Punct(_) => return None,
        other => {
            let name = identifier(&other)?;
            if listen {
                Op::Listen(name)
            } else {
                Op::Unlisten(name)
            }
        }
    };
    let listen_at = listen.then(|| keyword.as_ptr() as usize - sql.as_ptr() as usize);
    Some(Subscription { op, listen_at })
}

/// The `UNLISTEN name` and `UNLISTEN *` statements of a query of several statements, in order.
/// (They run on the server unchanged; the session's subscriptions must follow them.)
pub fn unlistens(sql: &[u8]) -> Vec<Op> {
    let mut out = Vec::new();
    let mut words = Words::detailed(sql);
    let mut statement: Vec<Token<'_>> = Vec::new();
    loop {
        let token = words.next_token();
        if matches!(token, None | Some(Token::Semicolon)) {
            if let [Token::Word(w), operand] = &statement[..]
                && is(w, "unlisten")
            {
                match operand {
                    Token::Punct(b'*') => out.push(Op::UnlistenAll),
                    other => out.extend(identifier(other).map(Op::Unlisten)),
                }
            }
            statement.clear();
            if token.is_none() {
                return out;
            }
        } else if let Some(t) = token {
            statement.push(t);
        }
    }
}

/// `SAVEPOINT name`, `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name` or
/// `RELEASE [SAVEPOINT] name`, alone in `sql`.
pub fn savepoint(sql: &[u8]) -> Option<Op> {
    let mut words = Words::detailed(sql);
    let Some(Token::Word(first)) = words.next_token() else {
        return None;
    };
    let mut next = words.next_token()?;
    let make: fn(Box<str>) -> Op = if is(first, "savepoint") {
        Op::Savepoint
    } else if is(first, "release") {
        if matches!(next, Token::Word(w) if is(w, "savepoint")) {
            next = words.next_token()?;
        }
        Op::Release
    } else if is(first, "rollback") {
        if matches!(next, Token::Word(w) if is(w, "work") || is(w, "transaction")) {
            next = words.next_token()?;
        }
        if !matches!(next, Token::Word(w) if is(w, "to")) {
            return None;
        }
        next = words.next_token()?;
        if matches!(next, Token::Word(w) if is(w, "savepoint")) {
            next = words.next_token()?;
        }
        Op::RollbackTo
    } else {
        return None;
    };
    let name = identifier(&next)?;
    at_end(&mut words).then(|| make(name))
}

/// Nothing follows but one `;`.
fn at_end(words: &mut Words<'_>) -> bool {
    match words.next_token() {
        None => true,
        Some(Token::Semicolon) => words.next_token().is_none(),
        Some(_) => false,
    }
}

/// The name Postgres makes of an identifier token: unquoted ones fold ASCII letters to lower
/// case, quoted ones keep their case with `""` meaning `"`; both are cut to 63 bytes.
fn identifier(token: &Token<'_>) -> Option<Box<str>> {
    let name = match token {
        Token::Word(w) => std::str::from_utf8(w).ok()?.to_ascii_lowercase(),
        Token::Quoted(q) if !q.is_empty() => std::str::from_utf8(q).ok()?.replace("\"\"", "\""),
        _ => return None,
    };
    let mut end = name.len().min(MAX_IDENTIFIER);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some(name[..end].into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn op(sql: &str) -> Option<Op> {
        subscription(sql.as_bytes()).map(|s| s.op)
    }

    #[test]
    fn listen_and_unlisten_alone_are_recognised_with_the_names_postgres_makes() {
        assert_eq!(op("LISTEN Jobs"), Some(Op::Listen("jobs".into())));
        assert_eq!(op("  listen \"Jobs\";"), Some(Op::Listen("Jobs".into())));
        assert_eq!(op("listen \"a\"\"b\""), Some(Op::Listen("a\"b".into())));
        assert_eq!(
            op("/* c */ UNLISTEN x -- done"),
            Some(Op::Unlisten("x".into()))
        );
        assert_eq!(op("unlisten *"), Some(Op::UnlistenAll));
        assert_eq!(op("unlisten * ;"), Some(Op::UnlistenAll));
        let long = format!("listen {}", "a".repeat(70));
        assert_eq!(op(&long), Some(Op::Listen("a".repeat(63).into())));
        let wide = format!("listen \"{}\"", "é".repeat(40));
        assert_eq!(op(&wide), Some(Op::Listen("é".repeat(31).into())));
        let s = subscription(b" -- x\n listen y").unwrap();
        assert_eq!(s.listen_at, Some(7));
        assert_eq!(subscription(b"unlisten y").unwrap().listen_at, None);
    }

    #[test]
    fn anything_else_is_left_to_the_server() {
        for sql in [
            "listen",
            "listen *",
            "listen a b",
            "listen a; select 1",
            "select 1; listen a",
            "listen \"\"",
            "listen 1a",
            "listen U&\"a\"",
            "listen a.b",
            "unlisten",
            "notify a",
            "select 'listen a'",
        ] {
            assert_eq!(op(sql), None, "{sql}");
        }
    }

    #[test]
    fn unlistens_among_other_statements_are_found() {
        assert_eq!(
            unlistens(b"select 1; UNLISTEN a; begin; unlisten *; unlisten \"B\"; commit"),
            [
                Op::Unlisten("a".into()),
                Op::UnlistenAll,
                Op::Unlisten("B".into())
            ]
        );
        assert_eq!(unlistens(b"select 'unlisten a'; unlisten a b"), []);
    }

    #[test]
    fn savepoint_statements_are_recognised() {
        let sp = |s: &str| savepoint(s.as_bytes());
        assert_eq!(sp("SAVEPOINT a"), Some(Op::Savepoint("a".into())));
        assert_eq!(sp("release savepoint A;"), Some(Op::Release("a".into())));
        assert_eq!(sp("release a"), Some(Op::Release("a".into())));
        assert_eq!(sp("rollback to a"), Some(Op::RollbackTo("a".into())));
        assert_eq!(
            sp("ROLLBACK WORK TO SAVEPOINT \"B\""),
            Some(Op::RollbackTo("B".into()))
        );
        assert_eq!(sp("rollback"), None);
        assert_eq!(sp("rollback and chain"), None);
        assert_eq!(sp("savepoint a; select 1"), None);
        assert_eq!(sp("select 1"), None);
    }
}
