//! TLS on both sides with rustls: the certificate sluice presents to clients (re-read on
//! SIGHUP and when its files change, without touching running sessions) and the connector a
//! target group uses for its instances (`disable` .. `verify-full`).

pub mod memory;
mod socket;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

pub use crate::config::unix_path;
pub use socket::{Socket, TlsSocket, consume, unless_hung_up, until_closed};

use crate::config::{ServerTls, ServerTlsMode, Tls};

/// Why a certificate, key or CA file could not be used. Never quotes file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} holds no {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("the certificate and key do not go together: {0}")]
    Mismatch(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

/// Builds both engines' acceptor configurations from the files.
fn server_configs(files: &Tls) -> Result<[Arc<rustls::ServerConfig>; 2], TlsError> {
    let certs = certificates(&files.cert)?;
    let pem = read(&files.key)?;
    // The key's own parse error could echo key material; say only what was wrong.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Empty {
        path: files.key.clone(),
        what: "usable PEM private key (PKCS#8, PKCS#1 or SEC1)",
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let mysql = Arc::new(config.clone());
    let mut postgres = config;
    // libpq 17 offers ALPN `postgresql`; a client that offers none is accepted too.
    postgres.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok([Arc::new(postgres), mysql])
}

/// The client-facing certificate, shared by every endpoint.
#[derive(Debug)]
pub struct ClientTls {
    files: Tls,
    /// Postgres (with ALPN) and MySQL acceptor configurations.
    configs: ArcSwap<[Arc<rustls::ServerConfig>; 2]>,
    /// Modification times of the files as last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    Postgres = 0,
    Mysql = 1,
}

impl ClientTls {
    pub fn load(files: &Tls) -> Result<Self, TlsError> {
        let stamps = (modified(&files.cert), modified(&files.key));
        Ok(Self {
            configs: ArcSwap::from_pointee(server_configs(files)?),
            files: files.clone(),
            loaded: Mutex::new(stamps),
        })
    }

    /// Re-reads the files when they changed since the last load (or always, when `force`).
    /// A bad new pair is refused and the old certificate stays in use.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamps = (modified(&self.files.cert), modified(&self.files.key));
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *loaded == stamps {
            return Ok(false);
        }
        // Recorded first: a broken file is reported once, not on every poll.
        *loaded = stamps;
        self.configs.store(Arc::new(server_configs(&self.files)?));
        Ok(true)
    }

    /// Runs the TLS handshake on an accepted client socket; `early` holds handshake bytes
    /// the login already read (a MySQL client's ClientHello follows its SSLRequest at once).
    pub async fn accept(&self, flavor: Flavor, tcp: TcpStream, early: &[u8]) -> io::Result<Socket> {
        let config = self.configs.load()[flavor as usize].clone();
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Socket::Tls(Box::new(
            TlsSocket::handshake(tcp, conn, early).await?,
        )))
    }

    /// [`ClientTls::accept`] within a login's `deadline`; a failed or late handshake is logged
    /// and ends the connection (`None`): there is no channel left to tell the client why.
    pub async fn accept_by(
        &self,
        deadline: tokio::time::Instant,
        flavor: Flavor,
        tcp: TcpStream,
        early: &[u8],
        (endpoint, peer): (&str, std::net::SocketAddr),
    ) -> Option<Socket> {
        match tokio::time::timeout_at(deadline, self.accept(flavor, tcp, early)).await {
            Ok(Ok(socket)) => Some(socket),
            Ok(Err(e)) => {
                tracing::info!(endpoint, %peer, error = %e, "client TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(endpoint, %peer, "client login timed out");
                None
            }
        }
    }

    /// Reloads on SIGHUP and when the files change (checked every few seconds).
    pub async fn watch(self: Arc<Self>) {
        {
            let mut hup = crate::shutdown::hangups();
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    () = hup.next() => true,
                };
                match self.reload(force) {
                    Ok(true) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                    }
                }
            }
        }
    }
}

/// How a target group connects to its instances.
#[derive(Debug, Clone)]
pub struct ServerConnector {
    pub mode: ServerTlsMode,
    config: Option<Arc<rustls::ClientConfig>>,
}

impl ServerConnector {
    pub fn new(tls: &ServerTls) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder();
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match tls.mode {
            ServerTlsMode::Disable => {
                return Ok(Self {
                    mode: tls.mode,
                    config: None,
                });
            }
            ServerTlsMode::Prefer | ServerTlsMode::Require => Arc::new(verify::Unchecked::new()),
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
                let path = tls.ca_file.as_deref().ok_or_else(|| TlsError::Empty {
                    path: PathBuf::from("server_tls.ca_file"),
                    what: "CA file (required by verify-ca and verify-full)",
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path)? {
                    roots.add(cert).map_err(|e| TlsError::Invalid {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                }
                verify::chain(roots, tls.mode == ServerTlsMode::VerifyFull).map_err(|e| {
                    TlsError::Invalid {
                        path: path.to_owned(),
                        reason: e,
                    }
                })?
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            mode: tls.mode,
            config: Some(Arc::new(config)),
        })
    }

    pub fn disabled() -> Self {
        Self {
            mode: ServerTlsMode::Disable,
            config: None,
        }
    }

    /// Whether to ask the instance for TLS at all.
    pub fn wanted(&self) -> bool {
        self.config.is_some()
    }

    /// Whether an instance that does not offer TLS must be refused.
    pub fn required(&self) -> bool {
        !matches!(self.mode, ServerTlsMode::Disable | ServerTlsMode::Prefer)
    }

    /// Runs the handshake with the instance at `addr` (`host:port`); the host is the name
    /// `verify-full` checks.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<Socket> {
        let Some(config) = &self.config else {
            return Ok(Socket::Plain(tcp));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(Socket::Tls(Box::new(
            TlsSocket::handshake(tcp, conn, &[]).await?,
        )))
    }
}

#[cfg(test)]
mod tests;
