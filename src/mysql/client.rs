//! The client side of a MySQL session: sluice's greeting, TLS (CLIENT_SSL), the password exchange
//! (mysql_native_password or caching_sha2_password, switched to whichever the user is configured
//! for) and the schema check, answered without holding a server connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::cluster::MyCluster;
use super::errors::{self, Code};
use super::kill::KillRegistry;
use super::pools::{MyPool, PoolKey};
use super::relay::Session;
use super::wire::{self, AuthSwitch, Greeting, HandshakeResponse, OkPacket, caps};
use crate::auth::users::{SessionSlot, User, Users};
use crate::config::{ClientAuth, PasswordAuthType};
use crate::routing::Want;
use crate::session::SessionInfo;
use crate::tls::{ClientTls, Flavor, Socket};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Handshake packets are small; connection attributes are capped at 64 KiB by servers too.
const MAX_LOGIN_PACKET: usize = 64 << 10;
const NATIVE: &str = "mysql_native_password";
const SHA2: &str = "caching_sha2_password";
/// How IAM and JWT tokens travel: as the password itself, so only inside TLS.
const CLEAR: &str = "mysql_clear_password";
/// What sluice offers clients (then narrowed to what the server has; TLS is added when the
/// endpoint has a certificate; LOCAL INFILE when the endpoint allows it). Not offered:
/// compression, session tracking, query attributes.
const OFFERED: u32 = caps::LONG_PASSWORD
    | caps::FOUND_ROWS
    | caps::LONG_FLAG
    | caps::CONNECT_WITH_DB
    | caps::ODBC
    | caps::IGNORE_SPACE
    | caps::PROTOCOL_41
    | caps::INTERACTIVE
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | caps::PS_MULTI_RESULTS
    | caps::PLUGIN_AUTH
    | caps::CONNECT_ATTRS
    | caps::PLUGIN_AUTH_LENENC_DATA
    | caps::DEPRECATE_EOF;

/// What one MySQL endpoint needs to serve its clients.
#[derive(Debug)]
pub struct MyEndpoint {
    pub name: String,
    /// Its target group's name (session listings and gauges are per group).
    pub group: String,
    pub cluster: Arc<MyCluster>,
    /// What this endpoint's transactions need: the writer, or a reader.
    pub want: Want,
    /// Split endpoints: how long a read after a write waits for a reader to apply it.
    pub read_your_writes_timeout: Duration,
    pub users: Arc<Users>,
    /// The port clients connect to: IAM tokens are signed for it.
    pub port: u16,
    /// The certificate offered to clients (CLIENT_SSL); `None`: TLS is not offered.
    pub tls: Option<Arc<ClientTls>>,
    /// Refuse clients that did not switch to TLS.
    pub require_tls: bool,
    /// Offer CLIENT_LOCAL_FILES: `LOAD DATA LOCAL INFILE` reaches clients that accept it.
    pub local_infile: bool,
    pub kill: Arc<KillRegistry>,
    pub idle_client_timeout: Duration,
    pub session_ids: Arc<AtomicU64>,
    /// This endpoint's client-side series.
    pub metrics: crate::metrics::EndpointMetrics,
}

/// Why a client was turned away: sent as an ERR packet, logged without secrets.
#[derive(Debug)]
pub(super) struct Refusal {
    code: Code,
    message: String,
    hung_up: bool,
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        hung_up: false,
    }
}

fn hung_up() -> Refusal {
    Refusal {
        hung_up: true,
        ..refuse(
            errors::HANDSHAKE,
            "client closed the connection during login",
        )
    }
}

/// Where a login exchange (or COM_CHANGE_USER's) is: the next sequence id to send.
pub(super) struct Login<'a> {
    pub stream: &'a mut Socket,
    pub buf: BytesMut,
    pub seq: u8,
}

impl Login<'_> {
    /// Tells the client why it is refused, in sequence, and ends the session.
    pub async fn refuse(&mut self, r: Refusal) -> super::relay::End {
        if !r.hung_up {
            let mut out = Vec::new();
            let seq = self.next_seq();
            wire::write_err(&mut out, seq, r.code.0, r.code.1, &r.message);
            let _ = self.stream.write_all(&out).await;
        }
        super::relay::End::ClientGone
    }

    pub async fn send(&mut self, out: &[u8]) -> Result<(), Refusal> {
        self.stream.write_all(out).await.map_err(|_| hung_up())
    }

    async fn read(&mut self) -> Result<BytesMut, Refusal> {
        loop {
            if let Some(p) = wire::next_packet(&self.buf) {
                if p.len > MAX_LOGIN_PACKET {
                    return Err(refuse(errors::PACKET_TOO_LARGE, "login packet too large"));
                }
                if p.seq != self.seq {
                    return Err(refuse(errors::OUT_OF_ORDER, "Got packets out of order"));
                }
                if self.buf.len() >= p.len {
                    let mut payload = self.buf.split_to(p.len);
                    payload.advance(wire::HEADER_LEN);
                    self.seq = self.seq.wrapping_add(1);
                    return Ok(payload);
                }
            }
            self.buf.reserve(1024);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(hung_up()),
                Ok(_) => {}
            }
        }
    }

    pub fn next_seq(&mut self) -> u8 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }
}

/// Serves one accepted client connection to the end. An `async move` block rather than an
/// `async fn`, which would keep its arguments twice in the task: this future is what an idle
/// client costs.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ep: Arc<MyEndpoint>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Boxed: the login's state is large and short-lived; inline it would stay in the task.
        let Some((stream, mut session, slot)) = Box::pin(login_or_turn_away(tcp, &ep, peer)).await
        else {
            return;
        };
        // Counted open in the login (boxed) and closed with what `run` reports: a local kept
        // across `run` would grow every session's task.
        let tls = session.run(stream).await;
        ep.metrics.session_closed(tls);
        drop(slot);
    }
}

/// What sluice told the client in its greeting, kept across the switch to TLS.
struct Hello {
    member: usize,
    salt: Vec<u8>,
    offered: u32,
    id: u32,
}

/// How far a login got.
enum Step {
    /// The client sent an SSLRequest: the handshake comes next, then its real response.
    StartTls,
    Session(Box<Session>, Option<SessionSlot>),
}

async fn login_or_turn_away(
    tcp: TcpStream,
    ep: &Arc<MyEndpoint>,
    peer: SocketAddr,
) -> Option<(Socket, Box<Session>, Option<SessionSlot>)> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    let mut stream = Socket::Plain(tcp);
    let (mut buf, mut seq, mut hello) = (BytesMut::new(), 0, None);
    loop {
        let mut login = Login {
            stream: &mut stream,
            buf,
            seq,
        };
        let step = login_exchange(&mut login, ep, peer, &mut hello);
        match tokio::time::timeout_at(deadline, step).await {
            Ok(Ok(Step::Session(session, slot))) => {
                ep.metrics.session_opened(stream.is_tls());
                return Some((stream, session, slot));
            }
            Ok(Ok(Step::StartTls)) => {
                let early = login.buf;
                (buf, seq) = (BytesMut::new(), login.seq);
                let (Socket::Plain(tcp), Some(tls)) = (stream, &ep.tls) else {
                    return None;
                };
                let who = (ep.name.as_str(), peer);
                stream = tls
                    .accept_by(deadline, Flavor::Mysql, tcp, &early, who)
                    .await?;
            }
            Ok(Err(r)) => {
                if r.hung_up {
                    tracing::debug!(endpoint = %ep.name, %peer, "client hung up during login");
                } else {
                    tracing::info!(endpoint = %ep.name, %peer, code = r.code.0, reason = %r.message, "client refused");
                }
                // In sequence: after an AuthSwitch or a fast-auth packet the ERR is not packet 2.
                login.refuse(r).await;
                return None;
            }
            Err(_) => {
                tracing::info!(endpoint = %ep.name, %peer, "client login timed out");
                return None;
            }
        }
    }
}

fn nonce() -> Vec<u8> {
    // Printable, no NUL: some clients treat the salt as a C string.
    let mut rng = rand::rng();
    (0..20).map(|_| rng.random_range(b'!'..=b'~')).collect()
}

async fn login_exchange(
    login: &mut Login<'_>,
    ep: &Arc<MyEndpoint>,
    peer: SocketAddr,
    hello: &mut Option<Hello>,
) -> Result<Step, Refusal> {
    let member = match hello {
        Some(h) => h.member,
        None => Box::pin(ep.cluster.route(ep.want)).await.map_err(|e| {
            tracing::warn!(endpoint = %ep.name, error = %e, "no instance for a login");
            let (code, message) = errors::borrow_failure(&e);
            refuse(code, message)
        })?,
    };
    let pools = &ep.cluster.members[member];
    let server = pools.server_info().await.map_err(|e| {
        tracing::warn!(endpoint = %ep.name, error = %e, "cannot read the server's greeting");
        refuse(errors::UNKNOWN, format!("sluice: {e}"))
    })?;
    let mut out = Vec::with_capacity(128);
    let h = match hello {
        Some(h) => h,
        None => {
            let tls = if ep.tls.is_some() { caps::SSL } else { 0 };
            let files = if ep.local_infile {
                caps::LOCAL_FILES
            } else {
                0
            };
            let h = hello.insert(Hello {
                member,
                salt: nonce(),
                offered: (OFFERED | files) & server.caps | caps::LONG_PASSWORD | tls,
                id: (ep.session_ids.fetch_add(1, Ordering::Relaxed) + 1) as u32,
            });
            let greeting = Greeting {
                version: server.version.clone(),
                connection_id: h.id,
                nonce: h.salt.clone(),
                caps: h.offered,
                charset: server.collation,
                status: wire::status::AUTOCOMMIT,
                plugin: NATIVE.into(),
            };
            greeting.write(&mut out);
            login.buf.reserve(512);
            login.seq = 1;
            login.send(&out).await?;
            h
        }
    };
    let (salt, offered, id) = (&h.salt[..], h.offered, h.id);
    let payload = login.read().await?;
    let hr = HandshakeResponse::parse(&payload)
        .map_err(|e| refuse(errors::HANDSHAKE, format!("Bad handshake: {e}")))?;
    if hr.ssl_request {
        // Bytes already read behind the request are the client's ClientHello: they go to the
        // handshake, never to the login as if they had come through TLS.
        if ep.tls.is_none() || login.stream.is_tls() {
            return Err(refuse(
                errors::HANDSHAKE,
                "Bad handshake: unexpected SSL request",
            ));
        }
        return Ok(Step::StartTls);
    }
    if ep.require_tls && !login.stream.is_tls() {
        return Err(refuse(
            errors::INSECURE_TRANSPORT,
            format!(
                "Connections using insecure transport are prohibited on endpoint '{}' (require_tls)",
                ep.name
            ),
        ));
    }
    let user = authenticate(login, ep, &hr, salt, peer).await?;
    let slot = user.open_session().map_err(|max| {
        crate::audit::turned_away(&ep.name, peer, "user at max_client_connections");
        refuse(
            errors::TOO_MANY_USER_CONNECTIONS,
            format!(
                "User {} already has more than 'max_client_connections' ({max}) active connections",
                hr.user
            ),
        )
    })?;
    let negotiated = hr.caps & offered;
    let key = PoolKey {
        user: user.credential().secret.username.clone(),
        caps: negotiated & wire::FORWARDED_CAPS,
        collation: if hr.charset == 0 {
            server.collation
        } else {
            hr.charset
        },
    };
    let pool = pools.get(&key, &user.credentials, &server.dialect);
    if let Some(db) = &hr.database {
        check_schema(&pool, db).await?;
    }
    out.clear();
    let ok = OkPacket {
        status: wire::status::AUTOCOMMIT,
        ..OkPacket::default()
    };
    wire::write_ok(&mut out, login.next_seq(), &ok);
    login.send(&out).await?;
    tracing::debug!(endpoint = %ep.name, session = id, user = %hr.user, database = ?hr.database, "client logged in");
    let mut info = SessionInfo::new(
        u64::from(id),
        (&ep.name, &ep.group),
        &hr.user,
        peer,
        login.stream.is_tls(),
    );
    info.database.clone_from(&hr.database);
    let kill = ep.kill.register(id, &key.user, info);
    let session = Box::new(Session::new(
        id,
        ep.clone(),
        peer,
        (member, pool),
        kill,
        hr.database.map(String::into_boxed_str),
        std::mem::take(&mut login.buf),
    ));
    Ok(Step::Session(session, slot))
}

/// Runs the password exchange for the user's configured plugin; the client may have started
/// with another one, in which case it is switched (AuthSwitchRequest) with a fresh salt.
pub(super) async fn authenticate(
    login: &mut Login<'_>,
    ep: &MyEndpoint,
    hr: &HandshakeResponse,
    salt: &[u8],
    peer: SocketAddr,
) -> Result<Arc<User>, Refusal> {
    let (user, known) = match ep.users.get(&hr.user) {
        Some(u) => (u.clone(), true),
        None => match ep.users.decoy() {
            Some(d) => (d.clone(), false),
            None => return Err(denied(&hr.user, peer, true)),
        },
    };
    let method = user.client_auth.name();
    let result = exchange(login, ep, &user, known, hr, salt, peer).await;
    match &result {
        Ok(()) => {
            crate::audit::auth_succeeded(&ep.name, peer, &hr.user, method, login.stream.is_tls())
        }
        Err((reason, r)) if !r.hung_up => {
            ep.metrics.setup_failed_auth.inc();
            crate::audit::auth_failed(&ep.name, peer, &hr.user, method, reason)
        }
        Err(_) => {}
    }
    result.map(|()| user).map_err(|(_, r)| r)
}

/// The password or token exchange; the error carries the reason to audit.
async fn exchange(
    login: &mut Login<'_>,
    ep: &MyEndpoint,
    user: &User,
    known: bool,
    hr: &HandshakeResponse,
    salt: &[u8],
    peer: SocketAddr,
) -> Result<(), (String, Refusal)> {
    let failed = |reason: &str, r: Refusal| (reason.to_owned(), r);
    if user.client_auth != ClientAuth::Password {
        if !login.stream.is_tls() {
            let r = refuse(
                errors::INSECURE_TRANSPORT,
                "IAM and JWT logins require TLS (--ssl-mode=REQUIRED or stricter)",
            );
            return Err(failed("token login without TLS", r));
        }
        let mut token = hr.auth.clone();
        if hr.plugin.as_deref() != Some(CLEAR) {
            let mut out = Vec::with_capacity(32);
            AuthSwitch {
                plugin: CLEAR.into(),
                data: Vec::new(),
            }
            .write(&mut out, login.next_seq());
            login.send(&out).await.map_err(|r| failed("hung up", r))?;
            token = login
                .read()
                .await
                .map_err(|r| failed("hung up", r))?
                .to_vec();
        }
        let token = token.strip_suffix(&[0]).unwrap_or(&token);
        let token = std::str::from_utf8(token)
            .map_err(|_| failed("token is not UTF-8", denied(&hr.user, peer, true)))?;
        return ep
            .users
            .verify_token(user, token, ep.port)
            .map_err(|reason| failed(&reason, denied(&hr.user, peer, true)));
    }
    password_exchange(login, user, known, hr, salt, peer)
        .await
        .map_err(|r| failed("wrong password", r))
}

async fn password_exchange(
    login: &mut Login<'_>,
    user: &User,
    known: bool,
    hr: &HandshakeResponse,
    salt: &[u8],
    peer: SocketAddr,
) -> Result<(), Refusal> {
    let plugin = match user.method {
        PasswordAuthType::MysqlCachingSha2Password => SHA2,
        _ => NATIVE,
    };
    let mut salt = salt.to_vec();
    let mut response = hr.auth.clone();
    let client_plugin = hr.plugin.as_deref().unwrap_or(NATIVE);
    if client_plugin != plugin || hr.caps & caps::PLUGIN_AUTH == 0 && plugin != NATIVE {
        salt = nonce();
        let mut out = Vec::with_capacity(64);
        AuthSwitch {
            plugin: plugin.into(),
            data: salt.clone(),
        }
        .write(&mut out, login.next_seq());
        login.send(&out).await?;
        response = login.read().await?.to_vec();
    }
    let ok = user.credentials.versions().each().any(|c| match plugin {
        SHA2 => c.mysql.verify_sha2(&salt, &response),
        _ => c.mysql.verify_native(&salt, &response),
    });
    if known && !ok {
        // The client may hold a password rotated after sluice's last read.
        user.credentials.client_mismatch();
    }
    if !ok || !known {
        return Err(denied(&hr.user, peer, !response.is_empty()));
    }
    if plugin == SHA2 {
        // fast_auth_success: sluice holds the password, so the "cache" always has it.
        let mut out = Vec::with_capacity(8);
        wire::write_packet(&mut out, login.next_seq(), &[0x01, 0x03]);
        login.send(&out).await?;
    }
    Ok(())
}

fn denied(user: &str, peer: SocketAddr, with_password: bool) -> Refusal {
    let using = if with_password { "YES" } else { "NO" };
    refuse(
        errors::ACCESS_DENIED,
        format!(
            "Access denied for user '{user}'@'{}' (using password: {using})",
            peer.ip()
        ),
    )
}

/// A schema named at login must exist: checked once per pool with COM_INIT_DB, then known.
pub(super) async fn check_schema(pool: &MyPool, db: &str) -> Result<(), Refusal> {
    if pool
        .known_schemas
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(db)
    {
        return Ok(());
    }
    // The pool hands out no connection the server closed while it sat idle.
    let mut lease = pool.pool.borrow().await.map_err(|e| {
        tracing::warn!(pool = %pool.pool.name(), error = %e, "first server connection failed");
        let (code, message) = errors::borrow_failure(&e);
        refuse(code, message)
    })?;
    let addr = pool.login.addr.clone();
    match lease.use_schema(&addr, db).await {
        Ok(()) => {
            lease.release(true);
            pool.known_schemas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(db.to_owned());
            Ok(())
        }
        Err(crate::pool::ConnectError::Refused { code, message, .. }) => {
            lease.release(true);
            let errno = code.parse().unwrap_or(errors::BAD_DB.0);
            Err(refuse((errno, errors::BAD_DB.1), message))
        }
        Err(e) => {
            drop(lease);
            Err(refuse(errors::UNKNOWN, format!("sluice: {e}")))
        }
    }
}

#[cfg(test)]
mod tests;
