//! Where an auth entry's database credentials live: `file:PATH#KEY` or `aws-secretsmanager:ID`.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const FILE: &str = "file:";
const AWS: &str = "aws-secretsmanager:";

/// A reference to a secret in the RDS secret format; the secret itself is fetched later.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum SecretRef {
    /// `key` inside a YAML or JSON file mapping keys to secrets.
    File { path: PathBuf, key: String },
    /// A secret ARN or name in AWS Secrets Manager.
    AwsSecretsManager(String),
}

impl SecretRef {
    /// Parses `text`, resolving a relative file path against `base_dir` (the directory of
    /// the config file), so the result does not depend on the process's working directory.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ParseSecretRefError> {
        text.parse::<Self>().map(|r| r.resolve(base_dir))
    }

    /// Makes a relative file path relative to `base_dir` instead; other refs are unchanged.
    #[must_use]
    pub fn resolve(self, base_dir: &Path) -> Self {
        match self {
            Self::File { path, key } if path.is_relative() => Self::File {
                path: base_dir.join(path),
                key,
            },
            other => other,
        }
    }
}

/// Why a secret reference was refused; its Display is the message shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSecretRefError(String);

impl fmt::Display for ParseSecretRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseSecretRefError {}

/// Parses without resolving: a relative path stays as written (see [`SecretRef::parse`]).
impl FromStr for SecretRef {
    type Err = ParseSecretRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ParseSecretRefError(format!("invalid secret `{s}`: {why}"));
        if let Some(rest) = s.strip_prefix(FILE) {
            // The key is after the last `#`, so a path may itself contain `#`.
            let (path, key) = rest
                .rsplit_once('#')
                .ok_or_else(|| err("expected file:PATH#KEY"))?;
            if path.is_empty() {
                return Err(err("the file path is empty (expected file:PATH#KEY)"));
            }
            if key.is_empty() {
                return Err(err("the key after `#` is empty (expected file:PATH#KEY)"));
            }
            Ok(Self::File {
                path: PathBuf::from(path),
                key: key.to_owned(),
            })
        } else if let Some(id) = s.strip_prefix(AWS) {
            if id.trim().is_empty() {
                return Err(err("expected aws-secretsmanager:<arn-or-name>"));
            }
            Ok(Self::AwsSecretsManager(id.to_owned()))
        } else {
            Err(err(
                "expected file:PATH#KEY or aws-secretsmanager:<arn-or-name>",
            ))
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, key } => write!(f, "{FILE}{}#{key}", path.display()),
            Self::AwsSecretsManager(id) => write!(f, "{AWS}{id}"),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for SecretRef {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "file:PATH#KEY (PATH relative to the config file) or aws-secretsmanager:<arn-or-name>.",
            "pattern": "^(file:.+#.+|aws-secretsmanager:.+)$",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_resolve_against_the_config_directory() {
        let base = Path::new("/etc/sluice");
        assert_eq!(
            SecretRef::parse("file:secrets.yaml#app", base).unwrap(),
            SecretRef::File {
                path: PathBuf::from("/etc/sluice/secrets.yaml"),
                key: "app".into()
            }
        );
        assert_eq!(
            SecretRef::parse("file:/run/s.json#a#b", base).unwrap(),
            SecretRef::File {
                path: PathBuf::from("/run/s.json#a"),
                key: "b".into()
            }
        );
    }

    #[test]
    fn aws_ids_are_kept_verbatim() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let text = format!("aws-secretsmanager:{arn}");
        let parsed = SecretRef::parse(&text, Path::new("x")).unwrap();
        assert_eq!(parsed, SecretRef::AwsSecretsManager(arn.into()));
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn refuses_malformed_refs() {
        for bad in [
            "secrets.yaml#app",
            "file:secrets.yaml",
            "file:#app",
            "file:s.yaml#",
            "aws-secretsmanager:",
            "vault:x",
        ] {
            let err = bad.parse::<SecretRef>().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid secret `{bad}`")), "{err}");
        }
    }
}
