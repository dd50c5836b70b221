//! YAML text to typed sections, collecting every structural problem with its path.
//!
//! serde stops at the first error, so the document is first read into a
//! `serde_json::Value`, then each list element and map entry is deserialized on its own.
//! Inside one element, a failing value is removed and the element retried, so an unknown
//! key and a bad duration side by side are both reported.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::model::{AuthEntry, Config, Endpoint, TargetGroup};
use super::{Problem, Seg, format_path};

/// Enough to report every problem of a realistic element; stops pathological inputs.
const MAX_ATTEMPTS: usize = 64;

/// The sections that deserialized. `None` for a section means it was unusable (already
/// reported); `None` for an element means that element was.
#[derive(Debug)]
pub(super) struct Parts {
    pub endpoints: Option<Vec<Option<Endpoint>>>,
    pub target_groups: Option<BTreeMap<String, Option<TargetGroup>>>,
    pub auth: Option<Vec<Option<AuthEntry>>>,
    /// Usernames as written, also of entries that failed, for cross-references.
    pub auth_usernames: Vec<String>,
    /// Everything else, with the three sections above left empty.
    pub rest: Option<Config>,
}

impl Parts {
    pub fn named_files(&self) -> super::NamedFiles {
        let rest = self.rest.as_ref();
        let server_tls = self.target_groups.iter().flatten();
        let auth = self.auth.iter().flatten().enumerate();
        super::NamedFiles {
            tls: rest.and_then(|c| c.tls.clone()),
            jwks: rest
                .and_then(|c| c.jwt.as_ref())
                .map(|j| j.jwks_file.clone()),
            server_tls: server_tls
                .filter_map(|(name, g)| Some((name.clone(), g.as_ref()?.server_tls.clone())))
                .collect(),
            secrets: auth
                .filter_map(|(i, entry)| match &entry.as_ref()?.secret {
                    super::SecretRef::File { path, key } => Some((i, path.clone(), key.clone())),
                    super::SecretRef::AwsSecretsManager(_) => None,
                })
                .collect(),
        }
    }

    /// The whole config, when every part deserialized.
    pub fn into_config(self) -> Option<Config> {
        let mut config = self.rest?;
        config.endpoints = self.endpoints?.into_iter().collect::<Option<_>>()?;
        config.target_groups = self
            .target_groups?
            .into_iter()
            .map(|(name, group)| group.map(|g| (name, g)))
            .collect::<Option<_>>()?;
        config.auth = self.auth?.into_iter().collect::<Option<_>>()?;
        Some(config)
    }
}

/// Reads YAML into a JSON value; the default budgets refuse alias bombs and huge inputs.
pub(super) fn yaml_to_value(text: &str) -> Result<Value, Problem> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| Problem {
        path: format_path(&[]),
        message: format!("invalid YAML: {}", e.without_snippet()),
    })
}

pub(super) fn parts(root: Value, base_dir: &Path, problems: &mut Vec<Problem>) -> Parts {
    let mut root = match root {
        Value::Object(map) => map,
        other => {
            let message = if other.is_null() {
                "the configuration is empty"
            } else {
                "expected a mapping with endpoints, target_groups and auth"
            };
            problems.push(Problem::new(&[], message));
            return Parts {
                endpoints: None,
                target_groups: None,
                auth: None,
                auth_usernames: Vec::new(),
                rest: None,
            };
        }
    };
    let endpoints = take_list(&mut root, "endpoints", problems);
    let groups = take_map(&mut root, "target_groups", problems);
    let auth = take_list(&mut root, "auth", problems);

    let auth_usernames = auth
        .iter()
        .flatten()
        .filter_map(|e| e.get("username")?.as_str().map(str::to_owned))
        .collect();
    let endpoints = endpoints.map(|list| list_items(list, "endpoints", problems));
    let target_groups = groups.map(|map| {
        map.into_iter()
            .map(|(name, v)| {
                let prefix = [Seg::key("target_groups"), Seg::key(&name)];
                let group = check_item::<TargetGroup>(v, &prefix, problems).map(|mut g| {
                    g.server_tls.ca_file = g.server_tls.ca_file.map(|f| base_dir.join(f));
                    g
                });
                (name, group)
            })
            .collect()
    });
    let auth = auth.map(|list| {
        list_items::<AuthEntry>(list, "auth", problems)
            .into_iter()
            .map(|e| {
                e.map(|mut e| {
                    e.secret = e.secret.resolve(base_dir);
                    e
                })
            })
            .collect()
    });
    let rest = check_item::<Config>(Value::Object(root), &[], problems).map(|mut c| {
        if let Some(jwt) = &mut c.jwt {
            jwt.jwks_file = base_dir.join(&jwt.jwks_file);
        }
        if let Some(tls) = &mut c.tls {
            tls.cert = base_dir.join(&tls.cert);
            tls.key = base_dir.join(&tls.key);
        }
        c
    });
    Parts {
        endpoints,
        target_groups,
        auth,
        auth_usernames,
        rest,
    }
}

/// Removes a list section from `root`, leaving an empty stand-in so `Config` still parses.
/// An absent or empty section yields an empty list, for validation to report.
fn take_list(
    root: &mut Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Value>> {
    let section = root.insert(key.to_owned(), Value::Array(Vec::new()));
    match section {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(items),
        Some(_) => {
            problems.push(Problem::new(&[Seg::key(key)], "expected a list"));
            None
        }
    }
}

fn take_map(
    root: &mut Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Map<String, Value>> {
    let section = root.insert(key.to_owned(), Value::Object(Map::new()));
    match section {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            problems.push(Problem::new(
                &[Seg::key(key)],
                "expected a mapping of names to settings",
            ));
            None
        }
    }
}

fn list_items<T: DeserializeOwned>(
    items: Vec<Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Option<T>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| check_item(v, &[Seg::key(key), Seg::Index(i)], problems))
        .collect()
}

/// Deserializes one element, reporting each failing value and retrying without it.
/// Returns the element when it (minus the removed values) deserialized.
fn check_item<T: DeserializeOwned>(
    mut value: Value,
    prefix: &[Seg],
    problems: &mut Vec<Problem>,
) -> Option<T> {
    // Paths in the original document's coordinates: removing a list element shifts
    // later indices, which `removed_indices` maps back.
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    let mut removed_indices: BTreeMap<Vec<Seg>, Vec<usize>> = BTreeMap::new();
    for _ in 0..MAX_ATTEMPTS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(item) => return Some(item),
            Err(err) => err,
        };
        let Some(current) = segments(err.path()) else {
            problems.push(Problem::new(prefix, &err.inner().to_string()));
            return None;
        };
        let original = to_original(&current, &removed_indices);
        let raw = err.inner().to_string();
        // A required value removed below resurfaces as a missing field: not a new problem.
        let ours = missing_field(&raw).is_some_and(|field| {
            let mut child = original.clone();
            child.push(Seg::key(field));
            removed.contains(&child)
        });
        if !ours {
            let offending = lookup(&value, &current);
            let full: Vec<Seg> = prefix
                .iter()
                .cloned()
                .chain(original.iter().cloned())
                .collect();
            problems.push(Problem::new(&full, &reword(&raw, offending)));
        }
        // On a missing field the path is the parent, so removing it drops the parent.
        if current.is_empty() || !remove(&mut value, &current) {
            return None;
        }
        if let Some((Seg::Index(i), parent)) = original.split_last() {
            let list = removed_indices.entry(parent.to_vec()).or_default();
            list.push(*i);
            list.sort_unstable();
        }
        removed.push(original);
    }
    None
}

/// The path as keys and indices; `None` when serde could not tell where it was.
fn segments(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    let mut out = Vec::new();
    for seg in path {
        match seg {
            Segment::Seq { index } => out.push(Seg::Index(*index)),
            Segment::Map { key } => out.push(Seg::Key(key.clone())),
            // A variant name is not a node of the document.
            Segment::Enum { .. } => {}
            Segment::Unknown => return None,
        }
    }
    Some(out)
}

fn to_original(current: &[Seg], removed_indices: &BTreeMap<Vec<Seg>, Vec<usize>>) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(current.len());
    for seg in current {
        let seg = match (seg, removed_indices.get(&out)) {
            (Seg::Index(i), Some(gone)) => {
                let mut original = *i;
                for g in gone {
                    if *g <= original {
                        original += 1;
                    }
                }
                Seg::Index(original)
            }
            _ => seg.clone(),
        };
        out.push(seg);
    }
    out
}

fn lookup<'v>(value: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.get(*i),
    })
}

fn remove(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let parent = parent.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    });
    match (parent, last) {
        (Some(Value::Object(map)), Seg::Key(k)) => map.remove(k).is_some(),
        (Some(Value::Array(items)), Seg::Index(i)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// serde speaks of fields and structs; operators write keys in YAML.
fn reword(message: &str, offending: Option<&Value>) -> String {
    if let Some(field) = missing_field(message) {
        return format!("missing key `{field}`");
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return match rest.split_once("`, ") {
            Some((key, "there are no fields")) => format!("unknown key `{key}`"),
            Some((key, expected)) => format!("unknown key `{key}`, {expected}"),
            None => format!("unknown key `{rest}"),
        };
    }
    if message == "invalid socket address syntax" {
        let shown = offending.and_then(Value::as_str).unwrap_or_default();
        return format!(
            "invalid address `{shown}`: expected IP:PORT such as 127.0.0.1:6432 or [::1]:6432"
        );
    }
    message.to_owned()
}
