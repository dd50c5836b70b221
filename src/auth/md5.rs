//! PostgreSQL's MD5 password challenge: `"md5" + md5(md5(password + user) + salt)` in hex.

use md5::{Digest, Md5};

/// Lower-case hex into `out`: runs on every md5 login, where a `format!` per byte showed up
/// among the connect storm's costs.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_hex(&mut out, bytes);
    out
}

/// The inner hash PostgreSQL stores (`md5(password + user)`), computed once per secret.
pub fn stored_hash(user: &str, password: &str) -> String {
    hex(&Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize())
}

/// What a client must answer to `salt` for a password whose stored hash is `stored`: on the
/// stack, as every md5 login computes it (a `String` was an allocation and a UTF-8 push per
/// digit on the connect storm's path).
pub fn expected_response(stored: &str, salt: [u8; 4]) -> [u8; 35] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let outer = Md5::new()
        .chain_update(stored)
        .chain_update(salt)
        .finalize();
    let mut out = [0u8; 35];
    out[..3].copy_from_slice(b"md5");
    for (pair, &b) in out[3..].chunks_exact_mut(2).zip(outer.iter()) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_protocol() {
        let salt = [1, 2, 3, 4];
        let ours = expected_response(&stored_hash("app", "secret"), salt);
        let theirs = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        assert_eq!(std::str::from_utf8(&ours), Ok(theirs.as_str()));
    }
}
