//! A busy session's last statement text and what scanning it found, for both engines: drivers
//! send the same statements again and again, and simple-protocol ones (pgbench, sysbench
//! without server-side prepares, clients that interpolate parameters) change only the numbers.
//!
//! Both engines' scanners look at a digit only through its byte class (a word character), and
//! none of the keywords they compare words with holds one: a text that differs from another
//! only where both have a digit splits into the same tokens of the same kinds, and each
//! keyword test answers the same. Where a digit's value does matter, the engine says so: a
//! Postgres dollar quote's tag (`$a1$`) is compared byte for byte, and a MySQL `KILL 12` names
//! its target (its effects are never remembered).

/// Longer texts are scanned every time rather than held by every busy session.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct Memo<T> {
    text: Vec<u8>,
    /// Shared only with the very same text.
    exact_only: bool,
    found: T,
}

impl<T: Copy> Memo<T> {
    /// What the scan of `text` found, if `memo` remembers a text that scans alike.
    #[inline]
    pub fn recall(memo: &Option<Self>, text: &[u8]) -> Option<T> {
        let m = memo.as_ref()?;
        match compare(&m.text, text) {
            Same::Exactly => Some(m.found),
            Same::ButDigits if !m.exact_only => Some(m.found),
            _ => None,
        }
    }

    /// Remembers what the scan of `text` found, in place of what `memo` held.
    pub fn keep(memo: &mut Option<Self>, text: &[u8], found: T, exact_only: bool) {
        if text.len() > MAX_REMEMBERED {
            return;
        }
        let m = memo.get_or_insert_with(|| Memo {
            text: Vec::new(),
            exact_only,
            found,
        });
        m.text.clear();
        m.text.extend_from_slice(text);
        m.exact_only = exact_only;
        m.found = found;
    }

    #[cfg(test)]
    pub fn text(&self) -> &[u8] {
        &self.text
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Same {
    Exactly,
    /// Equal but where both texts have a digit.
    ButDigits,
    No,
}

/// Eight bytes at a time: only a word that differs is looked at lane by lane.
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

    #[test]
    fn an_exact_only_text_and_a_long_one() {
        let mut memo = None;
        Memo::keep(&mut memo, b"select $a1$", 1, true);
        assert_eq!(Memo::recall(&memo, b"select $a1$"), Some(1));
        assert_eq!(Memo::recall(&memo, b"select $a2$"), None);
        Memo::keep(&mut memo, b"select 1", 2, false);
        assert_eq!(Memo::recall(&memo, b"select 7"), Some(2));
        let long = format!("select {}", "1".repeat(MAX_REMEMBERED));
        Memo::keep(&mut memo, long.as_bytes(), 3, false);
        assert_eq!(Memo::recall(&memo, long.as_bytes()), None);
        assert_eq!(
            Memo::recall(&memo, b"select 8"),
            Some(2),
            "the last kept one stays"
        );
    }
}
