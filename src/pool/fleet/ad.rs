//! What a fleet member tells the others, written where the database shows it (a Postgres
//! `application_name`, a MySQL statement's text): one short line, at most 63 bytes, because
//! Postgres cuts `application_name` there.

use std::fmt::Write as _;

/// Every advertisement starts with this, then the fleet's tag.
pub const PREFIX: &str = "sluice fleet ";

/// A name this long or shorter, of safe characters, is its own tag; a longer one is cut and
/// hashed, so every process derives the same tag and the line still fits in 63 bytes.
const TAG_MAX: usize = 16;

/// Numbers are capped so the line keeps its length; no budget comes near.
const NUMBER_MAX: usize = 99_999;

/// One process's numbers for one instance, as the others read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ad {
    /// Random per process and target group: tells members apart.
    pub id: u32,
    /// Connections outside the pools: the probe, the MySQL advert, Postgres listeners.
    pub overhead: usize,
    /// Pool connections open now.
    pub held: usize,
    /// Pool connections this process may open without asking again: never below `held`.
    pub claim: usize,
    /// Pool connections it would use: the busiest moment since the last round, plus one.
    pub want: usize,
}

/// The tag of a fleet name: the name itself when short and plain, else a cut and a hash.
pub fn tag(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.len() <= TAG_MAX && !name.is_empty() && name.chars().all(plain) {
        return name.to_owned();
    }
    let head: String = name.chars().filter(|&c| plain(c)).take(7).collect();
    format!("{head}~{:08x}", fnv1a(name.as_bytes()))
}

/// FNV-1a: fixed, so every process hashes a name alike (std's hasher is keyed per process).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The advertisement line: `sluice fleet <tag> <id> <overhead> <held> <claim> <want>`.
pub fn encode(tag: &str, ad: &Ad) -> String {
    let n = |v: usize| v.min(NUMBER_MAX);
    let mut s = String::with_capacity(64);
    let _ = write!(
        s,
        "{PREFIX}{tag} {:08x} {} {} {} {}",
        ad.id,
        n(ad.overhead),
        n(ad.held),
        n(ad.claim),
        n(ad.want)
    );
    s
}

/// The advertisement of fleet `tag` within `text`, if any: the first occurrence that reads
/// whole (a MySQL reader's own query text also holds the prefix, in its search pattern).
pub fn parse(text: &str, tag: &str) -> Option<Ad> {
    let key = format!("{PREFIX}{tag} ");
    text.match_indices(&key).find_map(|(at, _)| {
        let mut f = text[at + key.len()..].split_ascii_whitespace();
        let id = u32::from_str_radix(f.next()?, 16).ok()?;
        let mut num = || f.next()?.parse::<usize>().ok();
        let (overhead, held, claim, want) = (num()?, num()?, num()?, num()?);
        Some(Ad {
            id,
            overhead,
            held,
            claim,
            want,
        })
    })
}
