//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, without channel binding.
//!
//! Keys are derived once per secret ([`ScramKeys::derive`]), so a client login costs a few
//! HMACs rather than 4096 PBKDF2 rounds: what keeps a Lambda connect storm cheap.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

mod client;

pub use client::{MAX_ITERATIONS, SaltedCache, ScramClient, ServerFirst};

pub const MECHANISM: &str = "SCRAM-SHA-256";
const ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message")]
    Malformed,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("password authentication failed")]
    BadProof,
    #[error("the server asks for {0} SCRAM iterations, more than sluice runs ({max})", max = client::MAX_ITERATIONS)]
    TooManyIterations(u32),
}

/// What a SCRAM server must know of a password: salt, iteration count and the two keys.
#[derive(Clone)]
pub struct ScramKeys {
    salt: [u8; 16],
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block ("Hi" in RFC 5802).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// PostgreSQL falls back to the raw bytes when SASLprep rejects a password.
fn saslprep(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

/// Constant-time equality, so a proof check leaks no timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ScramKeys {
    pub fn derive(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive_with(password, salt, ITERATIONS)
    }

    /// Keys for `password` with `like`'s salt and iteration count, so one server-first
    /// message serves an exchange checked against either (old and new password in a rotation).
    pub fn derive_like(password: &str, like: &ScramKeys) -> Self {
        Self::derive_with(password, like.salt, like.iterations)
    }

    /// Keys derived with one iteration: for fuzzing the exchange, not the key stretching.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn for_fuzzing(password: &str) -> Self {
        Self::derive_with(password, [7; 16], 1)
    }

    fn derive_with(password: &str, salt: [u8; 16], iterations: u32) -> Self {
        let salted = hi(saslprep(password).as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

/// One exchange: built from the client-first message, it answers server-first and then checks
/// the client-final message.
#[derive(Debug)]
pub struct ScramExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ScramExchange {
    /// Parses client-first-message and returns the exchange with its server-first-message.
    pub fn start(client_first: &[u8]) -> Result<Self, ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed)?;
        let (cbind, rest) = text.split_once(',').ok_or(ScramError::Malformed)?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed),
        }
        let (_authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed)?;
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let gs2_header = text[..text.len() - bare.len()].to_owned();
        Ok(Self {
            client_first_bare: bare.to_owned(),
            server_first: String::new(),
            nonce,
            gs2_header,
        })
    }

    pub fn server_first(&mut self, keys: &ScramKeys) -> &[u8] {
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(keys.salt),
            keys.iterations
        );
        self.server_first.as_bytes()
    }

    /// Checks client-final-message; on success returns server-final-message.
    pub fn finish(&self, keys: &ScramKeys, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed)?;
        if binding != B64.encode(&self.gs2_header) {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed)?;
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed)?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !ct_eq(&stored, &keys.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&keys.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs tokio-postgres' client SCRAM (the one libpq-compatible drivers use) against ours.
    fn exchange(client_password: &str, server_password: &str) -> Result<(), ScramError> {
        let keys = ScramKeys::derive(server_password);
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let mut ex = ScramExchange::start(client.message())?;
        let first = ex.server_first(&keys).to_vec();
        client.update(&first).unwrap();
        let fin = ex.finish(&keys, client.message())?;
        client
            .finish(fin.as_bytes())
            .expect("client accepts our server signature");
        Ok(())
    }

    #[test]
    fn accepts_right_password_and_refuses_wrong_one() {
        exchange("s3cret", "s3cret").unwrap();
        exchange("pässwörd", "pässwörd").unwrap();
        assert_eq!(exchange("wrong", "s3cret"), Err(ScramError::BadProof));
    }

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::derive_with("pencil", salt.try_into().unwrap(), 4096);
        let mut ex = ScramExchange::start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        ex.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        ex.server_first(&keys);
        let fin = ex
            .finish(&keys, b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn refuses_channel_binding_and_garbage() {
        assert_eq!(
            ScramExchange::start(b"p=tls-server-end-point,,n=,r=abc").unwrap_err(),
            ScramError::ChannelBinding
        );
        assert!(ScramExchange::start(b"garbage").is_err());
        assert!(ScramExchange::start(&[0xff, 0xfe]).is_err());
    }
}
