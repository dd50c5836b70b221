//! JWT logins: a signed token (RS/PS/ES/EdDSA from a JWKS file; HS256 only with a configured
//! secret) sent as the password, checked for issuer, audience, expiry and not-before, with a
//! claim naming the database user, as a Kubernetes projected service-account token does.
//! The JWKS file is re-read when it changes, so keys rotate without a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::config::JwtConfig;

/// How often the JWKS file's modification time is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);
/// Clock difference tolerated for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

pub struct JwtVerifier {
    jwks_file: PathBuf,
    issuer: String,
    audience: String,
    username_claim: String,
    hs256: Option<Vec<u8>>,
    jwks: ArcSwap<JwkSet>,
    /// When the file was last looked at, and its modification time then.
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a JWKS file; the message names the file, never its contents.
pub fn read_jwks(path: &std::path::Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "JWKS file {} is not a JSON Web Key Set (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

impl JwtVerifier {
    /// `jwks`: the key set already read from `jwks_file`, if it was.
    pub fn new(config: &JwtConfig, jwks: Option<JwkSet>) -> Result<Self, String> {
        Self::with_env(config, jwks, |name| std::env::var(name).ok())
    }

    /// Like [`JwtVerifier::new`], with `env` standing for the environment.
    pub fn with_env(
        config: &JwtConfig,
        jwks: Option<JwkSet>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let hs256 = match &config.hs256_secret_env {
            Some(name) => Some(
                env(name)
                    .ok_or_else(|| format!("jwt: environment variable {name} is not set"))?
                    .into_bytes(),
            ),
            None => None,
        };
        let stamp = modified(&config.jwks_file);
        Ok(Self {
            jwks: ArcSwap::from_pointee(match jwks {
                Some(set) => set,
                None => read_jwks(&config.jwks_file)?,
            }),
            jwks_file: config.jwks_file.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            username_claim: config.username_claim.clone(),
            hs256,
            checked: Mutex::new((Instant::now(), stamp)),
        })
    }

    /// Re-reads the JWKS file if it changed; a broken new file keeps the old keys.
    fn refresh(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RECHECK {
            return;
        }
        let stamp = modified(&self.jwks_file);
        let before = std::mem::replace(&mut *checked, (Instant::now(), stamp)).1;
        if stamp == before {
            return;
        }
        match read_jwks(&self.jwks_file) {
            Ok(set) => {
                self.jwks.store(Arc::new(set));
                tracing::info!(file = %self.jwks_file.display(), "JWKS reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "JWKS not reloaded; the previous keys stay in use")
            }
        }
    }

    /// Checks `token` as the password of database user `user`; the error is the reason to
    /// log, never containing the token.
    pub fn verify(&self, token: &str, user: &str) -> Result<(), String> {
        self.refresh();
        let header = decode_header(token).map_err(|_| "malformed JWT".to_owned())?;
        let key = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some(secret) => DecodingKey::from_secret(secret),
                None => return Err("JWT signed with HS256, which is not configured".into()),
            },
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(format!("JWT algorithm {:?} is not accepted", header.alg));
            }
            alg => {
                let jwks = self.jwks.load();
                let jwk = match &header.kid {
                    Some(kid) => jwks.find(kid),
                    None if jwks.keys.len() == 1 => jwks.keys.first(),
                    None => None,
                }
                .ok_or_else(|| "no JWKS key matches the JWT's kid".to_owned())?;
                // A key published for one algorithm is not used with another.
                if let Some(declared) = jwk.common.key_algorithm
                    && format!("{declared:?}") != format!("{alg:?}")
                {
                    return Err(format!(
                        "JWT algorithm {alg:?} differs from its key's {declared:?}"
                    ));
                }
                DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWKS key: {e}"))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("JWT refused: {e}"))?
            .claims;
        let named = if self.username_claim.starts_with('/') {
            claims.pointer(&self.username_claim)
        } else {
            claims.get(&self.username_claim)
        };
        match named {
            Some(Value::String(name)) if name == user => Ok(()),
            Some(Value::String(_)) => Err("JWT names another database user".into()),
            _ => Err(format!("JWT has no string claim {}", self.username_claim)),
        }
    }
}

#[cfg(test)]
mod tests;
