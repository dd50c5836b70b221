//! How sluice reaches a target group's instances, the same for every pool and probe of the
//! group: TLS as `server_tls` says, and `server_iam` tokens instead of the secret's password.

use std::sync::Arc;

use super::iam::signer::TokenSigner;
use crate::tls::ServerConnector;

#[derive(Debug, Clone)]
pub struct ServerAccess {
    pub tls: ServerConnector,
    /// `server_iam`: log in with an RDS IAM token instead of the secret's password.
    pub iam: Option<Arc<TokenSigner>>,
}

impl Default for ServerAccess {
    /// Plaintext, with the secret's password.
    fn default() -> Self {
        Self {
            tls: ServerConnector::disabled(),
            iam: None,
        }
    }
}

impl ServerAccess {
    /// The token to log in to `addr` as `user` with under `server_iam`; `None`: log in with
    /// the secret's password. The error is safe to log.
    pub async fn token(&self, addr: &str, user: &str) -> Result<Option<String>, String> {
        match &self.iam {
            Some(signer) => signer.token(addr, user).await.map(Some),
            None => Ok(None),
        }
    }
}
