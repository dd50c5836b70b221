//! A MySQL SQL tokenizer for pinning and tracking: words, variables and punctuation outside
//! comments and quotes (`'...'`, `"..."` with backslash escapes, backquoted identifiers, `#`,
//! `-- ` and `/* */` comments), costing one pass over the bytes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A keyword, identifier or number; backquoted identifiers come without their quotes.
    Word(&'a [u8]),
    /// A string literal between its quotes, undecoded.
    Str(&'a [u8]),
    /// `@name` (user variable), without the `@`.
    UserVar(&'a [u8]),
    /// `@@[scope.]name` (system variable), without the `@@`.
    SysVar(&'a [u8]),
    /// `/*! ... */` or `/*M! ... */`: text the server runs but sluice cannot see as SQL.
    Executable,
    Semicolon,
    Punct(u8),
}

impl Token<'_> {
    /// A word equal to `kw` (ASCII, case-insensitive).
    pub fn is(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw.as_bytes()))
    }
}

#[derive(Debug)]
pub struct Tokens<'a> {
    sql: &'a [u8],
    pos: usize,
    /// Backslashes escape in strings unless sql_mode has NO_BACKSLASH_ESCAPES.
    escapes: bool,
}

impl<'a> Tokens<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self::with_escapes(sql, true)
    }

    pub fn with_escapes(sql: &'a [u8], escapes: bool) -> Self {
        Self {
            sql,
            pos: 0,
            escapes,
        }
    }

    fn skip_quoted(&mut self, quote: u8) -> &'a [u8] {
        let s = self.sql;
        let start = self.pos + 1;
        let mut i = start;
        while i < s.len() {
            match s[i] {
                b'\\' if quote != b'`' && self.escapes => i += 2,
                c if c == quote => {
                    if s.get(i + 1) == Some(&quote) {
                        i += 2;
                    } else {
                        self.pos = i + 1;
                        return &s[start..i];
                    }
                }
                _ => i += 1,
            }
        }
        self.pos = s.len();
        &s[start.min(s.len())..]
    }

    fn word_end(&self, from: usize) -> usize {
        let s = self.sql;
        let mut i = from;
        while i < s.len()
            && (s[i].is_ascii_alphanumeric()
                || s[i] == b'_'
                || s[i] == b'$'
                || s[i] >= 0x80
                || s[i] == b'.')
        {
            i += 1;
        }
        i
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let s = self.sql;
        while self.pos < s.len() {
            let c = s[self.pos];
            let next = s.get(self.pos + 1).copied();
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.pos = line_end(s, self.pos),
                b'-' if next == Some(b'-')
                    && s.get(self.pos + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
                {
                    self.pos = line_end(s, self.pos)
                }
                b'/' if next == Some(b'*') => {
                    let body = self.pos + 2;
                    let executable = s.get(body) == Some(&b'!')
                        || (s.get(body).is_some_and(|b| b.eq_ignore_ascii_case(&b'm'))
                            && s.get(body + 1) == Some(&b'!'));
                    self.pos = find(s, b"*/", body).map_or(s.len(), |e| e + 2);
                    if executable {
                        return Some(Token::Executable);
                    }
                }
                b'\'' | b'"' => return Some(Token::Str(self.skip_quoted(c))),
                b'`' => return Some(Token::Word(self.skip_quoted(b'`'))),
                b';' => {
                    self.pos += 1;
                    return Some(Token::Semicolon);
                }
                b'@' => {
                    let sys = next == Some(b'@');
                    let start = self.pos + if sys { 2 } else { 1 };
                    let name = if s
                        .get(start)
                        .is_some_and(|&q| q == b'`' || q == b'\'' || q == b'"')
                    {
                        self.pos = start;
                        self.skip_quoted(s[start])
                    } else {
                        let end = self.word_end(start);
                        self.pos = end;
                        &s[start..end]
                    };
                    return Some(if sys {
                        Token::SysVar(name)
                    } else {
                        Token::UserVar(name)
                    });
                }
                c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                    let start = self.pos;
                    let mut end = start;
                    while end < s.len()
                        && (s[end].is_ascii_alphanumeric()
                            || s[end] == b'_'
                            || s[end] == b'$'
                            || s[end] >= 0x80)
                    {
                        end += 1;
                    }
                    self.pos = end;
                    return Some(Token::Word(&s[start..end]));
                }
                _ => {
                    self.pos += 1;
                    return Some(Token::Punct(c));
                }
            }
        }
        None
    }
}

fn line_end(s: &[u8], from: usize) -> usize {
    s[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(s.len(), |i| from + i + 1)
}

fn find(s: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    s.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_quotes_and_variables() {
        let sql = b"SELECT `a``b`, 'it''s; \\' x', @v, @@session.time_zone -- c;\n#x;\n/* ; */ /*!40101 SET x=1*/ /*M!100100 y*/ a;b";
        let t: Vec<Token> = Tokens::new(sql).collect();
        assert_eq!(
            t,
            vec![
                Token::Word(b"SELECT"),
                Token::Word(b"a``b"),
                Token::Punct(b','),
                Token::Str(b"it''s; \\' x"),
                Token::Punct(b','),
                Token::UserVar(b"v"),
                Token::Punct(b','),
                Token::SysVar(b"session.time_zone"),
                Token::Executable,
                Token::Executable,
                Token::Word(b"a"),
                Token::Semicolon,
                Token::Word(b"b"),
            ]
        );
        // `--` without a space is an operator, not a comment; unterminated quotes end the text.
        let t: Vec<Token> = Tokens::new(b"1--2 'open").collect();
        assert_eq!(t.len(), 5);
    }
}
