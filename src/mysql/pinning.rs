//! What a MySQL statement does to session state: which pins it sets, whether tracked state may
//! have changed (read back after it), and the names that later lift a pin (temporary tables,
//! SQL prepared statements, named locks). One pass of the tokenizer; no allocation unless a
//! statement creates or drops something.

use super::scan::{Token, Tokens};
use super::state::tracked_slot;
use crate::session::PinReason;

/// A change sluice applies once the statement succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    TempCreated(&'a [u8]),
    TableDropped(&'a [u8]),
    Prepared(&'a [u8]),
    Deallocated(&'a [u8]),
    /// `GET_LOCK` of a literal name (`None`: computed, so only RELEASE_ALL_LOCKS lifts it).
    LockTaken(Option<&'a [u8]>),
    LockReleased(&'a [u8]),
    AllLocksReleased,
    TablesUnlocked,
    /// `RENAME TABLE a TO b`, `ALTER TABLE a RENAME TO b`: a temporary table keeps its pin.
    Renamed(&'a [u8], &'a [u8]),
    XaEnded,
    /// `HANDLER t OPEN [AS a]` (the name later statements use) and `HANDLER t CLOSE`.
    HandlerOpened(&'a [u8]),
    HandlerClosed(&'a [u8]),
}

impl Change<'_> {
    /// Whether applying it can only add state (so it counts even when the statement failed).
    pub fn creates(&self) -> bool {
        matches!(
            self,
            Self::TempCreated(_) | Self::Prepared(_) | Self::LockTaken(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Query(u32),
    Connection(u32),
    /// A KILL sluice cannot map (query ids, user names, inside a multi-statement).
    Unsupported,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects<'a> {
    /// One bit per `PinReason` set by the statement.
    pub pin_bits: u32,
    /// Tracked variables or the schema may have changed: read them back afterwards.
    pub read_back: bool,
    /// The next transaction needs this connection (`SET TRANSACTION`).
    pub hold: bool,
    /// The next statement reads this one's result (`SQL_CALC_FOUND_ROWS` then `FOUND_ROWS()`).
    pub soft_hold: bool,
    /// Reads LAST_INSERT_ID(): the session's value must be on the connection first.
    pub last_insert_id: bool,
    pub kill: Option<Kill>,
    pub changes: Vec<Change<'a>>,
}

impl Effects<'_> {
    pub fn pins(&self) -> impl Iterator<Item = PinReason> + '_ {
        PinReason::ALL
            .into_iter()
            .filter(|r| self.pin_bits & (1 << *r as u32) != 0)
    }
}

struct Scan<'a> {
    sql: &'a [u8],
    tokens: std::iter::Peekable<Tokens<'a>>,
    prev: Option<Token<'a>>,
    prev2: Option<Token<'a>>,
    fx: Effects<'a>,
}

pub fn effects(sql: &[u8]) -> Effects<'_> {
    effects_in(sql, true)
}

/// `effects` for a session whose sql_mode may turn backslash escapes off.
pub fn effects_in(sql: &[u8], backslash_escapes: bool) -> Effects<'_> {
    let mut s = Scan {
        sql,
        tokens: Tokens::with_escapes(sql, backslash_escapes).peekable(),
        prev: None,
        prev2: None,
        fx: Effects::default(),
    };
    let mut statements = 0;
    while s.tokens.peek().is_some() {
        statements += 1;
        s.statement();
    }
    if statements > 1 && s.fx.kill.is_some() {
        s.fx.kill = Some(Kill::Unsupported);
    }
    s.fx
}

impl<'a> Scan<'a> {
    fn pin(&mut self, reason: PinReason) {
        self.fx.pin_bits |= 1 << reason as u32;
    }

    /// The statement's next token, `None` at its end; every token passes the checks that apply
    /// anywhere in a statement.
    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.tokens.next()?;
        if t == Token::Semicolon {
            self.prev = None;
            self.prev2 = None;
            return None;
        }
        match t {
            Token::Executable => self.pin(PinReason::ExecutableComment),
            Token::Punct(b'(') => {
                if let Some(Token::Word(f)) = self.prev {
                    let arg = match self.tokens.peek() {
                        Some(Token::Str(s)) => Some(*s),
                        _ => None,
                    };
                    if f.eq_ignore_ascii_case(b"get_lock") {
                        self.pin(PinReason::AdvisoryLock);
                        self.fx.changes.push(Change::LockTaken(arg));
                    } else if f.eq_ignore_ascii_case(b"release_lock") {
                        if let Some(name) = arg {
                            self.fx.changes.push(Change::LockReleased(name));
                        }
                    } else if f.eq_ignore_ascii_case(b"release_all_locks") {
                        self.fx.changes.push(Change::AllLocksReleased);
                    } else if f.eq_ignore_ascii_case(b"last_insert_id") {
                        self.fx.last_insert_id = true;
                    }
                }
            }
            Token::SysVar(v) => {
                let name = v.rsplit(|&b| b == b'.').next().unwrap_or(v);
                if name.eq_ignore_ascii_case(b"identity")
                    || name.eq_ignore_ascii_case(b"last_insert_id")
                {
                    self.fx.last_insert_id = true;
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case(b"sql_calc_found_rows") => {
                self.fx.soft_hold = true
            }
            Token::Punct(b'=')
                if self.prev == Some(Token::Punct(b':'))
                    && matches!(self.prev2, Some(Token::UserVar(_))) =>
            {
                self.pin(PinReason::UserVariable)
            }
            Token::UserVar(_) if self.prev.is_some_and(|p| p.is("into")) => {
                self.pin(PinReason::UserVariable)
            }
            _ => {}
        }
        self.prev2 = self.prev;
        self.prev = Some(t);
        Some(t)
    }

    fn next_word(&mut self) -> Option<&'a [u8]> {
        match self.next()? {
            Token::Word(w) => Some(w),
            _ => None,
        }
    }

    fn rest(&mut self) {
        while self.next().is_some() {}
    }

    /// A possibly qualified name, as written (`db.t`): compared exactly, so two spellings of one
    /// table only ever keep a pin longer.
    fn name(&mut self) -> Option<&'a [u8]> {
        let first = self.next_word()?;
        let mut last = first;
        while self.tokens.peek() == Some(&Token::Punct(b'.')) {
            self.next();
            last = self.next_word()?;
        }
        let start = first.as_ptr() as usize - self.sql.as_ptr() as usize;
        let end = last.as_ptr() as usize - self.sql.as_ptr() as usize + last.len();
        Some(&self.sql[start..end])
    }

    fn statement(&mut self) {
        let Some(first) = self.next() else { return };
        let kw = |k: &str| first.is(k);
        if kw("set") {
            self.set();
        } else if kw("use") {
            self.fx.read_back = true;
        } else if kw("lock") {
            self.pin(PinReason::LockTables);
        } else if kw("unlock") {
            if self.next_word().is_some_and(|w| {
                w.eq_ignore_ascii_case(b"tables") || w.eq_ignore_ascii_case(b"table")
            }) {
                self.fx.changes.push(Change::TablesUnlocked);
            }
        } else if kw("flush") {
            while let Some(t) = self.next() {
                if t.is("lock") || t.is("export") {
                    self.pin(PinReason::LockTables);
                }
            }
        } else if kw("create") {
            self.create();
        } else if kw("drop") {
            self.drop_statement();
        } else if kw("prepare") {
            self.pin(PinReason::SqlPrepare);
            if let Some(name) = self.next_word() {
                self.fx.changes.push(Change::Prepared(name));
            }
            // `PREPARE s FROM 'SET @x = 1'`: what the text does pins now, as it may run later.
            if self.next().is_some_and(|t| t.is("from"))
                && let Some(Token::Str(text)) = self.next()
            {
                let inner = effects(text);
                self.fx.pin_bits |= inner.pin_bits;
                if inner.read_back || inner.hold || inner.kill.is_some() {
                    self.pin(PinReason::DynamicSql);
                }
            }
        } else if kw("deallocate") {
            if self.next().is_some_and(|t| t.is("prepare"))
                && let Some(name) = self.next_word()
            {
                self.fx.changes.push(Change::Deallocated(name));
            }
        } else if kw("handler") {
            self.handler();
        } else if kw("xa") {
            self.pin(PinReason::Xa);
            if self
                .next()
                .is_some_and(|t| t.is("commit") || t.is("rollback"))
            {
                self.fx.changes.push(Change::XaEnded);
            }
        } else if kw("kill") {
            self.kill();
        } else if kw("call") {
            // OUT parameters land in user variables; the body is not visible either way.
            while let Some(t) = self.next() {
                if matches!(t, Token::UserVar(_)) {
                    self.pin(PinReason::UserVariable);
                }
            }
        } else if kw("execute") {
            if self.next().is_some_and(|t| t.is("immediate")) {
                self.pin(PinReason::DynamicSql);
            }
        } else if kw("begin") {
            if self.next().is_some_and(|t| t.is("not")) {
                self.pin(PinReason::DynamicSql);
            }
        } else if kw("rename") {
            self.rename();
        } else if kw("alter") {
            self.alter();
        }
        self.rest();
    }

    fn create(&mut self) {
        let mut temporary = false;
        while let Some(t) = self.next() {
            if t.is("temporary") {
                temporary = true;
            } else if t.is("table") {
                break;
            } else if t.is("sequence") {
                if temporary {
                    self.pin(PinReason::TempObject);
                    if let Some(name) = self.name() {
                        self.fx.changes.push(Change::TempCreated(name));
                    }
                }
                return;
            } else if !(t.is("or") || t.is("replace")) {
                return;
            }
        }
        if !temporary {
            return;
        }
        self.pin(PinReason::TempObject);
        let mut name = self.name();
        if name.is_some_and(|n| n.eq_ignore_ascii_case(b"if")) {
            self.next();
            self.next();
            name = self.name();
        }
        if let Some(name) = name {
            self.fx.changes.push(Change::TempCreated(name));
        }
    }

    fn drop_statement(&mut self) {
        let mut t = self.next();
        if t.is_some_and(|t| t.is("temporary")) {
            t = self.next();
        }
        match t {
            Some(t) if t.is("prepare") => {
                if let Some(name) = self.next_word() {
                    self.fx.changes.push(Change::Deallocated(name));
                }
            }
            Some(t) if t.is("table") || t.is("tables") => {
                if self.tokens.peek().is_some_and(|t| t.is("if")) {
                    self.next();
                    self.next();
                }
                while let Some(name) = self.name() {
                    self.fx.changes.push(Change::TableDropped(name));
                    if self.tokens.peek() != Some(&Token::Punct(b',')) {
                        break;
                    }
                    self.next();
                }
            }
            _ => {}
        }
    }

    /// `HANDLER t OPEN [[AS] alias]`, `HANDLER name READ ...`, `HANDLER name CLOSE`.
    fn handler(&mut self) {
        let Some(table) = self.name() else { return };
        match self.next() {
            Some(t) if t.is("open") => {
                self.pin(PinReason::ServerCursor);
                let mut name = table;
                if self.tokens.peek().is_some_and(|t| t.is("as")) {
                    self.next();
                }
                if let Some(Token::Word(alias)) = self.tokens.peek().copied() {
                    self.next();
                    name = alias;
                }
                self.fx.changes.push(Change::HandlerOpened(name));
            }
            Some(t) if t.is("close") => self.fx.changes.push(Change::HandlerClosed(table)),
            _ => {}
        }
    }

    /// `RENAME TABLE a TO b, c TO d`.
    fn rename(&mut self) {
        if !self.next().is_some_and(|t| t.is("table") || t.is("tables")) {
            return;
        }
        while let Some(from) = self.name() {
            if !self.next().is_some_and(|t| t.is("to")) {
                return;
            }
            let Some(to) = self.name() else { return };
            self.fx.changes.push(Change::Renamed(from, to));
            if self.tokens.peek() != Some(&Token::Punct(b',')) {
                return;
            }
            self.next();
        }
    }

    /// `ALTER TABLE a ... RENAME [TO | AS] b`.
    fn alter(&mut self) {
        if !self.next().is_some_and(|t| t.is("table")) {
            return;
        }
        let Some(from) = self.name() else { return };
        while let Some(t) = self.next() {
            if t.is("rename") {
                if self.tokens.peek().is_some_and(|t| t.is("to") || t.is("as")) {
                    self.next();
                }
                if let Some(to) = self.name() {
                    self.fx.changes.push(Change::Renamed(from, to));
                }
                return;
            }
        }
    }

    fn kill(&mut self) {
        let mut query = false;
        let kill = loop {
            match self.next() {
                Some(t) if t.is("hard") || t.is("soft") || t.is("connection") => {}
                Some(t) if t.is("query") => query = true,
                Some(Token::Word(n)) => {
                    let id = std::str::from_utf8(n)
                        .ok()
                        .and_then(|n| n.parse::<u32>().ok());
                    let done = self.tokens.peek().is_none_or(|t| *t == Token::Semicolon);
                    break match (id, done) {
                        (Some(id), true) if query => Kill::Query(id),
                        (Some(id), true) => Kill::Connection(id),
                        _ => Kill::Unsupported,
                    };
                }
                _ => break Kill::Unsupported,
            }
        };
        self.fx.kill = Some(kill);
    }

    /// `SET a = x, SESSION b = y, @u = z, NAMES ..., TRANSACTION ...`: one assignment at a time.
    fn set(&mut self) {
        loop {
            let Some(t) = self.next() else { return };
            match t {
                Token::UserVar(_) => self.pin(PinReason::UserVariable),
                Token::SysVar(v) => {
                    let (scope, name) = match v.iter().position(|&b| b == b'.') {
                        Some(i) => (&v[..i], &v[i + 1..]),
                        None => (&b""[..], v),
                    };
                    let global = scope.eq_ignore_ascii_case(b"global")
                        || scope.starts_with(b"persist")
                        || scope.starts_with(b"PERSIST");
                    if !global {
                        self.variable(name);
                    }
                }
                Token::Word(w) => {
                    let w_is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
                    if w_is("global")
                        || w_is("persist")
                        || w_is("persist_only")
                        || w_is("password")
                        || w_is("default")
                    {
                    } else if w_is("statement") {
                        return; // SET STATEMENT ... FOR: per statement; the rest is scanned by `rest`
                    } else if w_is("names") || w_is("charset") || w_is("character") {
                        self.fx.read_back = true;
                    } else if w_is("transaction") {
                        self.fx.hold = true;
                    } else if w_is("role") {
                        self.pin(PinReason::SetParameter);
                    } else if w_is("session") || w_is("local") {
                        match self.next() {
                            Some(t) if t.is("transaction") => self.fx.read_back = true,
                            Some(Token::Word(name)) => self.variable(name),
                            _ => {}
                        }
                    } else {
                        self.variable(w);
                    }
                }
                _ => {}
            }
            if !self.skip_assignment() {
                return;
            }
        }
    }

    fn variable(&mut self, name: &[u8]) {
        let tracked = std::str::from_utf8(name)
            .ok()
            .and_then(tracked_slot)
            .is_some();
        if tracked {
            self.fx.read_back = true;
        } else {
            self.pin(PinReason::SetParameter);
        }
    }

    /// Skips to the comma after this assignment; false at the end of the statement.
    fn skip_assignment(&mut self) -> bool {
        let mut depth = 0u32;
        while let Some(t) = self.next() {
            match t {
                Token::Punct(b'(') => depth += 1,
                Token::Punct(b')') => depth = depth.saturating_sub(1),
                Token::Punct(b',') if depth == 0 => return true,
                _ => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
