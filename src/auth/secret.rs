//! Database credentials in the RDS secret format, and reading them from a local file.
//!
//! Secrets never appear in logs or errors: `Debug` redacts the password, and every error
//! message here is built so that no value from a secret file can end up in it.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Credentials sluice uses to log in to the database (and that password clients log in with).
///
/// The JSON shape of an RDS-managed secret; fields RDS adds (`dbClusterIdentifier`, ...)
/// are ignored.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Secret {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

/// Why a secret could not be read. No variant carries or prints secret values.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {} is malformed: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("secret file {} has no key `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("secret `{key}` in {} has an empty {field}", path.display())]
    Empty {
        path: PathBuf,
        key: String,
        field: &'static str,
    },
}

/// Reads the secret stored under `key` in a YAML or JSON file mapping keys to secrets.
///
/// Only the entry for `key` is checked, so one malformed entry does not break the others.
pub fn read_file(path: &Path, key: &str) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut options = serde_saphyr::Options::default();
    // A snippet would quote the file's lines, passwords included.
    options.with_snippet = false;
    let found = serde_saphyr::with_deserializer_from_str_with_options(&text, options, |de| {
        Lookup { key }.deserialize(de)
    })
    .map_err(|e| SecretError::Malformed {
        path: path.to_owned(),
        message: e.without_snippet().to_string(),
    })?;
    let secret = found.ok_or_else(|| SecretError::MissingKey {
        path: path.to_owned(),
        key: key.to_owned(),
    })?;
    empty_field(&secret).map_or(Ok(secret), |field| {
        Err(SecretError::Empty {
            path: path.to_owned(),
            key: key.to_owned(),
            field,
        })
    })
}

/// Parses a secret value as Secrets Manager returns it (`SecretString`, RDS JSON). The error
/// names the place and kind of the problem only: serde's own messages may quote a value.
pub fn parse_json(text: &str) -> Result<Secret, String> {
    let secret: Secret = serde_json::from_str(text).map_err(|e| {
        format!(
            "the secret is not RDS secret JSON with username and password \
             ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    match empty_field(&secret) {
        Some(field) => Err(format!("the secret has an empty {field}")),
        None => Ok(secret),
    }
}

fn empty_field(secret: &Secret) -> Option<&'static str> {
    if secret.username.is_empty() {
        Some("username")
    } else if secret.password.is_empty() {
        Some("password")
    } else {
        None
    }
}

/// Scalar and sequence visits that fail with a message naming only the kind of value.
macro_rules! not_a_mapping {
    ($expected:literal) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $expected,
                ", found a boolean"
            )))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $expected,
                ", found a number"
            )))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $expected,
                ", found a number"
            )))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $expected,
                ", found a number"
            )))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $expected,
                ", found a string"
            )))
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Err(E::custom(concat!("expected ", $expected, ", found bytes")))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(concat!(
                "expected ",
                $expected,
                ", found a list"
            )))
        }
    };
}

/// Finds one key in the top-level mapping, skipping the other entries unparsed.
struct Lookup<'a> {
    key: &'a str,
}

impl<'de> DeserializeSeed<'de> for Lookup<'_> {
    type Value = Option<Secret>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Lookup<'_> {
    type Value = Option<Secret>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping from keys to secrets")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if k == self.key && found.is_none() {
                found = Some(map.next_value_seed(SecretSeed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        // An empty file holds no keys; reported as a missing key.
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    not_a_mapping!("a mapping from keys to secrets");
}

/// Deserializes one secret, refusing scalars without echoing them (serde's default
/// "invalid type" message would quote the value, which may be a password).
struct SecretSeed;

impl<'de> DeserializeSeed<'de> for SecretSeed {
    type Value = Secret;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Secret, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SecretSeed {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with username and password")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Secret, A::Error> {
        Secret::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Secret, E> {
        Err(E::custom(
            "expected a mapping with username and password, found nothing",
        ))
    }

    not_a_mapping!("a mapping with username and password");
}

/// RDS writes the port as a number; hand-written secrets often quote it.
fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    struct PortVisitor;

    impl Visitor<'_> for PortVisitor {
        type Value = Option<u16>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u16::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("port is out of range (1-65535)"))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom("port is out of range (1-65535)"))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom("port is not a number in 1-65535"))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(PortVisitor)
}

#[cfg(test)]
mod tests;
