//! IAM token checks against a token boto3's `generate_db_auth_token` made (recorded in
//! CRATES.md with its inputs), and against tokens sluice signs for itself.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::{IamCredential, IamGrant};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const HOST: &str = "mydb.proxy-abc123.us-east-1.rds.amazonaws.com";
/// boto3 1.44.5, `generate_db_auth_token(DBHostname=HOST, Port=5432, DBUsername="app_user")`.
const BOTO3: &str = "mydb.proxy-abc123.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app_user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261122%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261122T143513Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=f802f3545130607fca50a37222db977b1b635594875797075d70ef6f914e20b8";

fn verifier(db_users: &[&str]) -> IamVerifier {
    let config = IamConfig {
        region: "us-east-1".into(),
        endpoint_host: HOST.into(),
        credentials: vec![IamCredential {
            access_key_id: KEY_ID.into(),
            secret_access_key_env: "ROLE_SECRET".into(),
            principal: "arn:aws:iam::123456789012:role/app".into(),
        }],
        policy: vec![IamGrant {
            principal: "arn:aws:iam::123456789012:role/*".into(),
            db_users: db_users.iter().map(|u| (*u).to_owned()).collect(),
        }],
    };
    IamVerifier::with_env(&config, |name| {
        (name == "ROLE_SECRET").then(|| SECRET.to_owned())
    })
    .unwrap()
}

fn signed_at() -> SystemTime {
    parse_amz_date("20261122T143513Z").unwrap()
}

#[test]
fn a_boto3_token_verifies_within_its_lifetime() {
    let v = verifier(&["app_user"]);
    let now = signed_at() + Duration::from_secs(10);
    assert_eq!(v.verify(BOTO3, "app_user", 5432, now), Ok(()));
    // Served from the cache the second time; still checked for user, host and time.
    assert_eq!(v.verify(BOTO3, "app_user", 5432, now), Ok(()));
    assert_eq!(
        v.verify(BOTO3, "other", 5432, now),
        Err(IamError::WrongUser)
    );
    assert_eq!(
        v.verify(BOTO3, "app_user", 6432, now),
        Err(IamError::WrongHost)
    );
    let late = signed_at() + Duration::from_secs(900) + SKEW + Duration::from_secs(1);
    assert_eq!(
        v.verify(BOTO3, "app_user", 5432, late),
        Err(IamError::Expired)
    );
    let early = signed_at() - SKEW - Duration::from_secs(1);
    assert_eq!(
        v.verify(BOTO3, "app_user", 5432, early),
        Err(IamError::NotYetValid)
    );
}

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let now = signed_at() + Duration::from_secs(10);
    let forged = BOTO3.replace("f802f354", "f802f355");
    assert_eq!(
        verifier(&["app_user"]).verify(&forged, "app_user", 5432, now),
        Err(IamError::BadSignature)
    );
    // A token whose DBUser was edited no longer matches its signature.
    let edited = BOTO3.replace("DBUser=app_user", "DBUser=admin");
    assert_eq!(
        verifier(&["*"]).verify(&edited, "admin", 5432, now),
        Err(IamError::BadSignature)
    );
    let other_key = BOTO3.replace(KEY_ID, "AKIAOTHER0000000000X");
    assert_eq!(
        verifier(&["app_user"]).verify(&other_key, "app_user", 5432, now),
        Err(IamError::UnknownKey)
    );
    assert_eq!(
        verifier(&["reporting_*"]).verify(BOTO3, "app_user", 5432, now),
        Err(IamError::Denied)
    );
    let longer = BOTO3.replace("X-Amz-Expires=900", "X-Amz-Expires=3600");
    assert_eq!(
        verifier(&["app_user"]).verify(&longer, "app_user", 5432, now),
        Err(IamError::TooLong)
    );
    for junk in [
        "",
        "password",
        "host:5432/?",
        "h/?Action=connect",
        &BOTO3.replace("&X-Amz-Signature", "&X-Amz-Signature=a&X-Amz-Signature"),
    ] {
        assert_eq!(
            verifier(&["*"]).verify(junk, "app_user", 5432, now),
            Err(IamError::Malformed),
            "{junk}"
        );
    }
}

#[test]
fn globs_and_dates() {
    assert!(glob("*", "anything"));
    assert!(glob("arn:aws:iam::1:role/*", "arn:aws:iam::1:role/app"));
    assert!(glob("a*c*e", "abcde"));
    assert!(!glob("a*c*e", "abcdf"));
    assert!(!glob("app", "app2"));
    assert!(glob("*_ro", "report_ro"));
    assert_eq!(
        parse_amz_date("19700101T000001Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1))
    );
    assert_eq!(
        parse_amz_date("20240229T120000Z")
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_709_208_000
    );
    assert_eq!(parse_amz_date("20241301T000000Z"), None);
}

#[test]
fn sluice_signs_the_token_boto3_signs() {
    let credentials = Credentials::new(KEY_ID, SECRET, None, None, "test");
    let host = format!("{HOST}:5432");
    let signed = signer::token(&host, "us-east-1", "app_user", &credentials, signed_at());
    assert_eq!(signed.unwrap(), BOTO3);
}

#[test]
fn sluice_signs_the_token_boto3_signs_with_a_session_token() {
    // boto3 1.44.5 with session credentials (what IRSA gives a pod), botocore's clock fixed at
    // 2026-11-22 14:35:13 UTC, `generate_db_auth_token(DBHostname=..., Port=3306,
    // DBUsername="app user")` in region eu-west-1.
    const BOTO3_SESSION: &str = "db-1.cluster-abc.eu-west-1.rds.amazonaws.com:3306/?Action=connect&DBUser=app%20user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAIOSFODNN7EXAMPLE%2F20261122%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261122T143513Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2F%2Btoken%3D&X-Amz-Signature=a4f2e0fdcc1c3e20ac4a5ef7316d28a73a0790a79fddc2cde8251b97a15728f7";
    let credentials = Credentials::new(
        "ASIAIOSFODNN7EXAMPLE",
        SECRET,
        Some("IQoJb3JpZ2luX2VjEXAMPLE/+token=".into()),
        None,
        "test",
    );
    let signed = signer::token(
        "db-1.cluster-abc.eu-west-1.rds.amazonaws.com:3306",
        "eu-west-1",
        "app user",
        &credentials,
        signed_at(),
    );
    assert_eq!(signed.unwrap(), BOTO3_SESSION);
}

#[tokio::test]
async fn signed_tokens_are_reused_then_renewed() {
    let provider = aws_credential_types::provider::SharedCredentialsProvider::new(
        Credentials::new(KEY_ID, SECRET, None, None, "test"),
    );
    let signer = signer::TokenSigner::new("us-east-1", provider);
    let host = format!("{HOST}:5432");
    let first = signer.token(&host, "app_user").await.unwrap();
    assert_eq!(signer.token(&host, "app_user").await.unwrap(), first);
    let other = signer.token(&host, "other").await.unwrap();
    assert_ne!(other, first);
    // What sluice signs, its own verifier (and so RDS) accepts.
    let v = verifier(&["app_user"]);
    assert_eq!(
        v.verify(&first, "app_user", 5432, SystemTime::now()),
        Ok(())
    );
}
