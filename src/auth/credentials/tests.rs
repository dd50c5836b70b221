//! Rotation handling: a rejected password is re-read and retried, AWSPENDING is tried and then
//! preferred, failures keep the cache, and refreshes are coalesced.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use super::*;

fn secret(password: &str) -> Secret {
    Secret {
        username: "app".into(),
        password: password.into(),
        engine: None,
        host: None,
        port: None,
    }
}

fn write_secret(path: &std::path::Path, password: &str) {
    std::fs::write(
        path,
        format!("app: {{username: app, password: \"{password}\"}}\n"),
    )
    .unwrap();
}

/// Credentials read from a secrets file holding `password`; the file's path to change it.
async fn file_credentials(password: &str) -> (tempfile::TempDir, std::path::PathBuf, Credentials) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.yaml");
    write_secret(&path, password);
    let source = Source::File {
        path: path.clone(),
        key: "app".into(),
    };
    let creds = Credentials::load("app", source).await.unwrap();
    (dir, path, creds)
}

fn rejected() -> ConnectError {
    ConnectError::Refused {
        instance: "db:5432".into(),
        rejected: crate::errors::Rejected::Credentials,
        code: "28P01".into(),
        message: "password authentication failed".into(),
    }
}

/// A database that accepts only `accepted`, recording the passwords it was offered.
async fn database(
    creds: &Credentials,
    accepted: &str,
    tried: &Mutex<Vec<String>>,
) -> Result<(), ConnectError> {
    creds
        .login("app", |c| {
            tried.lock().unwrap().push(c.secret.password.clone());
            let ok = c.secret.password == accepted;
            async move { if ok { Ok(()) } else { Err(rejected()) } }
        })
        .await
}

#[tokio::test]
async fn a_rejected_password_is_read_again_and_retried() {
    let (_dir, path, creds) = file_credentials("old").await;
    write_secret(&path, "new");
    let tried = Mutex::new(Vec::new());
    database(&creds, "new", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["old", "new"]);
    assert_eq!(creds.current().secret.password, "new");
    // Client logins are checked against the new password from now on.
    let nonce = [7u8; 20];
    let client = crate::auth::mysql::MysqlKeys::derive("new").native(&nonce);
    assert!(creds.current().mysql.verify_native(&nonce, &client));
    assert_eq!(creds.current().md5, md5::stored_hash("app", "new"));

    // Still wrong after the re-read: the first rejection is what the caller sees, and the
    // same password is not offered twice.
    tried.lock().unwrap().clear();
    let err = database(&creds, "other", &tried).await.unwrap_err();
    assert_eq!(err.retry(), crate::errors::Retry::WithNewSecret);
    assert_eq!(*tried.lock().unwrap(), ["new"]);
}

#[tokio::test]
async fn other_failures_are_not_retried() {
    let creds = Credentials::fixed("app", secret("pw"));
    let mut calls = 0;
    let err = creds
        .login("app", |_| {
            calls += 1;
            async {
                Err::<(), _>(ConnectError::Unreachable {
                    instance: "db:5432".into(),
                    reason: "connection refused".into(),
                })
            }
        })
        .await
        .unwrap_err();
    assert_ne!(err.retry(), crate::errors::Retry::WithNewSecret);
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn pending_is_tried_and_then_tried_first() {
    let creds = Credentials::new(
        "app",
        Source::Fixed,
        secret("current"),
        Some(secret("pending")),
    );
    let tried = Mutex::new(Vec::new());
    database(&creds, "pending", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["current", "pending"]);
    tried.lock().unwrap().clear();
    database(&creds, "pending", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["pending"]);
    // The rotation is undone (the database has the old password again): back to current.
    tried.lock().unwrap().clear();
    database(&creds, "current", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["pending", "current"]);
    tried.lock().unwrap().clear();
    database(&creds, "current", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["current"]);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cache_and_is_counted() {
    let (_dir, path, creds) = file_credentials("old").await;
    std::fs::remove_file(&path).unwrap();
    assert!(!creds.refresh(Duration::ZERO).await);
    assert_eq!(creds.refresh_failures(), 1);
    assert_eq!(creds.current().secret.password, "old");
}

#[tokio::test]
async fn refreshes_within_the_gap_are_skipped() {
    let (_dir, path, creds) = file_credentials("one").await;
    write_secret(&path, "two");
    assert!(creds.refresh(Duration::from_secs(3600)).await);
    write_secret(&path, "three");
    assert!(!creds.refresh(Duration::from_secs(3600)).await);
    assert_eq!(creds.current().secret.password, "two");
    assert!(creds.refresh(Duration::ZERO).await);
    assert_eq!(creds.current().secret.password, "three");
}

#[test]
fn clients_with_either_password_get_in_during_a_rotation() {
    use crate::auth::scram::ScramExchange;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let versions = derive("app", secret("old"), Some(secret("new")));
    let scram_login = |password: &str| {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut ex = ScramExchange::start(client.message()).unwrap();
        // One server-first (current's salt) whichever password the client holds.
        let first = ex.server_first(&versions.current.scram).to_vec();
        client.update(&first).unwrap();
        let body = client.message().to_vec();
        let fin = versions
            .each()
            .find_map(|c| ex.finish(&c.scram, &body).ok());
        fin.is_some_and(|f| client.finish(f.as_bytes()).is_ok())
    };
    assert!(scram_login("old"));
    assert!(scram_login("new"));
    assert!(!scram_login("neither"));
    let nonce = [3u8; 20];
    let mysql = |password: &str| {
        let response = crate::auth::mysql::MysqlKeys::derive(password).native(&nonce);
        versions
            .each()
            .any(|c| c.mysql.verify_native(&nonce, &response))
    };
    assert!(mysql("old") && mysql("new") && !mysql("neither"));
}

#[tokio::test]
async fn a_read_from_before_the_rejection_does_not_count() {
    let (_dir, path, creds) = file_credentials("old").await;
    // The timer reads the store just before the rotation reaches it.
    assert!(!creds.refresh(Duration::ZERO).await);
    write_secret(&path, "new");
    let tried = Mutex::new(Vec::new());
    database(&creds, "new", &tried).await.unwrap();
    assert_eq!(*tried.lock().unwrap(), ["old", "new"]);
}

#[tokio::test]
async fn versions_already_held_keep_their_derived_keys() {
    let (_dir, path, creds) = file_credentials("old").await;
    let before = creds.current();
    assert!(!creds.refresh(Duration::ZERO).await);
    assert!(Arc::ptr_eq(&before, &creds.current()));
    write_secret(&path, "new");
    assert!(creds.refresh(Duration::ZERO).await);
    assert!(!Arc::ptr_eq(&before, &creds.current()));
}
