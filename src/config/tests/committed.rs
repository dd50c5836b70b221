//! The committed files under `config/` stay valid: the JSON schema and the example configs.

use std::path::{Path, PathBuf};

use super::super::{load, schema_json};

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn committed_schema_is_current() {
    let path = manifest_path("config/sluice.schema.json");
    let current = schema_json();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "{} is out of date; regenerate it with `cargo run -- print-schema > config/sluice.schema.json` \
         or `SLUICE_BLESS=1 cargo test --lib config`",
        path.display()
    );
}

#[test]
fn committed_example_configs_validate() {
    let mut checked = 0;
    for entry in std::fs::read_dir(manifest_path("config")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if !is_yaml || name.starts_with("secrets") || name.contains("schema") {
            continue;
        }
        if let Err(errors) = load(&path) {
            panic!("{} does not validate:\n{errors}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 1, "no example configs found");
}

#[test]
fn load_reports_unreadable_files() {
    let err = load(Path::new("/nonexistent/sluice.yaml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.0[0]
            .to_string()
            .starts_with("(root): cannot read /nonexistent/sluice.yaml")
    );
}
