//! The SQL scanner behind pinning and parameter tracking: words of statements outside
//! comments, quotes and dollar quoting, costing a pass over the bytes, not a parse.

/// Words of one statement, outside literals and comments, lowercased on compare.
#[derive(Debug)]
pub struct Words<'a> {
    sql: &'a [u8],
    pos: usize,
    /// Also return literals, quoted identifiers and punctuation (for the rare statements
    /// whose operands matter); the hot path skips them.
    detail: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    Word(&'a [u8]),
    Semicolon,
    /// A `"quoted identifier"`, between its quotes (doubled quotes left as they are).
    Quoted(&'a [u8]),
    /// A string constant between its quotes (`'...'` or `$tag$...$tag$`), undecoded.
    Str(&'a [u8]),
    Punct(u8),
}

impl<'a> Words<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self {
            sql,
            pos: 0,
            detail: false,
        }
    }

    pub fn detailed(sql: &'a [u8]) -> Self {
        Self {
            sql,
            pos: 0,
            detail: true,
        }
    }

    #[inline]
    pub fn next_token(&mut self) -> Option<Token<'a>> {
        let s = self.sql;
        while self.pos < s.len() {
            let c = s[self.pos];
            let class = CLASS[usize::from(c)];
            if class & SPECIAL != 0 {
                if let Some(token) = self.special(c) {
                    return Some(token);
                }
            } else if class & WORD_START != 0 {
                let start = self.pos;
                self.pos += 1;
                while self.pos < s.len() && CLASS[usize::from(s[self.pos])] & IN_WORD != 0 {
                    self.pos += 1;
                }
                return Some(Token::Word(&s[start..self.pos]));
            } else {
                // Whitespace, digits and most punctuation: one table lookup per byte, since a
                // plain query is mostly these (profiles: the scanner was a tenth of the relay).
                self.pos += 1;
                if self.detail && !c.is_ascii_whitespace() {
                    return Some(Token::Punct(c));
                }
            }
        }
        None
    }

    /// `;`, comments and quoted spans, and a `-`, `/` or `$` that opens none of them.
    fn special(&mut self, c: u8) -> Option<Token<'a>> {
        let s = self.sql;
        match c {
            b';' => {
                self.pos += 1;
                return Some(Token::Semicolon);
            }
            b'-' if s.get(self.pos + 1) == Some(&b'-') => {
                self.pos = memchr(b'\n', s, self.pos).unwrap_or(s.len());
            }
            b'/' if s.get(self.pos + 1) == Some(&b'*') => self.skip_block_comment(),
            b'\'' | b'"' | b'$' => {
                let start = self.pos;
                let token = match c {
                    b'\'' => {
                        self.skip_quoted(b'\'', self.escape_string_prefix());
                        Token::Str(inner(s, start + 1, self.pos, 1))
                    }
                    b'"' => {
                        self.skip_quoted(b'"', false);
                        Token::Quoted(inner(s, start + 1, self.pos, 1))
                    }
                    _ => {
                        let open = self.skip_dollar();
                        Token::Str(inner(s, start + open, self.pos, open))
                    }
                };
                if self.detail && self.pos > start + 1 {
                    return Some(token);
                }
            }
            _ => {
                self.pos += 1;
                if self.detail {
                    return Some(Token::Punct(c));
                }
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
    /// Returns the length of the opening tag (1 when it was no quote).
    fn skip_dollar(&mut self) -> usize {
        let s = self.sql;
        let start = self.pos;
        let mut end = start + 1;
        while end < s.len() && (s[end].is_ascii_alphanumeric() || s[end] == b'_') {
            end += 1;
        }
        if end >= s.len() || s[end] != b'$' || s.get(start + 1).is_some_and(u8::is_ascii_digit) {
            self.pos = start + 1;
            return 1;
        }
        let tag = &s[start..=end];
        let body = end + 1;
        self.pos = s[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map_or(s.len(), |i| body + i + tag.len());
        tag.len()
    }
}

/// Byte classes: what can start a word, what can continue one, what needs a closer look.
const OTHER: u8 = 0;
const WORD_START: u8 = 1;
const IN_WORD: u8 = 2;
const SPECIAL: u8 = 4;
const WORD: u8 = WORD_START | IN_WORD;

const CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            WORD
        } else if c.is_ascii_digit() {
            IN_WORD
        } else if c == b'$' {
            SPECIAL | IN_WORD
        } else if matches!(c, b';' | b'-' | b'/' | b'\'' | b'"') {
            SPECIAL
        } else {
            OTHER
        };
        b += 1;
    }
    t
};

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| from + i)
}

/// The body of a quoted span `[open, end)` whose closing delimiter is `close` bytes long
/// (an unterminated span has none).
fn inner(s: &[u8], open: usize, end: usize, close: usize) -> &[u8] {
    let end = end.max(open);
    let stop = if end - open >= close {
        end - close
    } else {
        open
    };
    &s[open.min(s.len())..stop.min(s.len())]
}

#[inline]
pub fn is(word: &[u8], kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw.as_bytes())
}
