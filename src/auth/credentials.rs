//! A user's database credentials as their secret store holds them now: the current version
//! and, while a rotation runs, the pending one, each with the password material derived from it.
//! Re-read on a timer and at once when a database rejects them, so a rotation costs no outage.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::md5;
use super::mysql::MysqlKeys;
use super::scram::ScramKeys;
use super::secret::{self, Secret};
use super::secrets_manager;
use crate::errors::{ConnectError, Retry};

/// Reads of the store caused by rejected logins are at least this far apart: a burst of
/// rejections after a rotation costs one read, and a wrong password in the store cannot make
/// sluice hammer it.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// A client whose password did not match may hold a newer one; this often at most.
const CLIENT_REFRESH_GAP: Duration = Duration::from_secs(30);

/// One version of a secret, with what client logins are checked against.
#[derive(Debug)]
pub struct Credential {
    pub secret: Secret,
    pub scram: ScramKeys,
    /// `md5(password + username)`, what PostgreSQL itself stores for MD5 logins.
    pub md5: String,
    /// SHA-1/SHA-256 hashes for mysql_native_password and caching_sha2_password.
    pub mysql: MysqlKeys,
}

impl Credential {
    /// Derives the client-side material for `name` (the name clients log in with); SCRAM
    /// keys share `like`'s salt when given.
    pub fn derive(name: &str, secret: Secret, like: Option<&ScramKeys>) -> Self {
        Self {
            scram: match like {
                Some(like) => ScramKeys::derive_like(&secret.password, like),
                None => ScramKeys::derive(&secret.password),
            },
            md5: md5::stored_hash(name, &secret.password),
            mysql: MysqlKeys::derive(&secret.password),
            secret,
        }
    }
}

#[derive(Debug)]
pub struct Versions {
    pub current: Arc<Credential>,
    pub pending: Option<Arc<Credential>>,
}

impl Versions {
    /// What a client password is checked against: through a rotation, clients holding
    /// either password get in (current first). Pending shares current's SCRAM salt.
    pub fn each(&self) -> impl Iterator<Item = &Credential> {
        self.each_arc().map(|c| &**c)
    }

    fn each_arc(&self) -> impl Iterator<Item = &Arc<Credential>> {
        std::iter::once(&self.current).chain(self.pending.as_ref())
    }
}

/// Where the secret is read again from.
#[derive(Debug)]
pub enum Source {
    /// Never re-read (the decoy user, tests).
    Fixed,
    File {
        path: PathBuf,
        key: String,
    },
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        id: String,
    },
}

#[derive(Debug)]
pub struct Credentials {
    name: String,
    source: Source,
    versions: ArcSwap<Versions>,
    /// A login with the pending version worked: the database has the new password already,
    /// so later logins try it first until the versions change.
    pending_first: AtomicBool,
    /// When the last read of the store started; the lock makes concurrent refreshes wait
    /// for one.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    failures: AtomicU64,
}

impl Credentials {
    /// Reads the secret for the first time.
    pub async fn load(name: &str, source: Source) -> Result<Self, String> {
        let (current, pending) = read(&source).await?;
        Ok(Self::new(name, source, current, pending))
    }

    /// Credentials whose first read has been done already (by the preflight).
    pub fn with_secret(name: &str, source: Source, secret: Secret) -> Self {
        Self::new(name, source, secret, None)
    }

    pub fn fixed(name: &str, secret: Secret) -> Self {
        Self::new(name, Source::Fixed, secret, None)
    }

    /// A fixed secret whose SCRAM keys take one iteration: for the scripted rigs, which never
    /// check a password, and where 4096 iterations would cost a fuzz run most of its time.
    #[cfg(any(test, fuzzing))]
    pub fn fixed_unstretched(name: &str, secret: Secret) -> Self {
        let fast = super::scram::ScramKeys::for_fuzzing("");
        let current = Arc::new(Credential::derive(name, secret, Some(&fast)));
        Self::with_versions(
            name,
            Source::Fixed,
            Versions {
                current,
                pending: None,
            },
        )
    }

    fn new(name: &str, source: Source, current: Secret, pending: Option<Secret>) -> Self {
        Self::with_versions(name, source, derive(name, current, pending))
    }

    fn with_versions(name: &str, source: Source, versions: Versions) -> Self {
        Self {
            name: name.to_owned(),
            source,
            versions: ArcSwap::from_pointee(versions),
            pending_first: AtomicBool::new(false),
            refreshed: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }

    /// The version client logins are checked against and new pools are keyed by.
    pub fn current(&self) -> Arc<Credential> {
        self.versions.load().current.clone()
    }

    pub fn versions(&self) -> Arc<Versions> {
        self.versions.load_full()
    }

    /// The user these credentials are for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the secret is read again (a file or Secrets Manager, not a fixed one).
    pub fn rereads(&self) -> bool {
        !matches!(self.source, Source::Fixed)
    }

    pub fn from_secrets_manager(&self) -> bool {
        matches!(self.source, Source::SecretsManager { .. })
    }

    /// Refreshes that failed since start (the store unreachable or the secret malformed).
    pub fn refresh_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Reads the secret again unless a read started within `gap`; on failure the cached
    /// versions stay in use. Returns whether the versions changed.
    pub async fn refresh(&self, gap: Duration) -> bool {
        if matches!(self.source, Source::Fixed) {
            return false;
        }
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|at| at.elapsed() < gap) {
            return false;
        }
        self.read_now(&mut last).await
    }

    /// Makes sure a read of the store started after `since` (when the database rejected the
    /// password): one that began earlier may predate the rotation. Reads are at least
    /// [`MIN_REFRESH_GAP`] apart, so this may wait for the next slot instead of skipping.
    async fn refresh_since(&self, since: Instant) {
        if matches!(self.source, Source::Fixed) {
            return;
        }
        let mut last = self.refreshed.lock().await;
        if let Some(at) = *last {
            if at >= since {
                return;
            }
            tokio::time::sleep_until(at + MIN_REFRESH_GAP).await;
        }
        self.read_now(&mut last).await;
    }

    async fn read_now(&self, last: &mut Option<Instant>) -> bool {
        let started = Instant::now();
        let result = read(&self.source).await;
        *last = Some(started);
        match result {
            Ok((current, pending)) => {
                let old = self.versions.load_full();
                // A version already held keeps its derived keys (SCRAM's are 4096 PBKDF2
                // rounds): starting a rotation derives the pending one only, finishing it none.
                let held = |s: &Secret| old.each_arc().find(|c| c.secret == *s).cloned();
                let current = held(&current)
                    .unwrap_or_else(|| Arc::new(Credential::derive(&self.name, current, None)));
                let same_current = Arc::ptr_eq(&current, &old.current);
                // Pending shares current's SCRAM salt: kept only beside the same current.
                let pending = pending.map(|p| match &old.pending {
                    Some(o) if same_current && o.secret == p => o.clone(),
                    _ => Arc::new(Credential::derive(&self.name, p, Some(&current.scram))),
                });
                let same_pending = match (&pending, &old.pending) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                if same_current && same_pending {
                    return false;
                }
                tracing::info!(
                    user = %self.name,
                    rotation_pending = pending.is_some(),
                    "database credentials changed in the secret store"
                );
                self.versions.store(Arc::new(Versions { current, pending }));
                self.pending_first.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user = %self.name, error = %e, "secret refresh failed; cached credentials stay in use");
                false
            }
        }
    }

    /// After a client's password did not match: the client may know a newer password than
    /// the cache, so the store is read again in the background (rarely, since the cause is
    /// more often a wrong password).
    pub fn client_mismatch(self: &Arc<Self>) {
        if matches!(self.source, Source::Fixed) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh(CLIENT_REFRESH_GAP).await;
        });
    }

    /// Logs in as `user` with the version the database most likely accepts; when the database
    /// rejects it, reads the store again and tries the other versions (old and new password
    /// both work through a rotation) before giving up with the first rejection.
    pub async fn login<T, F, Fut>(&self, user: &str, mut attempt: F) -> Result<T, ConnectError>
    where
        F: FnMut(Arc<Credential>) -> Fut,
        Fut: Future<Output = Result<T, ConnectError>>,
    {
        let versions = self.versions();
        let first = match (
            &versions.pending,
            self.pending_first.load(Ordering::Relaxed),
        ) {
            (Some(pending), true) => pending.clone(),
            _ => versions.current.clone(),
        };
        let rejected = match attempt(first.clone()).await {
            Err(e) if e.retry() == Retry::WithNewSecret => e,
            other => return other,
        };
        self.refresh_since(Instant::now()).await;
        let versions = self.versions();
        for (i, other) in versions.each_arc().enumerate() {
            if other.secret.password == first.secret.password || other.secret.username != user {
                continue;
            }
            match attempt(other.clone()).await {
                Err(e) if e.retry() == Retry::WithNewSecret => {}
                other => {
                    if other.is_ok() {
                        self.pending_first.store(i == 1, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(rejected)
    }
}

/// Re-reads each secret every `interval` (the cache's TTL), one after another.
pub async fn refresh_every(all: Vec<Arc<Credentials>>, interval: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for credentials in &all {
            // A refresh a rejected login caused in the last half interval is fresh enough.
            credentials.refresh(interval / 2).await;
        }
    }
}

fn derive(name: &str, current: Secret, pending: Option<Secret>) -> Versions {
    let current = Credential::derive(name, current, None);
    let pending = pending.map(|p| Arc::new(Credential::derive(name, p, Some(&current.scram))));
    Versions {
        current: Arc::new(current),
        pending,
    }
}

async fn read(source: &Source) -> Result<(Secret, Option<Secret>), String> {
    match source {
        Source::Fixed => Err("a fixed secret cannot be read again".into()),
        Source::File { path, key } => secret::read_file(path, key)
            .map(|s| (s, None))
            .map_err(|e| e.to_string()),
        Source::SecretsManager { client, id } => secrets_manager::fetch(client, id)
            .await
            .map(|f| (f.current, f.pending)),
    }
}

impl crate::metrics::SecretReads for Credentials {
    fn name(&self) -> &str {
        Credentials::name(self)
    }
    fn rereads(&self) -> bool {
        Credentials::rereads(self)
    }
    fn refresh_failures(&self) -> u64 {
        Credentials::refresh_failures(self)
    }
}

#[cfg(test)]
mod tests;
