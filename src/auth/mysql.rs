//! MySQL password scrambles: mysql_native_password (SHA-1) and caching_sha2_password's fast path
//! (SHA-256), checked against hashes derived once per secret and computed for server logins.

use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::scram::ct_eq;

/// Hashes of one password, so a client login costs one hash per plugin, not three.
#[derive(Clone)]
pub struct MysqlKeys {
    /// For caching_sha2_password's full authentication, sent to servers over TLS only.
    password: std::sync::Arc<str>,
    empty: bool,
    sha1: [u8; 20],
    sha1_sha1: [u8; 20],
    sha256: [u8; 32],
    sha256_sha256: [u8; 32],
}

impl std::fmt::Debug for MysqlKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MysqlKeys(..)")
    }
}

impl MysqlKeys {
    pub fn derive(password: &str) -> Self {
        let sha1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
        let sha256: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        Self {
            password: password.into(),
            empty: password.is_empty(),
            sha1,
            sha1_sha1: Sha1::digest(sha1).into(),
            sha256,
            sha256_sha256: Sha256::digest(sha256).into(),
        }
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The mysql_native_password response for `nonce`: SHA1(pw) XOR SHA1(nonce, SHA1(SHA1(pw))).
    pub fn native(&self, nonce: &[u8]) -> Vec<u8> {
        if self.empty {
            return Vec::new();
        }
        let mask: [u8; 20] = Sha1::new()
            .chain_update(nonce)
            .chain_update(self.sha1_sha1)
            .finalize()
            .into();
        xor(&self.sha1, &mask)
    }

    /// The caching_sha2_password fast-path response: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)), nonce).
    pub fn sha2(&self, nonce: &[u8]) -> Vec<u8> {
        if self.empty {
            return Vec::new();
        }
        let mask: [u8; 32] = Sha256::new()
            .chain_update(self.sha256_sha256)
            .chain_update(nonce)
            .finalize()
            .into();
        xor(&self.sha256, &mask)
    }

    pub fn verify_native(&self, nonce: &[u8], response: &[u8]) -> bool {
        ct_eq(&self.native(nonce), response)
    }

    pub fn verify_sha2(&self, nonce: &[u8], response: &[u8]) -> bool {
        ct_eq(&self.sha2(nonce), response)
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Known answers computed independently with PyMySQL's `_auth.scramble_native_password` and
    /// `scramble_caching_sha2` for password "secret" and the salt b"0123456789abcdefghij".
    #[test]
    fn scrambles_match_pymysql() {
        let k = MysqlKeys::derive("secret");
        let nonce = b"0123456789abcdefghij";
        assert_eq!(hex(&k.native(nonce)), NATIVE);
        assert_eq!(hex(&k.sha2(nonce)), SHA2);
        assert!(k.verify_native(nonce, &k.native(nonce)));
        assert!(!k.verify_native(nonce, &k.native(b"another-salt-1234567")));
        assert!(!k.verify_sha2(nonce, b""));
        let empty = MysqlKeys::derive("");
        assert!(empty.verify_native(nonce, b""));
        assert!(!empty.verify_native(nonce, &k.native(nonce)));
    }

    const NATIVE: &str = "f5cac3f3b3df2133feb57db682c71e6ed433a988";
    const SHA2: &str = "7e4adda2f2d5ef09b4147518becb0cee2939376203650a8c2bb2815959364bd0";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
