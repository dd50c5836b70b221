//! A connection from sluice to a PostgreSQL instance: connect, log in, and the few control-plane
//! queries sluice runs itself (init_query, `SHOW max_connections`, resets).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::settings::Settings;
use super::statements::ServerStatements;
use super::wire::{self, AuthRequest, BackendKeyData, backend, status};
use crate::auth::ServerAccess;
use crate::auth::credentials::{Credential, Credentials};
use crate::auth::scram::{SaltedCache, ScramClient};
use crate::errors::{ConnectError, Rejected};
use crate::pool::PooledConnection;
use crate::tls::unix_path;
use crate::tls::{Socket, until_closed};

/// Largest message sluice reads whole from a server on the control plane.
const MAX_CONTROL_MESSAGE: usize = 16 << 20;

/// What a server connection is opened with.
#[derive(Clone)]
pub struct ServerLogin {
    pub addr: String,
    pub user: String,
    /// The user's secret, read at each connect so a rotation reaches open pools.
    pub credentials: Arc<Credentials>,
    pub database: String,
    /// SCRAM's salted password, shared by the clones of this login.
    pub scram: Arc<SaltedCache>,
    /// TLS and `server_iam`, as the target group says.
    pub access: ServerAccess,
    /// What the connection is for, shown to operators as its `application_name`.
    pub role: Role,
}

/// What sluice opens a server connection for: `pg_stat_activity` shows it as the connection's
/// `application_name` (until a session sets its own on a pooled one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Pool,
    Probe,
    Listener,
}

impl Role {
    pub fn application_name(self) -> &'static str {
        match self {
            Self::Pool => "sluice pool",
            Self::Probe => "sluice probe",
            Self::Listener => "sluice listener",
        }
    }
}

impl std::fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLogin")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Where a server connection goes: what a CancelRequest for its backend must reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    /// A Unix-domain socket's path (`unix:/path` instances).
    Unix(Arc<str>),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => a.fmt(f),
            Self::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

pub struct ServerConn {
    pub stream: Socket,
    /// Bytes read from the server and not yet handled; kept with the connection so an idle
    /// client session holds no buffer.
    pub buf: BytesMut,
    pub peer: ServerAddr,
    pub key: BackendKeyData,
    /// ParameterStatus values the server reported at login.
    pub reported: Vec<(String, String)>,
    /// Session parameters sluice has set on this connection (beyond its defaults).
    pub settings: Settings,
    pub statements: ServerStatements,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("peer", &self.peer)
            .field("pid", &self.key.pid)
            .finish()
    }
}

impl PooledConnection for ServerConn {
    fn close(mut self) {
        // Terminate lets the server end the backend cleanly instead of logging an EOF.
        let mut buf = BytesMut::with_capacity(5);
        wire::terminate(&mut buf);
        let _ = self.stream.try_write(&buf);
    }

    fn close_confirmed(
        mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut buf = BytesMut::with_capacity(5);
            wire::terminate(&mut buf);
            if self.stream.write_all(&buf).await.is_ok() {
                // The backend leaves pg_stat_activity before its socket closes (its shared
                // memory exit callbacks run before the ones that close the socket).
                until_closed(&mut self.stream).await;
            }
        })
    }

    fn is_usable(&mut self) -> bool {
        self.stream.idle_and_open(&self.buf)
    }
}

fn protocol(login: &ServerLogin, reason: impl ToString) -> ConnectError {
    ConnectError::Protocol {
        instance: login.addr.clone(),
        reason: reason.to_string(),
    }
}

impl ServerConn {
    /// Connects and logs in; a rejected password is retried with the secret as re-read.
    pub async fn connect(login: &ServerLogin) -> Result<Self, ConnectError> {
        login
            .credentials
            .login(&login.user, |c| Self::connect_as(login, c))
            .await
    }

    async fn connect_as(login: &ServerLogin, cred: Arc<Credential>) -> Result<Self, ConnectError> {
        let unreachable = |e: std::io::Error| ConnectError::Unreachable {
            instance: login.addr.clone(),
            reason: e.to_string(),
        };
        let (stream, peer) = if let Some(path) = unix_path(&login.addr) {
            // PostgreSQL offers no TLS on its socket (validation refuses modes that need it).
            let unix = UnixStream::connect(path).await.map_err(unreachable)?;
            (Socket::Unix(unix), ServerAddr::Unix(path.into()))
        } else {
            let tcp = TcpStream::connect(&login.addr).await.map_err(unreachable)?;
            tcp.set_nodelay(true).map_err(unreachable)?;
            login.access.tune(&tcp).map_err(unreachable)?;
            let peer = tcp.peer_addr().map_err(unreachable)?;
            (start_tls(tcp, login).await?, ServerAddr::Tcp(peer))
        };
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            peer,
            key: BackendKeyData { pid: 0, key: 0 },
            reported: Vec::new(),
            settings: Settings::default(),
            statements: ServerStatements::default(),
        };
        let token =
            (login.access.token(&login.addr, &login.user).await).map_err(|e| protocol(login, e))?;
        let password = token.as_deref().unwrap_or(&cred.secret.password);
        conn.login(login, password).await?;
        Ok(conn)
    }

    async fn login(&mut self, login: &ServerLogin, password: &str) -> Result<(), ConnectError> {
        let mut out = BytesMut::new();
        wire::startup_message(
            &mut out,
            &[
                ("user", &login.user),
                ("database", &login.database),
                ("application_name", login.role.application_name()),
            ],
        );
        self.send(login, &mut out).await?;
        let mut scram: Option<ScramClient> = None;
        loop {
            let (tag, body) = self.read_message(login).await?;
            match tag {
                backend::AUTHENTICATION => match wire::parse_auth_request(&body)
                    .map_err(|e| protocol(login, e))?
                {
                    // A server that ends SCRAM without its final message never proved it
                    // knows the password: it may be an impostor.
                    AuthRequest::Ok if scram.is_some() => {
                        return Err(protocol(login, "the server skipped SCRAM's final message"));
                    }
                    AuthRequest::Ok => {}
                    AuthRequest::Cleartext => {
                        wire::password_message(&mut out, password.as_bytes());
                        self.send(login, &mut out).await?;
                    }
                    AuthRequest::Md5 { salt } => {
                        let hash = postgres_protocol::authentication::md5_hash(
                            login.user.as_bytes(),
                            password.as_bytes(),
                            salt,
                        );
                        wire::password_message(&mut out, hash.as_bytes());
                        self.send(login, &mut out).await?;
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        if !mechanisms.contains(&"SCRAM-SHA-256") {
                            return Err(protocol(login, "server offers no SCRAM-SHA-256"));
                        }
                        let s = ScramClient::new();
                        wire::sasl_initial_response(&mut out, "SCRAM-SHA-256", s.message());
                        scram = Some(s);
                        self.send(login, &mut out).await?;
                    }
                    AuthRequest::SaslContinue { data } => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| protocol(login, "unexpected SASL"))?;
                        let first = s.read_server_first(data).map_err(|e| protocol(login, e))?;
                        let salted = login.scram.salted(password, &first).await;
                        let answer = s.answer(&first, &salted);
                        wire::sasl_response(&mut out, answer.as_bytes());
                        self.send(login, &mut out).await?;
                    }
                    AuthRequest::SaslFinal { data } => {
                        let s = scram
                            .take()
                            .ok_or_else(|| protocol(login, "unexpected SASL"))?;
                        s.finish(data).map_err(|e| protocol(login, e))?;
                    }
                    AuthRequest::Other(code) => {
                        return Err(protocol(login, format!("unsupported auth request {code}")));
                    }
                },
                backend::PARAMETER_STATUS => {
                    let (k, v) =
                        wire::parse_parameter_status(&body).map_err(|e| protocol(login, e))?;
                    self.reported.push((k.to_owned(), v.to_owned()));
                }
                backend::BACKEND_KEY_DATA => {
                    self.key =
                        wire::parse_backend_key_data(&body).map_err(|e| protocol(login, e))?;
                }
                backend::READY_FOR_QUERY => return Ok(()),
                backend::ERROR_RESPONSE => return Err(refused(login, &body)),
                backend::NOTICE_RESPONSE => {}
                other => {
                    return Err(protocol(
                        login,
                        format!("unexpected message {}", other as char),
                    ));
                }
            }
        }
    }

    async fn send(&mut self, login: &ServerLogin, out: &mut BytesMut) -> Result<(), ConnectError> {
        self.stream
            .write_all(out)
            .await
            .map_err(|e| ConnectError::from_io(&login.addr, "", &e))?;
        out.clear();
        Ok(())
    }

    /// Reads one whole message (control plane only; the relay reads `buf` itself).
    async fn read_message(&mut self, login: &ServerLogin) -> Result<(u8, BytesMut), ConnectError> {
        loop {
            if let Some(frame) =
                wire::next_frame(&self.buf, MAX_CONTROL_MESSAGE).map_err(|e| protocol(login, e))?
            {
                let mut msg = self.buf.split_to(frame.len);
                msg.advance(wire::FRAME_HEADER_LEN);
                return Ok((frame.tag, msg));
            }
            let n = tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.buf)
                .await
                .map_err(|e| ConnectError::from_io(&login.addr, "", &e))?;
            if n == 0 {
                // Without a word: the server is going away (a shutdown), not refusing.
                return Err(ConnectError::Unreachable {
                    instance: login.addr.clone(),
                    reason: "the server closed the connection during the login".into(),
                });
            }
        }
    }

    /// Runs a simple query to completion and returns the first column of each row. sluice's
    /// own queries run on idle connections and must leave them idle: a server still in a
    /// transaction afterwards is an error (the caller closes that connection).
    pub async fn simple_query(
        &mut self,
        login: &ServerLogin,
        sql: &str,
    ) -> Result<Vec<Option<String>>, ConnectError> {
        let mut out = BytesMut::new();
        wire::query(&mut out, sql);
        self.send(login, &mut out).await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (tag, body) = self.read_message(login).await?;
            match tag {
                backend::DATA_ROW => rows.push(first_column(&body)),
                backend::ERROR_RESPONSE => failure = Some(refused(login, &body)),
                backend::READY_FOR_QUERY if body.first() != Some(&status::IDLE) => {
                    return Err(protocol(
                        login,
                        "still in a transaction after sluice's query",
                    ));
                }
                backend::READY_FOR_QUERY => return failure.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

fn first_column(body: &[u8]) -> Option<String> {
    let mut r = wire::Reader::new(body, "DataRow");
    let count = r.take(2).ok()?;
    if count == [0, 0] {
        return None;
    }
    let len = r.i32().ok()?;
    let len = usize::try_from(len).ok()?;
    r.take(len)
        .ok()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn refused(login: &ServerLogin, body: &[u8]) -> ConnectError {
    let fields = wire::parse_error_fields(body).unwrap_or_default();
    let rejected = match fields.code {
        "28P01" | "28000" => Rejected::Credentials,
        "3D000" => Rejected::UnknownDatabase,
        "53300" => Rejected::TooManyConnections,
        "57P03" => Rejected::NotReady,
        _ => Rejected::Other,
    };
    ConnectError::Refused {
        instance: login.addr.clone(),
        rejected,
        code: fields.code.to_owned(),
        message: fields.message.to_owned(),
    }
}

/// Asks the instance for TLS (SSLRequest) when the target group wants it.
async fn start_tls(mut tcp: TcpStream, login: &ServerLogin) -> Result<Socket, ConnectError> {
    if !login.access.tls.wanted() {
        return Ok(Socket::Plain(tcp));
    }
    let io = |e: std::io::Error| ConnectError::from_io(&login.addr, "TLS: ", &e);
    let mut request = BytesMut::with_capacity(8);
    wire::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        backend::SSL_ACCEPTED => login.access.tls.connect(&login.addr, tcp).await.map_err(io),
        backend::SSL_REFUSED if !login.access.tls.required() => Ok(Socket::Plain(tcp)),
        backend::SSL_REFUSED => Err(protocol(
            login,
            "the server does not accept TLS (server_tls requires it)",
        )),
        _ => Err(protocol(login, "unexpected answer to SSLRequest")),
    }
}

/// Sends a CancelRequest for the backend behind `key` at `peer`.
pub async fn send_cancel(peer: &ServerAddr, key: BackendKeyData) -> std::io::Result<()> {
    let mut stream = match peer {
        ServerAddr::Tcp(addr) => Socket::Plain(TcpStream::connect(addr).await?),
        ServerAddr::Unix(path) => Socket::Unix(UnixStream::connect(&**path).await?),
    };
    let mut buf = BytesMut::with_capacity(16);
    wire::cancel_request(&mut buf, key.pid, key.key);
    stream.write_all(&buf).await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
    Ok(())
}
