//! The files a config names, read once before anything uses them: the client TLS certificate,
//! each target group's server TLS roots, the JWKS and every `file:` secret. `check-config`,
//! start and reload all go through here, so they agree on what is wrong, and start and reload
//! use what was read instead of reading it again. `config` itself reads no files: it hands
//! the list to [`Read::files`] and reports its problems with the others.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::users::Preread;
use crate::auth::{jwt, secret};
use crate::config::{self, Config, ConfigErrors, NamedFiles, Problem, Seg};
use crate::tls::{ClientTls, ServerConnector};

/// A config whose files were all readable, with what they held.
#[derive(Debug)]
pub struct Preflight {
    pub config: Config,
    pub(super) client_tls: Option<Arc<ClientTls>>,
    /// By target group name.
    pub(super) server_tls: HashMap<String, ServerConnector>,
    pub(super) preread: Preread,
}

/// Reads and validates the config file at `path` and every file it names.
pub fn load(path: &Path) -> Result<Preflight, ConfigErrors> {
    let mut read = Read::default();
    let config = config::load_with(path, &mut |files| read.files(files))?;
    Ok(read.into_preflight(config))
}

/// [`load`] for config text; `base_dir` stands for the config file's directory.
pub fn parse(text: &str, base_dir: &Path) -> Result<Preflight, ConfigErrors> {
    let mut read = Read::default();
    let config = config::parse_with(text, base_dir, &mut |files| read.files(files))?;
    Ok(read.into_preflight(config))
}

/// What the named files held, as far as they could be read.
#[derive(Debug, Default)]
struct Read {
    client_tls: Option<Arc<ClientTls>>,
    server_tls: HashMap<String, ServerConnector>,
    preread: Preread,
}

impl Read {
    /// Reads each named file; one that cannot be read is a problem at its path.
    fn files(&mut self, files: &NamedFiles) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, tls) in &files.server_tls {
            match ServerConnector::new(tls) {
                Ok(c) => {
                    self.server_tls.insert(name.clone(), c);
                }
                Err(e) => {
                    let path = [
                        Seg::key("target_groups"),
                        Seg::key(name),
                        Seg::key("server_tls"),
                    ];
                    problems.push(Problem::new(&path, &e.to_string()));
                }
            }
        }
        for (i, path, key) in &files.secrets {
            match secret::read_file(path, key) {
                Ok(s) => {
                    self.preread.secrets.insert((path.clone(), key.clone()), s);
                }
                Err(e) => {
                    let at = [Seg::key("auth"), Seg::Index(*i), Seg::key("secret")];
                    problems.push(Problem::new(&at, &e.to_string()));
                }
            }
        }
        match files.tls.as_ref().map(ClientTls::load) {
            Some(Ok(tls)) => self.client_tls = Some(Arc::new(tls)),
            Some(Err(e)) => problems.push(Problem::new(&[Seg::key("tls")], &e.to_string())),
            None => {}
        }
        if let Some(file) = &files.jwks {
            match jwt::read_jwks(file) {
                Ok(set) => self.preread.jwks = Some(set),
                Err(e) => {
                    problems.push(Problem::new(&[Seg::key("jwt"), Seg::key("jwks_file")], &e))
                }
            }
        }
        problems
    }

    fn into_preflight(self, config: Config) -> Preflight {
        Preflight {
            config,
            client_tls: self.client_tls,
            server_tls: self.server_tls,
            preread: self.preread,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CONFIG: &str = "
endpoints:
  - name: writer
    listen: 127.0.0.1:6432
    target_group: pg
target_groups:
  pg:
    engine: postgres
    instances: [127.0.0.1:5432]
auth:
  - username: app
    secret: file:secrets.yaml#app
";

    /// The problems the preflight finds in `text` (beside a `secrets.yaml`), as lines.
    fn problems(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let secrets = "app: {username: app, password: pw1}\n";
        std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
        match parse(text, dir.path()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_readable_config_keeps_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secrets.yaml"),
            "app: {username: u, password: p}",
        )
        .unwrap();
        let preflight = parse(CONFIG, dir.path()).unwrap();
        let (_, secret) = preflight.preread.secrets.iter().next().unwrap();
        assert_eq!(secret.username, "u");
        assert!(preflight.server_tls.contains_key("pg"));
        assert!(preflight.client_tls.is_none() && preflight.preread.jwks.is_none());
    }

    #[test]
    fn missing_secret_file_and_key_are_reported_without_the_secret() {
        let found = problems(&CONFIG.replace("secrets.yaml#app", "absent.yaml#app"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("auth[0].secret: cannot read secret file "),
            "{found:?}"
        );
        assert!(found[0].contains("absent.yaml"), "{found:?}");
        let found = problems(&CONFIG.replace("secrets.yaml#app", "secrets.yaml#nobody"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("has no key `nobody`"), "{found:?}");
        assert!(!found[0].contains("pw1"), "{found:?}");
    }

    #[test]
    fn unreadable_files_are_reported_with_the_other_problems() {
        let text = CONFIG.replace("127.0.0.1:6432", "nowhere")
            + "tls: { cert: nocert.pem, key: nokey.pem }\n\
               jwt: { jwks_file: missing.json, issuer: i, audience: a }\n";
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("endpoints[0].listen"), "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("tls: ")), "{found:?}");
        let jwks = "jwt.jwks_file: cannot read JWKS file";
        assert!(found.iter().any(|p| p.starts_with(jwks)), "{found:?}");
    }
}
