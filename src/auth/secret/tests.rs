//! Unit tests for reading RDS-format secrets from files.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use super::*;

const PASSWORD: &str = "hunter2-Sup3rSecret";

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn reads_yaml_and_ignores_other_entries_and_fields() {
    let f = file_with(&format!(
        "other: [not, a, secret]\napp:\n  username: app\n  password: {PASSWORD}\n  engine: postgres\n  host: db.example\n  port: 5432\n  dbClusterIdentifier: c1\n"
    ));
    let s = read_file(f.path(), "app").unwrap();
    assert_eq!(s.username, "app");
    assert_eq!(s.password, PASSWORD);
    assert_eq!(s.engine.as_deref(), Some("postgres"));
    assert_eq!(s.host.as_deref(), Some("db.example"));
    assert_eq!(s.port, Some(5432));
}

#[test]
fn reads_json_rds_format() {
    let f = file_with(&format!(
        r#"{{"app": {{"username": "app", "password": "{PASSWORD}", "port": "6543", "dbInstanceIdentifier": "x"}}}}"#
    ));
    let s = read_file(f.path(), "app").unwrap();
    assert_eq!((s.username.as_str(), s.port), ("app", Some(6543)));
    assert_eq!(s.engine, None);
}

#[test]
fn plain_numeric_password_keeps_its_text() {
    let f = file_with("app: {username: app, password: 007}\n");
    assert_eq!(read_file(f.path(), "app").unwrap().password, "007");
}

#[test]
fn debug_redacts_the_password() {
    let f = file_with(&format!("app: {{username: app, password: {PASSWORD}}}\n"));
    let s = read_file(f.path(), "app").unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn missing_file_and_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_file(&dir.path().join("nope.yaml"), "app").unwrap_err();
    assert!(matches!(err, SecretError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.yaml"));

    let f = file_with("monitor: {username: m, password: p}\n");
    let err = read_file(f.path(), "app").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("secret file {} has no key `app`", f.path().display())
    );
    let f = file_with("");
    assert!(matches!(
        read_file(f.path(), "app"),
        Err(SecretError::MissingKey { .. })
    ));
}

#[test]
fn missing_and_empty_fields() {
    let f = file_with(&format!("app: {{password: {PASSWORD}}}\n"));
    let err = read_file(f.path(), "app").unwrap_err().to_string();
    assert!(err.contains("username"), "{err}");
    let f = file_with("app: {username: app, password: ''}\n");
    let err = read_file(f.path(), "app").unwrap_err().to_string();
    assert!(err.contains("empty password"), "{err}");
}

#[test]
fn errors_never_contain_the_password() {
    let cases = [
        format!("{PASSWORD}\n"),
        format!("app: {PASSWORD}\n"),
        format!("app: [{PASSWORD}]\n"),
        format!("app: {{username: app, password: [{PASSWORD}]}}\n"),
        format!("app: {{username: app, password: {PASSWORD}, port: {PASSWORD}}}\n"),
        format!("app: {{username: app, password: {PASSWORD}, port: 70000}}\n"),
        format!("app: {{username: app, password: \"{PASSWORD}\"\n"),
        format!("app:\n  username: app\n  password: {PASSWORD}\n  password: {PASSWORD}\n"),
        format!("app:\n  username: app\n  password: {PASSWORD}\n bad-indent: [\n"),
        format!("{{\"app\": {{\"username\": \"app\", \"password\": \"{PASSWORD}\",}}\n"),
    ];
    for text in cases {
        let f = file_with(&text);
        let err = read_file(f.path(), "app").unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains(PASSWORD),
                "leaked in {shown:?} for {text:?}"
            );
            assert!(!shown.contains("Sup3r"), "leaked in {shown:?} for {text:?}");
        }
    }
}

#[test]
fn secrets_manager_json_is_parsed_and_its_errors_hold_no_value() {
    let ok = parse_json(r#"{"username":"app","password":"pw","engine":"postgres","port":5432,"dbClusterIdentifier":"c"}"#).unwrap();
    assert_eq!(
        (ok.username.as_str(), ok.password.as_str(), ok.port),
        ("app", "pw", Some(5432))
    );
    for (text, leak) in [
        (r#"{"username":"app","password":98765432}"#, "98765432"),
        (
            r#"{"username":"app","password":"hunter2-secret""#,
            "hunter2-secret",
        ),
        (r#"{"username":"app"}"#, "app\""),
        (r#"{"username":"app","password":""}"#, "\"\""),
        ("not json", "not json"),
    ] {
        let err = parse_json(text).unwrap_err();
        assert!(!err.contains(leak), "{err}");
    }
    assert_eq!(
        parse_json(r#"{"username":"app","password":""}"#).unwrap_err(),
        "the secret has an empty password"
    );
}
