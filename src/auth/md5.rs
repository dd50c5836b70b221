//! PostgreSQL's MD5 password challenge: `"md5" + md5(md5(password + user) + salt)` in hex.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    format!("md5{}", hex(&outer))
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
