//! A busy session's last statement texts and what scanning them found, for both engines:
//! drivers send the same few statements again and again, and simple-protocol ones (pgbench,
//! sysbench without server-side prepares, clients that interpolate parameters) change only the
//! numbers in them.
//!
//! Both engines' scanners look at a digit only through its byte class (Postgres: it continues
//! a word and is skipped over everywhere else; MySQL: a word byte like a letter), and none of
//! the keywords they compare words with holds one: a text that differs from another only in
//! its runs of digits (their values and lengths) splits into the same tokens of the same kinds,
//! and each keyword test answers the same. Where a digit's value does matter, the engine says
//! so: a Postgres dollar quote's tag (`$a1$`) is compared byte for byte, and a MySQL `KILL 12`
//! names its target (its effects are never remembered).

use std::collections::VecDeque;

/// At most this many texts are remembered per kind of message: an ORM's transaction cycles
/// through a handful of statements (pgbench's TPC-B-like script: seven, eleven shapes with
/// their numbers' signs).
const WAYS: usize = 16;
/// And at most this many bytes of them: a longer text is scanned every time rather than held
/// by every busy session.
pub const MAX_BYTES: usize = 4096;

/// Texts and what their scans found, oldest first: the oldest go when a new one needs room.
#[derive(Debug)]
pub struct Memos<T> {
    entries: VecDeque<Memo<T>>,
    bytes: usize,
}

#[derive(Debug)]
struct Memo<T> {
    /// `head(text)`: most remembered texts are told apart by it alone.
    head: [u64; 2],
    text: Vec<u8>,
    /// Shared only with the very same text.
    exact_only: bool,
    found: T,
}

impl<T> Default for Memos<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T: Copy> Memos<T> {
    /// What the scan of a remembered text that scans like `text` found, of those `fits` takes.
    #[inline]
    pub fn recall(&self, text: &[u8], fits: impl Fn(&T) -> bool) -> Option<T> {
        let head = head(text);
        self.entries.iter().find_map(|m| {
            if m.head != head {
                return None;
            }
            let alike = match compare(&m.text, text) {
                Same::Exactly => true,
                Same::ButDigits => !m.exact_only,
                Same::No => false,
            };
            (alike && fits(&m.found)).then_some(m.found)
        })
    }

    /// Remembers what the scan of `text` found, making room by forgetting older texts. The
    /// last one forgotten lends its buffer: a session whose texts never repeat allocates only
    /// while its memo fills (no allocation per query on the steady path).
    pub fn keep(&mut self, text: &[u8], found: T, exact_only: bool) {
        if text.len() > MAX_BYTES {
            return;
        }
        let mut buf = Vec::new();
        while self.entries.len() >= WAYS || self.bytes + text.len() > MAX_BYTES {
            let Some(gone) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= gone.text.len();
            buf = gone.text;
        }
        buf.clear();
        buf.extend_from_slice(text);
        self.bytes += text.len();
        self.entries.push_back(Memo {
            head: head(text),
            text: buf,
            exact_only,
            found,
        });
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.entries.len()
    }
}

/// A text's first sixteen bytes up to its first digit (zero from there): what a change of its
/// numbers leaves alone, and what tells most statements apart (`UPDATE pgbench_a` from
/// `UPDATE pgbench_t`) before a byte-by-byte compare.
fn head(text: &[u8]) -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let n = text.len().min(16);
    bytes[..n].copy_from_slice(&text[..n]);
    let mut words = bytes
        .as_chunks::<8>()
        .0
        .iter()
        .map(|w| u64::from_le_bytes(*w));
    let mut head = [words.next().unwrap_or(0), words.next().unwrap_or(0)];
    for k in 0..2 {
        let digits = digit_lanes(head[k]);
        if digits != 0 {
            // Little-endian: the lowest lanes come first; keep those before the first digit.
            let keep = digits.trailing_zeros() / 8 * 8;
            head[k] &= 1u64.checked_shl(keep).map_or(u64::MAX, |b| b - 1);
            if k == 0 {
                head[1] = 0;
            }
            break;
        }
    }
    head
}

#[derive(Debug, PartialEq, Eq)]
enum Same {
    Exactly,
    /// Equal but where both texts have a digit.
    ButDigits,
    No,
}

/// Texts of one length eight bytes at a time (a word that differs is looked at lane by lane);
/// otherwise, or where a number grew into another's place, byte by byte.
fn compare(old: &[u8], new: &[u8]) -> Same {
    match same_length(old, new) {
        Same::No if alike_but_numbers(old, new) => Same::ButDigits,
        same => same,
    }
}

/// Where one text has a run of digits the other has one too, of any length, and every other
/// byte is the same: a run's length changes no token boundary either (inside a word, a quote or
/// a comment, or between tokens, a digit is only ever skipped over).
fn alike_but_numbers(old: &[u8], new: &[u8]) -> bool {
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    let run_end = |s: &[u8], from: usize| {
        from + s[from..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(s.len() - from)
    };
    let (mut i, mut j) = (0, 0);
    loop {
        // The equal stretch, eight bytes at a time (the first differing lane ends it) and then
        // one at a time.
        while let (Some(x), Some(y)) = (old.get(i..i + 8), new.get(j..j + 8)) {
            let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            let diff = word(x) ^ word(y);
            let equal = if diff == 0 {
                8
            } else {
                diff.trailing_zeros() as usize / 8
            };
            i += equal;
            j += equal;
            if equal < 8 {
                break;
            }
        }
        while i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
        }
        if i == old.len() && j == new.len() {
            return true;
        }
        match (digit(old, i), digit(new, j)) {
            (true, true) => {}
            // One run goes on where the other ended: the byte before, equal in both, must be a
            // digit of both runs. (A mismatch right after two runs has no digit on either side.)
            (true, false) | (false, true) if i > 0 && old[i - 1].is_ascii_digit() => {}
            _ => return false,
        }
        i = run_end(old, i);
        j = run_end(new, j);
    }
}

fn same_length(old: &[u8], new: &[u8]) -> Same {
    if old.len() != new.len() {
        return Same::No;
    }
    let (a, a_tail) = old.as_chunks::<8>();
    let (b, b_tail) = new.as_chunks::<8>();
    let mut same = Same::Exactly;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (u64::from_ne_bytes(*x), u64::from_ne_bytes(*y));
        if x != y {
            if !word_digits_only(x, y) {
                return Same::No;
            }
            same = Same::ButDigits;
        }
    }
    if a_tail != b_tail {
        let alike = a_tail
            .iter()
            .zip(b_tail)
            .all(|(p, q)| p == q || (p.is_ascii_digit() && q.is_ascii_digit()));
        if !alike {
            return Same::No;
        }
        same = Same::ButDigits;
    }
    same
}

const LANES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The words differ only in lanes where both hold a digit. No lane's sum below carries into
/// the next: each adds at most 0x7f to a value of at most 0x7f.
fn word_digits_only(x: u64, y: u64) -> bool {
    let diff = x ^ y;
    let differs = (((diff & !HIGH) + !HIGH) | diff) & HIGH;
    differs & !(digit_lanes(x) & digit_lanes(y)) == 0
}

/// The high bit of every lane that holds an ASCII digit.
fn digit_lanes(v: u64) -> u64 {
    let low = v & !HIGH;
    let at_least_0 = (low + LANES * u64::from(0x80 - b'0')) & HIGH;
    let above_9 = (low + LANES * u64::from(0x7f - b'9')) & HIGH;
    !v & at_least_0 & !above_9
}

/// `text` with every run of digits replaced by `90`: alike to it, for the fuzz target's check
/// that the scanners agree (`fuzz_entry::sql_scanners`).
pub fn renumbered_all(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    let mut in_run = false;
    for &b in text {
        if b.is_ascii_digit() {
            if !in_run {
                out.extend_from_slice(b"90");
            }
            in_run = true;
        } else {
            out.push(b);
            in_run = false;
        }
    }
    out
}

/// For the engines' tests: 64 copies of `text`, each with some of its runs of digits replaced
/// by others of one to four digits, which the memo takes as alike (a fixed seed).
#[cfg(test)]
pub(crate) fn renumberings(text: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..64).map(move |_| renumbered(text, &mut next))
}

#[cfg(test)]
fn renumbered(text: &[u8], next: &mut impl FnMut() -> u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            out.push(text[i]);
            i += 1;
            continue;
        }
        let end = i + text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if next().is_multiple_of(2) {
            out.extend_from_slice(&text[i..end]);
        } else {
            let len = 1 + next() % 4;
            out.extend((0..len).map(|_| b'0' + (next() % 10) as u8));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_lanes_are_exactly_the_digits() {
        for b in 0..=255u8 {
            let word = u64::from_ne_bytes([b'x', b, 0xff, b'0', b, b'9', 0x00, b]);
            let want = [false, b.is_ascii_digit(), false, true].into_iter().chain([
                b.is_ascii_digit(),
                true,
                false,
                b.is_ascii_digit(),
            ]);
            let got = digit_lanes(word).to_ne_bytes().map(|l| l == 0x80);
            assert!(got.into_iter().eq(want), "{b:#x}");
            for c in 0..=255u8 {
                let other = u64::from_ne_bytes([b'x', c, 0xff, b'0', b, b'9', 0x00, b]);
                let alike = b == c || (b.is_ascii_digit() && c.is_ascii_digit());
                assert_eq!(word_digits_only(word, other), alike, "{b:#x} {c:#x}");
            }
        }
    }

    #[test]
    fn a_head_stops_at_the_first_digit() {
        assert_eq!(head(b"select 1"), head(b"select 12345"));
        assert_eq!(head(b"0"), head(b"9999"));
        assert_eq!(head(b"UPDATE pgbench_accounts"), head(b"UPDATE pgbench_a"));
        assert_ne!(
            head(b"UPDATE pgbench_accounts"),
            head(b"UPDATE pgbench_tellers")
        );
        assert_eq!(head(b"abcdefgh1x"), head(b"abcdefgh22x"));
        assert_ne!(head(b"abcdefgh1x"), head(b"abcdefgx1x"));
        assert_ne!(head(b"select"), head(b"selecT"));
    }

    #[test]
    fn compares_eight_bytes_at_a_time_and_the_tail() {
        let cases = [
            (&b"select 1"[..], &b"select 1"[..], Same::Exactly),
            (
                &b"select 12345 x"[..],
                &b"select 99999 x"[..],
                Same::ButDigits,
            ),
            (&b"select 1 x"[..], &b"select 2 x"[..], Same::ButDigits),
            (&b"select 1 a"[..], &b"select 1 b"[..], Same::No),
            (&b"select a1"[..], &b"select b1"[..], Same::No),
            (&b""[..], &b""[..], Same::Exactly),
            (&b"select 1"[..], &b"select 10"[..], Same::ButDigits),
            (&b"a=12, b=345"[..], &b"a=123, b=45"[..], Same::ButDigits),
            (&b"t1 x"[..], &b"t12 x"[..], Same::ButDigits),
            (&b"x = 1"[..], &b"x = -1"[..], Same::No),
            (&b"x = 1"[..], &b"x = 1a"[..], Same::No),
            (&b"x = 1"[..], &b"x = "[..], Same::No),
            (&b"x = 12"[..], &b"x = 123"[..], Same::ButDigits),
            (&b"x = 123 y"[..], &b"x = 1 y"[..], Same::ButDigits),
            (&b"x = 123 y"[..], &b"x = 1y"[..], Same::No),
            (
                &b"0123456789abcdef 1 z"[..],
                &b"0123456789abcdef 22 z"[..],
                Same::ButDigits,
            ),
            (
                &b"0123456789abcdef 1 z"[..],
                &b"0123456789abcdeF 1 z"[..],
                Same::No,
            ),
        ];
        for (old, new, want) in cases {
            let shown = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
            assert_eq!(compare(old, new), want, "{shown:?}");
        }
    }

    #[test]
    fn an_exact_only_text_a_filter_and_a_long_text() {
        let mut memos = Memos::default();
        memos.keep(b"select $a1$", 1, true);
        assert_eq!(memos.recall(b"select $a1$", |_| true), Some(1));
        assert_eq!(memos.recall(b"select $a2$", |_| true), None);
        memos.keep(b"select 1", 2, false);
        assert_eq!(memos.recall(b"select 7", |_| true), Some(2));
        assert_eq!(memos.recall(b"select 7", |&f| f != 2), None);
        let long = format!("select {}", "x".repeat(MAX_BYTES));
        memos.keep(long.as_bytes(), 3, false);
        assert_eq!(memos.recall(long.as_bytes(), |_| true), None);
        assert_eq!(memos.remembered(), 2);
    }

    #[test]
    fn older_texts_make_room_for_new_ones() {
        let text = |i: usize| format!("select {i} from t{}", "x".repeat(i));
        let mut memos = Memos::default();
        for i in 0..WAYS {
            memos.keep(text(i).as_bytes(), i, false);
        }
        assert!((0..WAYS).all(|i| memos.recall(text(i).as_bytes(), |_| true) == Some(i)));
        memos.keep(b"another", 99, false);
        assert_eq!(memos.remembered(), WAYS);
        assert_eq!(
            memos.recall(text(0).as_bytes(), |_| true),
            None,
            "the oldest went"
        );
        let lent = memos.entries.front().expect("full").text.as_ptr();
        memos.keep(b"and another", 98, false);
        let newest = memos.entries.back().expect("kept").text.as_ptr();
        assert_eq!(newest, lent, "the forgotten text lent its buffer");
        assert_eq!(
            memos.recall(text(1).as_bytes(), |_| true),
            None,
            "then the next oldest"
        );
        assert!((2..WAYS).all(|i| memos.recall(text(i).as_bytes(), |_| true) == Some(i)));
        let big = "y".repeat(MAX_BYTES - 10);
        memos.keep(big.as_bytes(), 100, false);
        assert!(memos.bytes <= MAX_BYTES && memos.remembered() < WAYS);
        assert_eq!(memos.recall(big.as_bytes(), |_| true), Some(100));
        assert_eq!(
            memos.bytes,
            memos.entries.iter().map(|m| m.text.len()).sum::<usize>()
        );
    }
}
