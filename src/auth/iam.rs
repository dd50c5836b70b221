//! RDS IAM auth tokens, verified offline: the SigV4 presigned `connect` URL that
//! `aws rds generate-db-auth-token` (boto3's `generate_db_auth_token`) makes, checked for its
//! scope, user, endpoint, lifetime and signature against configured signing keys, then against
//! an allow policy. A verified token is remembered until it expires, so a Lambda storm
//! reusing one token costs one HMAC chain.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use crate::config::IamConfig;

/// The longest lifetime RDS gives a token, and what sluice accepts.
const MAX_EXPIRES: u64 = 900;
/// Clock difference tolerated between the token's signer and sluice.
const SKEW: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most (each is a signature and an expiry).
const CACHE_LIMIT: usize = 10_000;

/// Why a token was refused: logged and audited, never the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    #[error("malformed IAM token")]
    Malformed,
    #[error("IAM token is not an rds-db connect token for this region")]
    Scope,
    #[error("IAM token was issued for another database user")]
    WrongUser,
    #[error("IAM token was issued for another endpoint")]
    WrongHost,
    #[error("IAM token expired")]
    Expired,
    #[error("IAM token is not valid yet")]
    NotYetValid,
    #[error("IAM token lifetime exceeds 900 seconds")]
    TooLong,
    #[error("IAM token signed with an unknown access key")]
    UnknownKey,
    #[error("IAM token signature does not match")]
    BadSignature,
    #[error("the IAM policy does not allow rds-db:connect for this user")]
    Denied,
}

struct SigningKey {
    secret: String,
    principal: String,
}

/// The `iam` section, ready to verify tokens.
pub struct IamVerifier {
    region: String,
    host: String,
    keys: HashMap<String, SigningKey>,
    /// (principal pattern, database user patterns).
    policy: Vec<(String, Vec<String>)>,
    /// Signature of a verified token -> when it expires.
    verified: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for IamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamVerifier")
            .field("region", &self.region)
            .field("host", &self.host)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl IamVerifier {
    /// Reads each signing key's secret from its environment variable.
    pub fn new(config: &IamConfig) -> Result<Self, String> {
        Self::with_env(config, |name| std::env::var(name).ok())
    }

    /// Like [`IamVerifier::new`], with `env` standing for the environment.
    pub fn with_env(
        config: &IamConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for c in &config.credentials {
            let secret = env(&c.secret_access_key_env).ok_or_else(|| {
                format!(
                    "iam: environment variable {} (secret of access key {}) is not set",
                    c.secret_access_key_env, c.access_key_id
                )
            })?;
            keys.insert(
                c.access_key_id.clone(),
                SigningKey {
                    secret,
                    principal: c.principal.clone(),
                },
            );
        }
        Ok(Self {
            region: config.region.clone(),
            host: config.endpoint_host.to_ascii_lowercase(),
            keys,
            policy: config
                .policy
                .iter()
                .map(|p| (p.principal.clone(), p.db_users.clone()))
                .collect(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `token` as the password of `user` connecting to this endpoint's `port`.
    pub fn verify(
        &self,
        token: &str,
        user: &str,
        port: u16,
        now: SystemTime,
    ) -> Result<(), IamError> {
        let t = Token::parse(token)?;
        let (host, token_port) = t.host.rsplit_once(':').ok_or(IamError::Malformed)?;
        if !host.eq_ignore_ascii_case(&self.host) || token_port.parse() != Ok(port) {
            return Err(IamError::WrongHost);
        }
        if t.action != "connect" || t.algorithm != "AWS4-HMAC-SHA256" || t.signed_headers != "host"
        {
            return Err(IamError::Scope);
        }
        let scope: Vec<&str> = t.credential.split('/').collect();
        let [key_id, date, region, service, terminator] = scope[..] else {
            return Err(IamError::Malformed);
        };
        if region != self.region || service != "rds-db" || terminator != "aws4_request" {
            return Err(IamError::Scope);
        }
        if !t.date.starts_with(date) {
            return Err(IamError::Malformed);
        }
        if t.user != user {
            return Err(IamError::WrongUser);
        }
        let signed_at = parse_amz_date(&t.date).ok_or(IamError::Malformed)?;
        let expires: u64 = t.expires.parse().map_err(|_| IamError::Malformed)?;
        if expires > MAX_EXPIRES {
            return Err(IamError::TooLong);
        }
        let expires_at = signed_at + Duration::from_secs(expires);
        if now > expires_at + SKEW {
            return Err(IamError::Expired);
        }
        if now + SKEW < signed_at {
            return Err(IamError::NotYetValid);
        }
        let key = self.keys.get(key_id).ok_or(IamError::UnknownKey)?;
        if !self.allowed(&key.principal, user) {
            return Err(IamError::Denied);
        }
        if self.remembered(&t.signature, now) {
            return Ok(());
        }
        let expected = self.signature(&t, key_id, &key.secret, signed_at, expires)?;
        if !super::scram::ct_eq(expected.as_bytes(), t.signature.as_bytes()) {
            return Err(IamError::BadSignature);
        }
        self.remember(t.signature, expires_at + SKEW, now);
        Ok(())
    }

    fn allowed(&self, principal: &str, user: &str) -> bool {
        self.policy
            .iter()
            .any(|(who, users)| glob(who, principal) && users.iter().any(|u| glob(u, user)))
    }

    fn remembered(&self, signature: &str, now: SystemTime) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(signature).is_some_and(|until| now <= *until)
    }

    fn remember(&self, signature: String, until: SystemTime, now: SystemTime) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_LIMIT {
            verified.retain(|_, until| now <= *until);
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
        }
        verified.insert(signature, until);
    }

    /// The signature the key's owner would have made for this token's request.
    fn signature(
        &self,
        t: &Token,
        key_id: &str,
        secret: &str,
        signed_at: SystemTime,
        expires: u64,
    ) -> Result<String, IamError> {
        let identity =
            Credentials::new(key_id, secret, t.session_token.clone(), None, "sluice-iam").into();
        let params = presign(
            &t.host,
            &t.user,
            &self.region,
            &identity,
            signed_at,
            expires,
        )?;
        params
            .into_iter()
            .find_map(|(k, v)| (k == "X-Amz-Signature").then_some(v))
            .ok_or(IamError::Malformed)
    }
}

/// The query parameters SigV4 adds to `https://{host}/?Action=connect&DBUser={user}`
/// (X-Amz-Algorithm ... X-Amz-Signature, in the order boto3 writes them).
fn presign(
    host: &str,
    user: &str,
    region: &str,
    identity: &aws_smithy_runtime_api::client::identity::Identity,
    signed_at: SystemTime,
    expires: u64,
) -> Result<Vec<(String, String)>, IamError> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(expires));
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("rds-db")
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| IamError::Malformed)?
        .into();
    let url = format!("https://{host}/?Action=connect&DBUser={}", encode(user));
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|_| IamError::Malformed)?;
    let (instructions, _) = sign(request, &params)
        .map_err(|_| IamError::Malformed)?
        .into_parts();
    Ok(instructions
        .params()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_string()))
        .collect())
}

/// The parts of a token, decoded.
#[derive(Debug, Default)]
struct Token {
    host: String,
    action: String,
    user: String,
    algorithm: String,
    credential: String,
    date: String,
    expires: String,
    signed_headers: String,
    signature: String,
    session_token: Option<String>,
}

impl Token {
    fn parse(token: &str) -> Result<Self, IamError> {
        let token = token.strip_prefix("https://").unwrap_or(token);
        let (host, query) = token.split_once("/?").ok_or(IamError::Malformed)?;
        let mut t = Token {
            host: host.to_owned(),
            ..Token::default()
        };
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').ok_or(IamError::Malformed)?;
            let value = decode(value).ok_or(IamError::Malformed)?;
            let slot = match name {
                "Action" => &mut t.action,
                "DBUser" => &mut t.user,
                "X-Amz-Algorithm" => &mut t.algorithm,
                "X-Amz-Credential" => &mut t.credential,
                "X-Amz-Date" => &mut t.date,
                "X-Amz-Expires" => &mut t.expires,
                "X-Amz-SignedHeaders" => &mut t.signed_headers,
                "X-Amz-Signature" => &mut t.signature,
                "X-Amz-Security-Token" => {
                    t.session_token = Some(value);
                    continue;
                }
                // Anything else would be signed too, and sluice would not re-sign it.
                _ => return Err(IamError::Malformed),
            };
            if !slot.is_empty() {
                return Err(IamError::Malformed);
            }
            *slot = value;
        }
        if t.signature.len() != 64 || !t.signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IamError::Malformed);
        }
        Ok(t)
    }
}

fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// SigV4 URI encoding: everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `20261122T143513Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || s.as_bytes()[8] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

pub mod signer;
#[cfg(test)]
mod tests;
