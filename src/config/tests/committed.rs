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

/// Every key path the schema has: `a.b`, `list[].key`, `map.<name>.key`.
fn schema_paths(
    root: &serde_json::Value,
    node: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
) {
    if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next().unwrap_or_default();
        schema_paths(root, &root["$defs"][name], prefix, out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in node
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            schema_paths(root, sub, prefix, out);
        }
    }
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (key, sub) in props {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            out.push(path.clone());
            schema_paths(root, sub, &path, out);
        }
    }
    if let Some(items) = node.get("items") {
        schema_paths(root, items, &format!("{prefix}[]"), out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        schema_paths(root, values, &format!("{prefix}.<name>"), out);
    }
}

#[test]
fn docs_configuration_lists_every_key_of_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
    let mut from_schema = Vec::new();
    schema_paths(&schema, &schema, "", &mut from_schema);
    from_schema.sort();
    from_schema.dedup();
    let doc = std::fs::read_to_string(manifest_path("docs/configuration.md")).unwrap();
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
        .collect();
    documented.sort();
    let missing: Vec<_> = from_schema
        .iter()
        .filter(|p| !documented.contains(p))
        .collect();
    let stale: Vec<_> = documented
        .iter()
        .filter(|p| !from_schema.contains(p))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md is out of step with the schema: undocumented {missing:?}, \
         not in the schema {stale:?}"
    );
}
