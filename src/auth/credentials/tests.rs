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

fn rejected() -> ConnectError {
    ConnectError::Refused {
        instance: "db:5432".into(),
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.yaml");
    write_secret(&path, "old");
    let source = Source::File {
        path: path.clone(),
        key: "app".into(),
    };
    let creds = Credentials::load("app", source).await.unwrap();
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
    assert!(err.is_rejected_login());
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
    assert!(!err.is_rejected_login());
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.yaml");
    write_secret(&path, "old");
    let source = Source::File {
        path: path.clone(),
        key: "app".into(),
    };
    let creds = Credentials::load("app", source).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!creds.refresh(Duration::ZERO).await);
    assert_eq!(creds.refresh_failures(), 1);
    assert_eq!(creds.current().secret.password, "old");
}

#[tokio::test]
async fn refreshes_within_the_gap_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.yaml");
    write_secret(&path, "one");
    let source = Source::File {
        path: path.clone(),
        key: "app".into(),
    };
    let creds = Credentials::load("app", source).await.unwrap();
    write_secret(&path, "two");
    assert!(creds.refresh(Duration::from_secs(3600)).await);
    write_secret(&path, "three");
    assert!(!creds.refresh(Duration::from_secs(3600)).await);
    assert_eq!(creds.current().secret.password, "two");
    assert!(creds.refresh(Duration::ZERO).await);
    assert_eq!(creds.current().secret.password, "three");
}
