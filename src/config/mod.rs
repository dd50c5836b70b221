//! Loading the YAML configuration: model, defaults, and validation that reports every
//! problem with its path (`sluice check-config`).

pub mod model;

mod cidr;
mod duration;
mod parse;
mod secret_ref;
mod validate;

use std::fmt;
use std::path::Path;

pub use cidr::{Cidr, ParseCidrError};
pub use duration::{Duration, ParseDurationError};
pub use model::*;
pub use secret_ref::{ParseSecretRefError, SecretRef};

/// The files a config names, from whatever parts of it deserialized: config reads none of
/// them, the caller's check does (`app::preflight`), and its problems join the others.
#[derive(Debug, Default)]
pub struct NamedFiles {
    pub tls: Option<Tls>,
    pub jwks: Option<std::path::PathBuf>,
    /// By target group name.
    pub server_tls: Vec<(String, ServerTls)>,
    /// `file:` secrets: (index in `auth`, path, key).
    pub secrets: Vec<(usize, std::path::PathBuf, String)>,
}

/// Checks the files a config names, returning a problem for each that will not do.
pub type FileCheck<'a> = &'a mut dyn FnMut(&NamedFiles) -> Vec<Problem>;

/// Reads and validates the config file at `path`; `file:` secrets resolve against its directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &mut |_| Vec::new())
}

/// [`load`], with `check` run on the files the config names.
pub fn load_with(path: &Path, check: FileCheck<'_>) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem::new(
            &[],
            &format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse_with(&text, base_dir, check)
}

/// Parses and validates config text; `base_dir` stands for the config file's directory.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    parse_with(text, base_dir, &mut |_| Vec::new())
}

/// [`parse`], with `check` run on the files the config names.
pub fn parse_with(
    text: &str,
    base_dir: &Path,
    check: FileCheck<'_>,
) -> Result<Config, ConfigErrors> {
    let root = parse::yaml_to_value(text).map_err(|p| ConfigErrors(vec![p]))?;
    let mut problems = Vec::new();
    let parts = parse::parts(root, base_dir, &mut problems);
    validate::validate(&parts, &mut problems);
    problems.extend(check(&parts.named_files()));
    // Structural and semantic problems of one element end up next to each other.
    problems.sort_by_cached_key(|p| document_order(&p.path));
    match parts.into_config() {
        Some(config) if problems.is_empty() => Ok(config),
        // A part that failed always recorded a problem; the fallback only guards that.
        _ if problems.is_empty() => Err(ConfigErrors(vec![Problem::new(
            &[],
            "the configuration could not be read",
        )])),
        _ => Err(ConfigErrors(problems)),
    }
}

/// The JSON schema of the config file, pretty-printed with a trailing newline; the
/// committed copy is `config/sluice.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Config);
    format!("{:#}\n", schema.as_value())
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

/// One problem, at a YAML path such as `target_groups.pg.health.interval` or
/// `endpoints[1].role` (`(root)` for the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: &[Seg], message: &str) -> Self {
        Self {
            path: format_path(path),
            message: message.to_owned(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One step of a path into the YAML document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub(crate) fn key(k: &str) -> Self {
        Self::Key(k.to_owned())
    }
}

pub(crate) fn format_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return "(root)".to_owned();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                // Quote keys that would make the path ambiguous (`a.b`, spaces, empty).
                if plain {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
        }
    }
    out
}

/// Sort key: section in `Config` field order, then the element within it.
fn document_order(path: &str) -> (usize, usize, String) {
    const SECTIONS: [&str; 10] = [
        "(root)",
        "endpoints",
        "target_groups",
        "auth",
        "admin",
        "idle_client_timeout",
        "idle_client_park_after",
        "shutdown_grace",
        "shutdown_timeout",
        "worker_threads",
    ];
    let split = path.find(['.', '[']).unwrap_or(path.len());
    let (head, rest) = path.split_at(split);
    let rank = SECTIONS
        .iter()
        .position(|s| *s == head)
        .unwrap_or(SECTIONS.len());
    let element = rest.get(1..).unwrap_or_default();
    let element = &element[..element.find(['.', '[', ']']).unwrap_or(element.len())];
    match element.parse::<usize>() {
        Ok(index) if rest.starts_with('[') => (rank, index, String::new()),
        _ => (rank, 0, element.to_owned()),
    }
}

#[cfg(test)]
mod tests;
