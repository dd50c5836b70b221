//! JWT checks with keys made here: ES256 and EdDSA from a JWKS file, HS256 only when
//! configured, every claim check, and a key rotated by rewriting the file.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header, encode};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use serde_json::json;

use super::*;

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: KeyPair,
}

impl Signer {
    fn es256(kid: &'static str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            kid,
            alg: Algorithm::ES256,
            key,
        }
    }

    fn eddsa(kid: &'static str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        Self {
            kid,
            alg: Algorithm::EdDSA,
            key,
        }
    }

    fn jwk(&self) -> Value {
        let raw = self.key.public_key_raw();
        match self.alg {
            Algorithm::ES256 => {
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])})
            }
            _ => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA",
                "x": B64.encode(raw)}),
        }
    }

    fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.into());
        let der = self.key.serialize_der();
        let key = match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_der(&der),
            _ => EncodingKey::from_ed_der(&der),
        };
        encode(&header, claims, &key).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str) -> Value {
    json!({"iss": "https://issuer.test", "aud": ["sluice", "other"], "sub": sub,
           "exp": now() + 300, "nbf": now() - 10})
}

fn write_jwks(path: &std::path::Path, signers: &[&Signer]) {
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

fn verifier(dir: &std::path::Path, claim: &str, hs256: bool) -> JwtVerifier {
    let config = JwtConfig {
        jwks_file: dir.join("jwks.json"),
        issuer: "https://issuer.test".into(),
        audience: "sluice".into(),
        username_claim: claim.into(),
        hs256_secret_env: hs256.then(|| "JWT_SECRET".into()),
    };
    JwtVerifier::with_env(&config, None, |_| {
        Some("a shared secret of enough length".into())
    })
    .unwrap()
}

#[test]
fn signed_tokens_verify_and_every_claim_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (es, ed) = (Signer::es256("es"), Signer::eddsa("ed"));
    write_jwks(&dir.path().join("jwks.json"), &[&es, &ed]);
    let v = verifier(dir.path(), "sub", false);
    assert_eq!(v.verify(&es.token(&claims("app")), "app"), Ok(()));
    assert_eq!(v.verify(&ed.token(&claims("app")), "app"), Ok(()));
    assert!(v.verify(&es.token(&claims("app")), "admin").is_err());
    let with = |key: &str, value: Value| {
        let mut c = claims("app");
        c[key] = value;
        es.token(&c)
    };
    for (what, token) in [
        ("expired", with("exp", json!(now() - 120))),
        ("not yet valid", with("nbf", json!(now() + 120))),
        ("foreign issuer", with("iss", json!("https://evil.test"))),
        ("other audience", with("aud", json!("someone-else"))),
        ("no user claim", with("sub", json!(42))),
    ] {
        assert!(v.verify(&token, "app").is_err(), "{what} accepted");
    }
    let good = es.token(&claims("app"));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}.{flipped}{}", &sig[1..]);
    assert!(v.verify(&forged, "app").is_err());
    let stranger = Signer::es256("es");
    assert!(v.verify(&stranger.token(&claims("app")), "app").is_err());
    assert!(v.verify("not.a.jwt", "app").is_err());
}

#[test]
fn hs256_only_when_configured_and_claims_by_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let es = Signer::es256("es");
    write_jwks(&dir.path().join("jwks.json"), &[&es]);
    let mut c = claims("system:serviceaccount:prod:app");
    c["kubernetes.io"] = json!({"serviceaccount": {"name": "app"}});
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"a shared secret of enough length"),
    )
    .unwrap();
    assert!(
        verifier(dir.path(), "sub", false)
            .verify(&hs, "app")
            .is_err()
    );
    let v = verifier(dir.path(), "/kubernetes.io/serviceaccount/name", true);
    assert_eq!(v.verify(&hs, "app"), Ok(()));
    assert_eq!(v.verify(&es.token(&c), "app"), Ok(()));
}

#[test]
fn a_rotated_jwks_file_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (old, new) = (Signer::es256("k1"), Signer::es256("k2"));
    write_jwks(&path, &[&old]);
    let v = verifier(dir.path(), "sub", false);
    assert!(v.verify(&new.token(&claims("app")), "app").is_err());
    std::thread::sleep(RECHECK + Duration::from_millis(50));
    write_jwks(&path, &[&new]);
    // Some filesystems keep whole-second modification times.
    let deadline = Instant::now() + Duration::from_secs(3);
    while v.verify(&new.token(&claims("app")), "app").is_err() {
        assert!(Instant::now() < deadline, "rotated key never accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        v.verify(&old.token(&claims("app")), "app").is_err(),
        "retired key still accepted"
    );
}
