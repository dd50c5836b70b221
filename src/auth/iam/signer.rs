//! End-to-end IAM: RDS auth tokens sluice signs for its own logins to the instances, with the
//! AWS credentials of its environment (IRSA, instance profile), as
//! `aws rds generate-db-auth-token` would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use super::{IamError, MAX_EXPIRES, encode, presign};

/// A token is used for this long of its 15 minutes, so one in use never expires mid-login.
const REUSE: Duration = Duration::from_secs(600);

/// An RDS auth token for `user` on `host_port`, signed at `at`, exactly as boto3 writes it.
pub fn token(
    host_port: &str,
    region: &str,
    user: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<String, IamError> {
    let identity = credentials.clone().into();
    let mut params = presign(host_port, user, region, &identity, at, MAX_EXPIRES)?;
    // boto3 writes the signature last (aws-sigv4 puts the session token after it).
    params.sort_by_key(|(k, _)| k == "X-Amz-Signature");
    let mut token = format!("{host_port}/?Action=connect&DBUser={}", encode(user));
    for (k, v) in params {
        token.push('&');
        token.push_str(&k);
        token.push('=');
        token.push_str(&encode(&v));
    }
    Ok(token)
}

/// Signs and reuses tokens for the instances of target groups with `server_iam`.
pub struct TokenSigner {
    region: String,
    provider: SharedCredentialsProvider,
    /// By (instance, user): the token and when it was signed.
    tokens: Mutex<HashMap<(String, String), (String, SystemTime)>>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(region: &str, provider: SharedCredentialsProvider) -> Self {
        Self {
            region: region.to_owned(),
            provider,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A token for logging in as `user` to `host_port`; the error is safe to log.
    pub async fn token(&self, host_port: &str, user: &str) -> Result<String, String> {
        let now = SystemTime::now();
        let key = (host_port.to_owned(), user.to_owned());
        {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((token, at)) = tokens.get(&key)
                && now.duration_since(*at).is_ok_and(|age| age < REUSE)
            {
                return Ok(token.clone());
            }
        }
        // The provider caches and refreshes credentials (web identity ones expire hourly).
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| format!("no AWS credentials to sign an RDS IAM token: {e}"))?;
        let signed = token(host_port, &self.region, user, &credentials, now)
            .map_err(|e| format!("signing an RDS IAM token failed: {e}"))?;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (signed.clone(), now));
        Ok(signed)
    }
}
