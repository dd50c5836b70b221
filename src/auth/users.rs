//! Who may log in: each `auth:` entry with its secret and the password material derived from it
//! once at load, so a client login costs HMACs, not key derivation.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::credentials::{Credential, Credentials, Source};
use super::iam::{IamError, IamVerifier};
use super::jwt::JwtVerifier;
use super::secret::Secret;
use super::secrets_manager::AwsEnv;
use crate::config::{AuthEntry, ClientAuth, Config, PasswordAuthType, SecretRef};

/// One user as sluice authenticates it and logs in for it.
#[derive(Debug)]
pub struct User {
    pub name: String,
    /// How the client proves who it is: the password exchange below, or a token.
    pub client_auth: ClientAuth,
    pub method: PasswordAuthType,
    /// The credentials sluice logs in to the database with (and checks client passwords
    /// against), shared with the pools so a rotation reaches them.
    pub credentials: Arc<Credentials>,
    /// `max_client_connections`, and the sessions open now (counted only under a cap).
    pub max_sessions: Option<u32>,
    sessions: std::sync::atomic::AtomicU32,
    /// Where the secret came from (`None`: the decoy); a reload keeps the credentials of an
    /// entry whose reference did not change.
    secret: Option<SecretRef>,
}

/// One of a capped user's sessions; gives its place back when dropped.
#[derive(Debug)]
pub struct SessionSlot(Arc<User>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0
            .sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl User {
    /// The user an `auth:` entry describes, logging in with `credentials`.
    fn for_entry(entry: &AuthEntry, credentials: Arc<Credentials>) -> Self {
        Self {
            name: entry.username.clone(),
            client_auth: entry.client_auth,
            method: entry.client_password_auth_type,
            credentials,
            max_sessions: entry.max_client_connections,
            sessions: Default::default(),
            secret: Some(entry.secret.clone()),
        }
    }

    /// The secret's current version (one atomic load).
    pub fn credential(&self) -> Arc<Credential> {
        self.credentials.current()
    }

    /// A place for one more session, or `Err` when the user is at `max_client_connections`;
    /// `Ok(None)` for users without a cap.
    pub fn open_session(self: &Arc<Self>) -> Result<Option<SessionSlot>, u32> {
        let Some(max) = self.max_sessions else {
            return Ok(None);
        };
        let counted = self.sessions.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| (n < max).then_some(n + 1),
        );
        counted
            .map(|_| Some(SessionSlot(self.clone())))
            .map_err(|_| max)
    }
}

#[derive(Debug, Error)]
pub enum UsersError {
    #[error("auth entry {user}: {reason}")]
    Secret { user: String, reason: String },
    #[error("{0}")]
    Iam(String),
    #[error("{0}")]
    Jwt(String),
}

#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    /// Answers logins of unknown users like real ones, so names cannot be probed.
    decoy: Option<Arc<User>>,
    iam: Option<IamVerifier>,
    jwt: Option<JwtVerifier>,
}

/// What the preflight already read from the files the config names, so a start or reload
/// reads each once; anything missing here is read where it is needed.
#[derive(Debug, Default)]
pub struct Preread {
    pub jwks: Option<jsonwebtoken::jwk::JwkSet>,
    /// `file:` secrets by (path, key).
    pub secrets: HashMap<(std::path::PathBuf, String), Secret>,
}

/// The user every unknown name is checked against, so a wrong name costs what a wrong
/// password does and reveals nothing: its password is random and never told.
fn decoy() -> Arc<User> {
    let decoy_password: [u8; 16] = rand::random();
    let decoy_secret = Secret {
        username: String::new(),
        password: format!("{decoy_password:?}"),
        engine: None,
        host: None,
        port: None,
    };
    Arc::new(User {
        name: String::new(),
        client_auth: ClientAuth::Password,
        method: PasswordAuthType::PostgresScramSha256,
        credentials: Arc::new(Credentials::fixed("", decoy_secret)),
        max_sessions: None,
        sessions: Default::default(),
        secret: None,
    })
}

/// A new entry's credentials: its secret as the preflight read it, or read now.
async fn first_read(
    entry: &AuthEntry,
    aws: &AwsEnv<'_>,
    client: &tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>,
    preread: &Preread,
) -> Result<Credentials, UsersError> {
    let source = match &entry.secret {
        SecretRef::File { path, key } => Source::File {
            path: path.clone(),
            key: key.clone(),
        },
        SecretRef::AwsSecretsManager(id) => {
            let client = client
                .get_or_init(|| async { aws_sdk_secretsmanager::Client::new(aws.config().await) })
                .await;
            Source::SecretsManager {
                client: client.clone(),
                id: id.clone(),
            }
        }
    };
    let read = match &entry.secret {
        SecretRef::File { path, key } => preread.secrets.get(&(path.clone(), key.clone())),
        SecretRef::AwsSecretsManager(_) => None,
    };
    let credentials = match read {
        Some(secret) => Credentials::with_secret(&entry.username, source, secret.clone()),
        None => Credentials::load(&entry.username, source)
            .await
            .map_err(|reason| UsersError::Secret {
                user: entry.username.clone(),
                reason,
            })?,
    };
    Ok(credentials)
}

impl Users {
    /// Reads every user's secret; `aws-secretsmanager:` ones through one client.
    pub async fn load(
        config: &Config,
        aws: &AwsEnv<'_>,
        preread: &Preread,
    ) -> Result<Self, UsersError> {
        Self::reload(config, aws, None, preread).await
    }

    /// Loads the users of `config`, keeping from `previous` what a reload must not disturb:
    /// an entry whose secret reference is unchanged keeps its credentials (pools and the
    /// refresh timer hold them; the secret is read again), and an entry unchanged in every
    /// way keeps its user (with its session count under `max_client_connections`).
    pub async fn reload(
        config: &Config,
        aws: &AwsEnv<'_>,
        previous: Option<&Users>,
        preread: &Preread,
    ) -> Result<Self, UsersError> {
        let mut by_name = HashMap::new();
        // One Secrets Manager client for all users, made only if one needs it.
        let client = tokio::sync::OnceCell::new();
        for entry in &config.auth {
            let kept = previous
                .and_then(|p| p.by_name.get(&entry.username))
                .filter(|u| u.secret.as_ref() == Some(&entry.secret));
            if let Some(old) = kept {
                // Ignore the age of the last read: a reload asks for the secret as it is now.
                old.credentials.refresh(std::time::Duration::ZERO).await;
                let same = old.client_auth == entry.client_auth
                    && old.method == entry.client_password_auth_type
                    && old.max_sessions == entry.max_client_connections;
                let user = if same {
                    old.clone()
                } else {
                    Arc::new(User::for_entry(entry, old.credentials.clone()))
                };
                by_name.insert(entry.username.clone(), user);
                continue;
            }
            let credentials = first_read(entry, aws, &client, preread).await?;
            let user = User::for_entry(entry, Arc::new(credentials));
            by_name.insert(entry.username.clone(), Arc::new(user));
        }
        let iam = match &config.iam {
            Some(c) => Some(IamVerifier::new(c).map_err(UsersError::Iam)?),
            None => None,
        };
        let jwt = match &config.jwt {
            Some(c) => Some(JwtVerifier::new(c, preread.jwks.clone()).map_err(UsersError::Jwt)?),
            None => None,
        };
        Ok(Self {
            by_name,
            decoy: Some(decoy()),
            iam,
            jwt,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// Every user's credentials.
    pub fn credentials(&self) -> impl Iterator<Item = &Arc<Credentials>> {
        self.by_name.values().map(|u| &u.credentials)
    }

    /// Every user whose secret lives in Secrets Manager, for the refresh timer.
    pub fn from_secrets_manager(&self) -> impl Iterator<Item = &Arc<Credentials>> {
        self.by_name
            .values()
            .map(|u| &u.credentials)
            .filter(|c| c.from_secrets_manager())
    }

    /// Checks a token sent as `user`'s password on an endpoint listening on `port`; the
    /// error is the reason to log (the client learns only that the login failed).
    pub fn verify_token(&self, user: &User, token: &str, port: u16) -> Result<(), String> {
        let now = std::time::SystemTime::now();
        match user.client_auth {
            ClientAuth::Iam => match &self.iam {
                Some(iam) => iam
                    .verify(token, &user.name, port, now)
                    .map_err(|e: IamError| e.to_string()),
                None => Err("no iam section configured".into()),
            },
            ClientAuth::Jwt => match &self.jwt {
                Some(jwt) => jwt.verify(token, &user.name),
                None => Err("no jwt section configured".into()),
            },
            ClientAuth::Password => Err("not a token user".into()),
        }
    }

    /// A user no password matches, for running the exchange with an unknown name.
    pub fn decoy(&self) -> Option<&Arc<User>> {
        self.decoy.as_ref()
    }
}
