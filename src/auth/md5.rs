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

/// What a client must answer to `salt` for a password whose stored hash is `stored`.
pub fn expected_response(stored: &str, salt: [u8; 4]) -> String {
    let outer = Md5::new()
        .chain_update(stored)
        .chain_update(salt)
        .finalize();
    let mut out = String::with_capacity(3 + 2 * outer.len());
    out.push_str("md5");
    push_hex(&mut out, &outer);
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
        assert_eq!(ours, theirs);
    }
}
