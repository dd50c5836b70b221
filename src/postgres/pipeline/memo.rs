//! The last statement text of each kind (simple Query, Parse) and what its pinning scan found:
//! drivers send the same statement again and again, and simple-protocol ones (pgbench, clients
//! that interpolate parameters) change only the numbers in it.
//!
//! A text that differs from the remembered one only where both have a digit scans alike: the
//! scanner looks at a digit only through its byte class (word-continuing, never a word start
//! or a delimiter), and no keyword it compares words with holds a digit. The one exception is
//! a dollar quote's tag (`$a1$ ... $a1$`), compared byte for byte: a remembered text with a
//! `$` matches only exactly.

use crate::postgres::pinning::{Effects, effects};

/// Longer texts are scanned every time rather than held by every busy session.
const MAX_REMEMBERED: usize = 4096;

/// What a busy session remembers of its last scans; dropped when it parks.
#[derive(Debug, Default)]
pub(super) struct Scans {
    pub(super) query: Option<Memo>,
    pub(super) parse: Option<Memo>,
}

#[derive(Debug)]
pub(super) struct Memo {
    text: Vec<u8>,
    /// The text holds a `$`: only an exact match shares its scan.
    dollar: bool,
    effects: Effects,
}

/// `text`'s effects, from `memo` when the remembered text scans alike (the pinning scan was a
/// tenth of the relay's instructions for a short query: callgrind, pgbench `-S`).
pub(super) fn effects_of(memo: &mut Option<Memo>, text: &[u8]) -> Effects {
    if let Some(m) = memo {
        match compare(&m.text, text) {
            Same::Exactly => return m.effects,
            Same::ButDigits if !m.dollar => return m.effects,
            _ => {}
        }
    }
    let found = effects(text);
    if text.len() <= MAX_REMEMBERED {
        let m = memo.get_or_insert_with(|| Memo {
            text: Vec::new(),
            dollar: false,
            effects: found,
        });
        m.text.clear();
        m.text.extend_from_slice(text);
        m.dollar = text.contains(&b'$');
        m.effects = found;
    }
    found
}

#[derive(Debug, PartialEq, Eq)]
enum Same {
    Exactly,
    /// Equal but where both texts have a digit.
    ButDigits,
    No,
}

/// Eight bytes at a time: only a word that differs is looked at byte by byte.
fn compare(old: &[u8], new: &[u8]) -> Same {
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
        if !digits_only(a_tail, b_tail) {
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

fn digits_only(x: &[u8], y: &[u8]) -> bool {
    x.iter()
        .zip(y)
        .all(|(p, q)| p == q || (p.is_ascii_digit() && q.is_ascii_digit()))
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
    fn compares_eight_bytes_at_a_time_and_the_tail() {
        assert_eq!(compare(b"select 1", b"select 1"), Same::Exactly);
        assert_eq!(
            compare(b"select 12345 x", b"select 99999 x"),
            Same::ButDigits
        );
        assert_eq!(compare(b"select 1 x", b"select 2 x"), Same::ButDigits);
        assert_eq!(compare(b"select 1 a", b"select 1 b"), Same::No);
        assert_eq!(compare(b"select 1", b"select 10"), Same::No);
        assert_eq!(compare(b"select a1", b"select b1"), Same::No);
        assert_eq!(compare(b"", b""), Same::Exactly);
    }

    /// Every text here, with its digits changed, must scan as it does: a pinned statement
    /// answered from a remembered unpinned one would lose its pin silently.
    #[test]
    fn a_text_with_other_digits_scans_alike_or_is_scanned() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "select pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(42)",
            "create temp table t1 (a int)",
            "select * into temp t2 from x where id = 7",
            "select 1; listen c1",
            "select '1; listen c'",
            "select e'\\'1'; set x = 1",
            "select 1 -- 2\n; load 'x'",
            "select /* 1 */ 2; prepare p1 as select 1",
            "select $a1$ x $a1$; listen y",
            "select $1$ x $1$; listen y",
            "select $a1$ ; listen y $a2$",
            "declare c1 cursor with hold for select 1",
            "set search_path = s1",
            "select set_config('a.b', '1', false)",
            "update t set a = 1 where id = 2",
            "deallocate p1",
            "SELECT 1e5, x1y2 FROM t3",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for text in texts {
            for _ in 0..64 {
                let mut other = text.as_bytes().to_vec();
                for b in other.iter_mut().filter(|b| b.is_ascii_digit()) {
                    if next() % 2 == 0 {
                        *b = b'0' + (next() % 10) as u8;
                    }
                }
                let mut memo = None;
                assert_eq!(
                    effects_of(&mut memo, text.as_bytes()),
                    effects(text.as_bytes())
                );
                let got = effects_of(&mut memo, &other);
                let shown = String::from_utf8_lossy(&other);
                assert_eq!(got, effects(&other), "{text} then {shown}");
                // Answered from the memo (which keeps its text) unless a `$` forbids it.
                let kept = memo.as_ref().is_some_and(|m| m.text == text.as_bytes());
                assert_eq!(
                    kept,
                    !text.contains('$') || other == text.as_bytes(),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn a_dollar_quoted_text_is_shared_only_exactly() {
        // `$a1$ ; listen y $a2$` is one unterminated quote; `$a1$ ; listen y $a1$` a closed one
        // around the LISTEN: equal but for a digit, yet they scan differently.
        let open = b"select $a1$ ; listen y $a2$; listen z";
        let closed = b"select $a1$ ; listen y $a1$; listen z";
        assert_ne!(effects(open), effects(closed));
        let mut memo = None;
        effects_of(&mut memo, closed);
        assert_eq!(effects_of(&mut memo, open), effects(open));
        assert_eq!(effects_of(&mut memo, closed), effects(closed));
    }

    #[test]
    fn a_long_text_is_not_kept() {
        let long = format!("select {}", "1".repeat(MAX_REMEMBERED));
        let mut memo = None;
        effects_of(&mut memo, long.as_bytes());
        assert!(memo.is_none());
        effects_of(&mut memo, b"select 1");
        assert!(memo.is_some());
    }
}
