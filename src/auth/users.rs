//! Who may log in: each `auth:` entry with its secret and the password material derived from it
//! once at load, so a client login costs HMACs, not key derivation.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::iam::{IamError, IamVerifier};
use super::jwt::JwtVerifier;
use super::md5;
use super::mysql::MysqlKeys;
use super::scram::ScramKeys;
use super::secret::{self, Secret};
use crate::config::{ClientAuth, Config, PasswordAuthType, SecretRef};

/// One user as sluice authenticates it and logs in for it.
#[derive(Debug)]
pub struct User {
    pub name: String,
    /// How the client proves who it is: the password exchange below, or a token.
    pub client_auth: ClientAuth,
    pub method: PasswordAuthType,
    /// The credentials sluice logs in to the database with.
    pub secret: Secret,
    pub scram: ScramKeys,
    /// `md5(password + username)`, what PostgreSQL itself stores for MD5 logins.
    pub md5: String,
    /// SHA-1/SHA-256 hashes for mysql_native_password and caching_sha2_password.
    pub mysql: MysqlKeys,
    /// `max_client_connections`, and the sessions open now (counted only under a cap).
    pub max_sessions: Option<u32>,
    sessions: std::sync::atomic::AtomicU32,
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

impl Users {
    pub fn load(config: &Config) -> Result<Self, UsersError> {
        let mut by_name = HashMap::new();
        for entry in &config.auth {
            let fail = |reason: String| UsersError::Secret {
                user: entry.username.clone(),
                reason,
            };
            let secret = match &entry.secret {
                SecretRef::File { path, key } => {
                    secret::read_file(path, key).map_err(|e| fail(e.to_string()))?
                }
                SecretRef::AwsSecretsManager(_) => {
                    return Err(fail(
                        "aws-secretsmanager secrets are not supported by this build yet".into(),
                    ));
                }
            };
            let user = User {
                name: entry.username.clone(),
                client_auth: entry.client_auth,
                method: entry.client_password_auth_type,
                scram: ScramKeys::derive(&secret.password),
                md5: md5::stored_hash(&entry.username, &secret.password),
                mysql: MysqlKeys::derive(&secret.password),
                max_sessions: entry.max_client_connections,
                sessions: Default::default(),
                secret,
            };
            by_name.insert(entry.username.clone(), Arc::new(user));
        }
        let decoy_password: [u8; 16] = rand::random();
        let decoy = Arc::new(User {
            name: String::new(),
            client_auth: ClientAuth::Password,
            method: PasswordAuthType::PostgresScramSha256,
            scram: ScramKeys::derive(&format!("{decoy_password:?}")),
            md5: String::new(),
            mysql: MysqlKeys::derive(&format!("{decoy_password:?}")),
            max_sessions: None,
            sessions: Default::default(),
            secret: Secret {
                username: String::new(),
                password: String::new(),
                engine: None,
                host: None,
                port: None,
            },
        });
        let iam = match &config.iam {
            Some(c) => Some(IamVerifier::new(c).map_err(UsersError::Iam)?),
            None => None,
        };
        let jwt = match &config.jwt {
            Some(c) => Some(JwtVerifier::new(c).map_err(UsersError::Jwt)?),
            None => None,
        };
        Ok(Self {
            by_name,
            decoy: Some(decoy),
            iam,
            jwt,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
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
