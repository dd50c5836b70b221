//! Client side of SCRAM-SHA-256 for sluice's own logins to PostgreSQL. The salted password
//! (4096 PBKDF2 rounds) is kept per login and reused while the server's salt and iteration
//! count stay the same, so the reconnect storm after a failover costs a few HMACs per
//! connection; a derivation runs on tokio's blocking pool, never on a thread serving sessions.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::{ScramError, ct_eq, hi, hmac, saslprep};

/// The most PBKDF2 iterations sluice runs for a server. PostgreSQL's default is 4096 and each
/// million costs about half a second of CPU; a server asking for more is refused, since a
/// malicious or broken one could otherwise hold a thread for hours (PgBouncer CVE-2026-6666).
pub const MAX_ITERATIONS: u32 = 1_000_000;

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
    /// The salted password `first` asks for: from the cache while the password, salt and
    /// count stay the same, else derived on the blocking pool.
    pub async fn salted(self: &Arc<Self>, password: &str, first: &ServerFirst) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if let Some(salted) = self.cached(&digest, first) {
            return salted;
        }
        let (prepared, salt, iterations) = (
            saslprep(password).into_owned().into_bytes(),
            first.salt.clone(),
            first.iterations,
        );
        let derive = move || hi(&prepared, &salt, iterations);
        let salted = match tokio::task::spawn_blocking(derive.clone()).await {
            Ok(salted) => salted,
            // The runtime is shutting down; finishing here is all that is left.
            Err(_) => derive(),
        };
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some((digest, first.salt.clone(), first.iterations, salted));
        salted
    }

    fn cached(&self, digest: &[u8; 32], first: &ServerFirst) -> Option<[u8; 32]> {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (d, s, i, salted) = slot.as_ref()?;
        (d == digest && *s == first.salt && *i == first.iterations).then_some(*salted)
    }
}

/// What the server's first message says: the combined nonce, the salt and the iteration count.
#[derive(Debug)]
pub struct ServerFirst {
    text: String,
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl ServerFirst {
    pub fn iterations(&self) -> u32 {
        self.iterations
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

    /// An exchange with a fixed nonce, so a fuzzer can write server-firsts that extend it.
    #[cfg(any(test, fuzzing))]
    pub fn for_fuzzing() -> Self {
        Self {
            client_first: "n,,n=,r=fuzzNONCEfuzzNONCEfuzz".to_owned(),
            server_signature: [0; 32],
        }
    }

    pub fn message(&self) -> &[u8] {
        self.client_first.as_bytes()
    }

    /// Reads server-first-message: it must extend our nonce and ask for a bounded count.
    pub fn read_server_first(&self, server_first: &[u8]) -> Result<ServerFirst, ScramError> {
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
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        Ok(ServerFirst {
            text: text.to_owned(),
            nonce: nonce.to_owned(),
            salt,
            iterations,
        })
    }

    /// The client-final-message answering `first`, with the password salted as it asked.
    pub fn answer(&mut self, first: &ServerFirst, salted: &[u8; 32]) -> String {
        let client_key = hmac(salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!("{},{},{without_proof}", &self.client_first[3..], first.text);
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(salted, &[b"Server Key"]);
        self.server_signature = hmac(&server_key, &[auth_message.as_bytes()]);
        format!("{without_proof},p={}", B64.encode(proof))
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

    async fn login(
        client_password: &str,
        server: &ScramKeys,
        cache: &Arc<SaltedCache>,
    ) -> Result<(), ScramError> {
        let mut client = ScramClient::new();
        let mut ex = ScramExchange::start(client.message())?;
        let first = client.read_server_first(ex.server_first(server))?;
        let salted = cache.salted(client_password, &first).await;
        let fin = client.answer(&first, &salted);
        let server_final = ex.finish(server, fin.as_bytes())?;
        client.finish(server_final.as_bytes())
    }

    #[tokio::test]
    async fn logs_in_to_our_server_side_and_reuses_the_salted_password() {
        let keys = ScramKeys::derive("pässwörd");
        let cache = Arc::new(SaltedCache::default());
        login("pässwörd", &keys, &cache).await.unwrap();
        let first = cache.0.lock().unwrap().clone().unwrap();
        login("pässwörd", &keys, &cache).await.unwrap();
        assert_eq!(cache.0.lock().unwrap().clone().unwrap(), first);
        assert_eq!(
            login("wrong", &keys, &Arc::default()).await,
            Err(ScramError::BadProof)
        );
        // A new salt (the password was changed on the server) is not answered from the cache.
        let changed = ScramKeys::derive("new");
        login("new", &changed, &cache).await.unwrap();
    }

    #[tokio::test]
    async fn refuses_a_server_that_does_not_know_the_password_or_echo_the_nonce() {
        let cache = Arc::new(SaltedCache::default());
        let mut client = ScramClient::new();
        let ours = String::from_utf8(client.message()[8..].to_vec()).unwrap();
        let text = format!("r={ours}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let first = client.read_server_first(text.as_bytes()).unwrap();
        let salted = cache.salted("pencil", &first).await;
        client.answer(&first, &salted);
        assert_eq!(
            client.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadProof)
        );
        assert_eq!(client.finish(b"e=invalid-proof"), Err(ScramError::BadProof));
        let other = ScramClient::new();
        assert_eq!(
            other
                .read_server_first(b"r=someoneelse,s=AAAA,i=4096")
                .unwrap_err(),
            ScramError::Nonce
        );
    }

    /// PgBouncer CVE-2026-6666: the count is checked before any derivation starts.
    #[test]
    fn refuses_an_iteration_count_past_the_cap() {
        let client = ScramClient::new();
        let ours = String::from_utf8(client.message()[8..].to_vec()).unwrap();
        let ask = |i: u64| client.read_server_first(format!("r={ours}x,s=AAAA,i={i}").as_bytes());
        assert!(ask(u64::from(MAX_ITERATIONS)).is_ok());
        assert_eq!(
            ask(u64::from(MAX_ITERATIONS) + 1).unwrap_err(),
            ScramError::TooManyIterations(MAX_ITERATIONS + 1)
        );
        assert_eq!(ask(1 << 40).unwrap_err(), ScramError::Malformed);
        assert_eq!(ask(0).unwrap_err(), ScramError::Malformed);
    }
}
