//! How sluice reaches a target group's instances, the same for every pool and probe of the
//! group: TLS as `server_tls` says, `server_iam` tokens instead of the secret's password, and
//! how long a silent TCP path is trusted.

use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use super::iam::signer::TokenSigner;
use crate::tls::ServerConnector;

#[derive(Debug, Clone)]
pub struct ServerAccess {
    pub tls: ServerConnector,
    /// `server_iam`: log in with an RDS IAM token instead of the secret's password.
    pub iam: Option<Arc<TokenSigner>>,
    /// `connection_pool.tcp_user_timeout`; zero leaves dead paths to the kernel.
    pub tcp_user_timeout: Duration,
}

impl Default for ServerAccess {
    /// Plaintext, with the secret's password.
    fn default() -> Self {
        Self {
            tls: ServerConnector::disabled(),
            iam: None,
            tcp_user_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerAccess {
    /// Makes a server socket fail once its path is dead for `tcp_user_timeout`: bytes sent and
    /// never acknowledged (TCP_USER_TIMEOUT), or an idle or long-running connection whose
    /// keepalive probes go unanswered (idle half the timeout, then three probes), instead of
    /// the kernel's 15 minutes of retransmits, which a client's own keepalive settings cannot
    /// shorten through a proxy. A busy server's kernel still answers both, so a long query
    /// is never cut.
    pub fn tune(&self, tcp: &TcpStream) -> std::io::Result<()> {
        let timeout = self.tcp_user_timeout;
        if timeout.is_zero() {
            return Ok(());
        }
        let sock = SockRef::from(tcp);
        sock.set_tcp_user_timeout(Some(timeout))?;
        // The kernel counts keepalive times in whole seconds, and refuses 0.
        let second = Duration::from_secs(1);
        let keepalive = TcpKeepalive::new()
            .with_time((timeout / 2).max(second))
            .with_interval((timeout / 6).max(second))
            .with_retries(3);
        sock.set_tcp_keepalive(&keepalive)
    }

    /// The token to log in to `addr` as `user` with under `server_iam`; `None`: log in with
    /// the secret's password. The error is safe to log.
    pub async fn token(&self, addr: &str, user: &str) -> Result<Option<String>, String> {
        match &self.iam {
            Some(signer) => signer.token(addr, user).await.map(Some),
            None => Ok(None),
        }
    }
}
