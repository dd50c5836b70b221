//! IAM and JWT logins on both engines, as RDS Proxy users make them: boto3-minted RDS auth
//! tokens (good, reused, expired, forged, wrong user/host/port) and JWTs from the test's own
//! keys, over TLS; plaintext token logins refused; and sluice's JSON log searched for every
//! token and secret the run used.

use std::process::Command;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{Value, json};

use crate::support::certs::Certs;
use crate::support::mariadb::MariaDb;
use crate::support::postgres::{APP, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice, config_for, config_for_mariadb};
use crate::support::tools::{self, command_output};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SIGNING_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const IAM_HOST: &str = "db.proxy-sluice.us-east-1.rds.amazonaws.com";
const HS_SECRET: &str = "an HS256 secret that must stay out of logs";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An ES256 key, its JWKS, and tokens it signs.
struct Issuer {
    key: KeyPair,
}

impl Issuer {
    fn jwks(&self) -> Value {
        let raw = self.key.public_key_raw();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test-key", "alg": "ES256",
            "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])}]})
    }

    fn token(&self, sub: &str, exp: i64) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("test-key".into());
        let claims =
            json!({"iss": "https://oidc.sluice.test", "aud": "sluice", "sub": sub, "exp": exp});
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&self.key.serialize_der()),
        )
        .unwrap()
    }
}

/// Adds the token users, TLS, `iam` and `jwt` to a generated config; returns it and the JWTs.
fn token_config(yaml: &str, certs: &Certs, engine: &str) -> (String, Value) {
    let leaf = certs.leaf(
        &format!("sluice-{engine}"),
        &["localhost", "127.0.0.1"],
        None,
    );
    let issuer = Issuer {
        key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    };
    let jwks = leaf.cert.with_file_name(format!("jwks-{engine}.json"));
    std::fs::write(&jwks, issuer.jwks().to_string()).unwrap();
    let stranger = Issuer {
        key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    };
    let jwts = json!({
        "good": issuer.token("pod", now() + 300),
        "other_user": issuer.token("app", now() + 300),
        "expired": issuer.token("pod", now() - 600),
        "stranger": stranger.token("pod", now() + 300),
    });
    let yaml = format!(
        "{yaml}  - username: lambda\n    client_auth: iam\n    secret: file:secrets.yaml#app\n  \
         - username: pod\n    client_auth: jwt\n    secret: file:secrets.yaml#app\n\
         tls: {{ cert: {cert}, key: {key} }}\n\
         iam:\n  region: us-east-1\n  endpoint_host: {IAM_HOST}\n  credentials:\n    \
         - {{ access_key_id: {KEY_ID}, secret_access_key_env: LAMBDA_ROLE_SECRET, principal: \"arn:aws:iam::123456789012:role/lambda\" }}\n  \
         policy:\n    - {{ principal: \"arn:aws:iam::123456789012:role/*\", db_users: [lambda] }}\n\
         jwt: {{ jwks_file: {jwks}, issuer: \"https://oidc.sluice.test\", audience: sluice, hs256_secret_env: JWT_HS_SECRET }}\n",
        cert = leaf.cert.display(),
        key = leaf.key.display(),
        jwks = jwks.display(),
    );
    (yaml, jwts)
}

/// Runs the token cases against `proxy` and checks outcomes, audit lines and the log.
fn check(
    proxy: &Sluice,
    certs: &Certs,
    engine: &str,
    jwts: &Value,
    ok: &str,
    refused: &str,
    no_tls: &str,
) {
    let cfg = json!({
        "engine": engine, "port": proxy.port(), "ca": certs.ca(), "region": "us-east-1",
        "key_id": KEY_ID, "secret": SIGNING_SECRET, "iam_host": IAM_HOST,
        "iam_user": "lambda", "jwt_user": "pod", "jwts": jwts, "password_user": [APP.0, APP.1],
    });
    let mut cmd = Command::new(tools::python());
    cmd.arg(crate::drivers::script("token_auth.py"))
        .arg(cfg.to_string());
    let (status, out, err) = command_output(&mut cmd);
    assert!(
        status.success(),
        "token_auth.py: {err}\n{}",
        proxy.log_contents()
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    let cases = &result["cases"];
    let expected = json!({
        "iam_good": ok, "iam_reused": [ok, ok, ok], "iam_plaintext": no_tls,
        "iam_wrong_user": refused, "iam_wrong_host": refused, "iam_wrong_port": refused,
        "iam_forged": refused, "iam_expired": refused, "iam_from_the_future": refused,
        "jwt_good": ok, "jwt_other_user": refused, "jwt_expired": refused,
        "jwt_stranger": refused, "password_user": ok,
    });
    assert_eq!(cases, &expected, "{}", proxy.log_contents());

    let log = proxy.log_contents();
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "sluice::audit")
        .collect();
    let reasons: Vec<&str> = audit
        .iter()
        .filter(|v| v["event"] == "auth_failure")
        .filter_map(|v| v["reason"].as_str())
        .collect();
    for reason in [
        "IAM token expired",
        "IAM token is not valid yet",
        "IAM token signature does not match",
        "IAM token was issued for another database user",
        "IAM token was issued for another endpoint",
        "token login without TLS",
        "JWT names another database user",
    ] {
        assert!(
            reasons.contains(&reason),
            "no audit line for `{reason}`: {reasons:?}"
        );
    }
    let successes = audit
        .iter()
        .filter(|v| v["event"] == "auth_success" && v["method"] == "iam" && v["tls"] == true)
        .count();
    assert_eq!(successes, 4, "IAM logins audited: {audit:?}");
    let mut secrets: Vec<String> = result["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    secrets.extend(
        jwts.as_object()
            .unwrap()
            .values()
            .map(|t| t.as_str().unwrap().to_owned()),
    );
    for t in secrets.clone() {
        // The signature part alone must not leak either.
        secrets.push(t.rsplit(['=', '.']).next().unwrap().to_owned());
    }
    secrets.extend([SIGNING_SECRET, HS_SECRET, APP.1].map(str::to_owned));
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "sluice logged a secret: {secret}"
        );
    }
}

const ENV: [(&str, &str); 3] = [
    ("LAMBDA_ROLE_SECRET", SIGNING_SECRET),
    ("JWT_HS_SECRET", HS_SECRET),
    ("SLUICE_LOG_FORMAT", "json"),
];

#[test]
fn postgres_iam_and_jwt_logins() {
    let pg = PgServer::start();
    let certs = Certs::new("tokens");
    let (yaml, secrets) = config_for(&pg, &ProxyOptions::default());
    let (yaml, jwts) = token_config(&yaml, &certs, "postgres");
    let proxy = Sluice::start_with_env(&yaml, &secrets, &ENV);
    check(&proxy, &certs, "postgres", &jwts, "app", "28P01", "28000");
}

#[test]
fn mariadb_iam_and_jwt_logins() {
    let db = MariaDb::start();
    let certs = Certs::new("tokens");
    let (yaml, secrets) = config_for_mariadb(&db, &ProxyOptions::default());
    let (yaml, jwts) = token_config(&yaml, &certs, "mysql");
    let proxy = Sluice::start_with_env(&yaml, &secrets, &ENV);
    check(&proxy, &certs, "mysql", &jwts, "app", "1045", "3159");
}
