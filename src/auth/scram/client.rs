//! Client side of SCRAM-SHA-256 for sluice's own logins to PostgreSQL. The salted password
//! (4096 PBKDF2 rounds) is kept per login and reused while the server's salt and iteration
//! count stay the same, so the reconnect storm after a failover costs a few HMACs per
//! connection instead of blocking a worker thread on PBKDF2 for each.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::{ScramError, ct_eq, hi, hmac, saslprep};

/// A salted password and what it was computed from: a digest of the password (which changes
/// with a rotation), the salt and the iteration count.
type Salted = ([u8; 32], Vec<u8>, u32, [u8; 32]);

/// The last salted password one login computed.
#[derive(Default)]
pub struct SaltedCache(Mutex<Option<Salted>>);

impl std::fmt::Debug for SaltedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltedCache(..)")
    }
}

impl SaltedCache {
    fn salted(&self, password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, s, i, salted)) = slot.as_ref()
            && *d == digest
            && s == salt
            && *i == iterations
        {
            return *salted;
        }
        let salted = hi(saslprep(password).as_bytes(), salt, iterations);
        *slot = Some((digest, salt.to_vec(), iterations, salted));
        salted
    }
}

/// One login's exchange: client-first, then the proof for server-first, then the check of
/// the server's signature.
#[derive(Debug)]
pub struct ScramClient {
    client_first: String,
    server_signature: [u8; 32],
}

impl Default for ScramClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ScramClient {
    /// Starts an exchange; `message()` is the client-first-message.
    pub fn new() -> Self {
        let nonce: [u8; 18] = rand::random();
        Self {
            client_first: format!("n,,n=,r={}", B64.encode(nonce)),
            server_signature: [0; 32],
        }
    }

    pub fn message(&self) -> &[u8] {
        self.client_first.as_bytes()
    }

    /// The client-final-message answering `server_first`.
    pub fn answer(
        &mut self,
        server_first: &[u8],
        password: &str,
        cache: &SaltedCache,
    ) -> Result<String, ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed)?;
        let attr = |k: &str| text.split(',').find_map(|a| a.strip_prefix(k));
        let nonce = attr("r=").ok_or(ScramError::Malformed)?;
        let ours = &self.client_first["n,,n=,r=".len()..];
        if !nonce.starts_with(ours) || nonce.len() == ours.len() {
            return Err(ScramError::Nonce);
        }
        let salt = attr("s=")
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed)?;
        let iterations: u32 = attr("i=")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0)
            .ok_or(ScramError::Malformed)?;
        let salted = cache.salted(password, &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", &self.client_first[3..]);
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, &[b"Server Key"]);
        self.server_signature = hmac(&server_key, &[auth_message.as_bytes()]);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message: the server proves it knew the password too.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed)?;
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::BadProof)?;
        if ct_eq(&v, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::BadProof)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{ScramExchange, ScramKeys};
    use super::*;

    fn login(
        client_password: &str,
        server: &ScramKeys,
        cache: &SaltedCache,
    ) -> Result<(), ScramError> {
        let mut client = ScramClient::new();
        let mut ex = ScramExchange::start(client.message())?;
        let first = ex.server_first(server).to_vec();
        let fin = client.answer(&first, client_password, cache)?;
        let server_final = ex.finish(server, fin.as_bytes())?;
        client.finish(server_final.as_bytes())
    }

    #[test]
    fn logs_in_to_our_server_side_and_reuses_the_salted_password() {
        let keys = ScramKeys::derive("pässwörd");
        let cache = SaltedCache::default();
        login("pässwörd", &keys, &cache).unwrap();
        let first = cache.0.lock().unwrap().clone().unwrap();
        login("pässwörd", &keys, &cache).unwrap();
        assert_eq!(cache.0.lock().unwrap().clone().unwrap(), first);
        assert_eq!(
            login("wrong", &keys, &SaltedCache::default()),
            Err(ScramError::BadProof)
        );
        // A new salt (the password was changed on the server) is not answered from the cache.
        let changed = ScramKeys::derive("new");
        login("new", &changed, &cache).unwrap();
    }

    #[test]
    fn refuses_a_server_that_does_not_know_the_password_or_echo_the_nonce() {
        let cache = SaltedCache::default();
        let mut client = ScramClient::new();
        let ours = String::from_utf8(client.message()[8..].to_vec()).unwrap();
        let first = format!("r={ours}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        client.answer(first.as_bytes(), "pencil", &cache).unwrap();
        assert_eq!(
            client.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadProof)
        );
        assert_eq!(client.finish(b"e=invalid-proof"), Err(ScramError::BadProof));
        let mut other = ScramClient::new();
        assert_eq!(
            other.answer(b"r=someoneelse,s=AAAA,i=4096", "pencil", &cache),
            Err(ScramError::Nonce)
        );
    }
}
