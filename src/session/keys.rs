//! The hasher for maps whose keys sluice chooses itself (cancel keys, counted connection and
//! statement ids, hashes it computed ahead), never a client: SipHash's defence against chosen
//! collisions buys nothing there, and each of its hashes costs ~100 instructions on a hot path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by sluice's own keys.
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Gathers a key's integers (a `BackendKeyData`'s two, a connection id) into one word and mixes
/// it with MurmurHash3's finaliser, whose every output bit depends on every input bit.
#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = self.0.rotate_left(32) ^ u64::from(n);
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u32(n.cast_unsigned());
    }

    /// A hash computed ahead (a MySQL statement key's), mixed once instead of byte by byte.
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Postgres cancel key's shape (`BackendKeyData`), hashed as its derive does.
    #[derive(Hash)]
    struct KeyPair {
        pid: i32,
        key: i32,
    }

    #[test]
    fn key_hashes_spread_counted_ids_and_key_pairs_over_the_table() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<KeyHasher>::default();
        let low_bits = |hashes: &[u64]| {
            let mut seen: Vec<u64> = hashes.iter().map(|h| h & 4095).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        // Counted MySQL ids and cancel keys differing in one field: a table's bucket is picked
        // by the low bits, so those must not collide in bulk (4,096 random values fill ~2,590).
        let ids: Vec<u64> = (1..=4096u32).map(|n| hasher.hash_one(n)).collect();
        let pairs: Vec<u64> = (0..4096)
            .map(|key| hasher.hash_one(KeyPair { pid: 4242, key }))
            .collect();
        // hashbrown also keeps each entry's top 7 bits as its tag: equal tags cost compares.
        let tags = |hashes: &[u64]| {
            let mut seen: Vec<u64> = hashes.iter().map(|h| h >> 57).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        for hashes in [&ids, &pairs] {
            assert!(low_bits(hashes) > 2400, "{} buckets", low_bits(hashes));
            assert_eq!(tags(hashes), 128, "every tag is used");
        }
        let swapped = KeyPair { pid: 0, key: 4242 };
        assert_ne!(
            hasher.hash_one(swapped),
            pairs[0],
            "pid and key are not interchangeable"
        );
    }

    #[test]
    fn a_hash_computed_ahead_is_mixed_not_passed_through() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<KeyHasher>::default();
        // Hashes that differ only in their top bits must still land in different buckets.
        let spread: std::collections::HashSet<u64> =
            (0..64u64).map(|n| hasher.hash_one(n << 58) & 63).collect();
        assert!(spread.len() > 32, "{} buckets of 64", spread.len());
    }
}
