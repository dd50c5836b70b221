//! The client side of a Postgres session: startup packet, TLS (SSLRequest), cancel requests,
//! password authentication (SCRAM-SHA-256 or MD5) and the greeting sluice answers itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::cancel::{CancelHandle, CancelRegistry};
use super::cluster::PgCluster;
use super::errors::{self, fatal};
use super::pools::{PgPool, PgPools};
use super::relay::{Dormant, IdleLimits, Outcome, Session};
use super::server;
use super::wire::{self, Startup, StartupParams, WireError};
use crate::auth::users::SessionSlot;
use crate::session::SessionInfo;
use crate::session::park::{self, Parkable};
use crate::tls::{Flavor, Socket, unless_hung_up};

mod auth;
mod encoding;

use auth::authenticate;

/// A client must finish startup and authentication within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

pub type PgEndpoint = crate::endpoint::Endpoint<PgSide>;

/// What a Postgres endpoint adds to the shared endpoint: its cluster and the cancel registry.
#[derive(Debug)]
pub struct PgSide {
    pub cluster: Arc<PgCluster>,
    pub cancel: Arc<CancelRegistry>,
}

/// Why a client was turned away: sent to it as a FATAL error, logged without secrets.
#[derive(Debug)]
pub(super) struct Refusal {
    code: &'static str,
    message: String,
    /// The client hung up itself (health checks, port scans): nothing to send or warn about.
    hung_up: bool,
    /// Logged, not sent: what PostgreSQL only logs (COMMERROR), since the bytes show the peer
    /// may not speak the protocol at all.
    silent: bool,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        hung_up: false,
        silent: false,
    }
}

fn hung_up() -> Refusal {
    Refusal {
        hung_up: true,
        ..refuse(
            errors::PROTOCOL_VIOLATION,
            "client closed the connection during login",
        )
    }
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        match e {
            WireError::UnsupportedVersion { .. } => {
                refuse(errors::FEATURE_NOT_SUPPORTED, e.to_string())
            }
            // "invalid length of startup packet": the server closes without a word. (node-postgres
            // ending a client before it connected sends its Terminate ahead of the startup.)
            WireError::BadLength { .. } => Refusal {
                silent: true,
                ..refuse(errors::PROTOCOL_VIOLATION, format!("invalid startup: {e}"))
            },
            _ => refuse(errors::PROTOCOL_VIOLATION, format!("invalid startup: {e}")),
        }
    }
}

/// Serves one accepted client connection to the end. An `async move` block rather than an
/// `async fn`, which would keep its arguments twice in the task: this future is what a busy
/// client costs.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ep: Arc<PgEndpoint>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Boxed: the handshake's state is large and short-lived; inline it would stay in the
        // task's allocation for the whole session.
        let Some((stream, session, slot)) = Box::pin(login_or_turn_away(tcp, &ep, peer)).await
        else {
            return;
        };
        live(
            Box::new(Life {
                session,
                _slot: slot,
                ep,
            }),
            stream,
        )
        .await;
    }
}

/// A logged-in session and what it keeps to its end (counted open in the login, closed here).
/// Boxed: the session's task holds a pointer.
struct Life {
    session: Session,
    /// Held for its drop: the user's session count.
    _slot: Option<SessionSlot>,
    ep: Arc<PgEndpoint>,
}

/// A parked session: its compact form and what it keeps to its end; all a parked client costs
/// besides its socket and the lot's slot.
struct Parked {
    session: Dormant,
    _slot: Option<SessionSlot>,
    ep: Arc<PgEndpoint>,
}

fn idle_limits(ep: &PgEndpoint) -> IdleLimits {
    IdleLimits {
        timeout: ep.idle_client_timeout,
        park_after: ep.idle_client_park_after,
    }
}

/// Runs a session until it ends or parks. An `async move` block, as `serve`: the task keeps
/// `client` once.
#[allow(clippy::manual_async_fn)]
fn live(mut life: Box<Life>, client: Socket) -> impl Future<Output = ()> + Send {
    async move {
        let mut client = client;
        match (life.session.run(&mut client).await, client) {
            (Outcome::Park, Socket::Plain(tcp)) => {
                let Life { session, _slot, ep } = *life;
                let parking = ep.engine.cluster.parking.clone();
                let parked = Box::new(Parked {
                    session: session.into_dormant(),
                    _slot,
                    ep,
                });
                park::park(parking.as_ref(), parked, tcp);
            }
            (Outcome::Closed { tls }, _) => life.ep.metrics.session_closed(tls),
            (Outcome::Park, _) => life.ep.metrics.session_closed(false),
        }
    }
}

impl Parkable for Parked {
    fn live(self: Box<Self>, client: TcpStream) -> impl Future<Output = ()> + Send {
        let Parked { session, _slot, ep } = *self;
        let life = Box::new(Life {
            session: session.wake(idle_limits(&ep)),
            _slot,
            ep,
        });
        live(life, Socket::Plain(client))
    }

    fn closed(&self) {
        self.ep.metrics.session_closed(false);
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.session.idle_deadline(idle_limits(&self.ep))
    }
}

/// How far a login got. Returned once per login, so the session is not boxed for it.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// The client asked for TLS and was told yes: the handshake comes next.
    StartTls,
    Session(Session, Option<SessionSlot>),
    /// The connection only carried a cancel request.
    Cancel,
}

/// Runs the login under its timeout; a refused client is told why, in its own protocol.
async fn login_or_turn_away(
    tcp: TcpStream,
    ep: &Arc<PgEndpoint>,
    peer: SocketAddr,
) -> Option<(Socket, Session, Option<SessionSlot>)> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    let mut stream = Socket::Plain(tcp);
    let mut buf = BytesMut::with_capacity(512);
    let admitted = AtomicBool::new(false);
    loop {
        let step = login(&mut stream, &mut buf, ep, peer, &admitted);
        match client_paced(deadline, &admitted, step).await {
            Ok(Ok(Step::Session(session, slot))) => {
                ep.metrics.session_opened(stream.is_tls());
                return Some((stream, session, slot));
            }
            Ok(Ok(Step::Cancel)) => return None,
            Ok(Ok(Step::StartTls)) => {
                let (Socket::Plain(tcp), Some(tls)) = (stream, &ep.tls) else {
                    return None;
                };
                let who = (&*ep.name, peer);
                stream = tls
                    .accept_by(deadline, Flavor::Postgres, tcp, &[], who)
                    .await?;
            }
            Ok(Err(refusal)) => {
                turn_away(&mut stream, ep, peer, refusal).await;
                return None;
            }
            Err(_) => {
                tracing::info!(endpoint = %ep.name, %peer, "client login timed out");
                return None;
            }
        }
    }
}

/// `step` under the login timeout while the client is the one awaited. Once `admitted` is set
/// (the client authenticated), the rest waits for the database, up to
/// `connection_borrow_timeout`, and ends with the greeting or an error the client is sent.
async fn client_paced<T>(
    deadline: Instant,
    admitted: &AtomicBool,
    step: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut step = std::pin::pin!(step);
    match tokio::time::timeout_at(deadline, &mut step).await {
        Err(_) if admitted.load(Ordering::Relaxed) => Ok(step.await),
        result => result,
    }
}

/// Logs a refusal without secrets and sends it to the client as a FATAL error.
async fn turn_away(stream: &mut Socket, ep: &PgEndpoint, peer: SocketAddr, r: Refusal) {
    match r {
        r if r.hung_up => {
            tracing::debug!(endpoint = %ep.name, %peer, "client hung up during login");
        }
        r if r.silent => {
            tracing::info!(endpoint = %ep.name, %peer, reason = %r.message, "client refused without an answer");
        }
        r => {
            tracing::info!(endpoint = %ep.name, %peer, code = r.code, reason = %r.message, "client refused");
            let mut buf = BytesMut::new();
            fatal(&mut buf, r.code, &r.message);
            let _ = stream.write_all(&buf).await;
        }
    }
}

/// Runs startup and authentication, up to the point where TLS must be switched on.
/// The client's StartupMessage, after any SSLRequest or GSSENCRequest it sent first; a
/// CancelRequest or a switch to TLS ends the login here (`Err(step)`).
async fn startup(
    stream: &mut Socket,
    buf: &mut BytesMut,
    ep: &PgEndpoint,
) -> Result<Result<StartupParams, Step>, Refusal> {
    loop {
        match read_startup(stream, buf).await? {
            request @ (Startup::Ssl | Startup::GssEnc) => {
                // Bytes sent behind the request would be read as if they came through TLS
                // (CVE-2021-23214).
                if !buf.is_empty() {
                    return Err(refuse(
                        errors::PROTOCOL_VIOLATION,
                        "unexpected data after SSLRequest",
                    ));
                }
                if matches!(request, Startup::Ssl) && ep.tls.is_some() && !stream.is_tls() {
                    write(stream, b"S").await?;
                    return Ok(Err(Step::StartTls));
                }
                write(stream, b"N").await?;
            }
            Startup::Cancel { pid, key } => {
                if let Some((peer, key)) = super::cancel::lookup(&ep.engine.cancel, pid, key)
                    && let Err(e) = server::send_cancel(&peer, key).await
                {
                    tracing::warn!(%peer, error = %e, "could not forward a cancel request");
                }
                return Ok(Err(Step::Cancel));
            }
            Startup::Startup { params } => return Ok(Ok(params)),
        }
    }
}

/// (user, database, session parameters sorted by name)
type Identity = (String, String, Vec<(String, String)>);

/// Who is logging in to what, from the startup parameters.
fn identify(ep: &PgEndpoint, stream: &Socket, params: &StartupParams) -> Result<Identity, Refusal> {
    if ep.require_tls && !stream.is_tls() {
        return Err(refuse(
            errors::INVALID_AUTHORIZATION,
            format!(
                "SSL required: endpoint \"{}\" accepts only TLS connections",
                ep.name
            ),
        ));
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let user_name = param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            refuse(
                errors::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?
        .to_owned();
    if param("replication").is_some_and(|v| v != "false" && v != "0") {
        return Err(refuse(
            errors::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported",
        ));
    }
    let database = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user_name)
        .to_owned();
    let settings = session_settings(params)?;
    Ok((user_name, database, settings))
}

async fn login(
    stream: &mut Socket,
    buf: &mut BytesMut,
    ep: &Arc<PgEndpoint>,
    peer: SocketAddr,
    admitted: &AtomicBool,
) -> Result<Step, Refusal> {
    let params = match startup(stream, buf, ep).await? {
        Ok(params) => params,
        Err(step) => return Ok(step),
    };
    let (user_name, database, settings) = identify(ep, stream, &params)?;
    let user = match authenticate(stream, buf, ep, &user_name).await {
        Ok(user) => {
            let method = user.client_auth.name();
            crate::audit::auth_succeeded(&ep.name, peer, &user_name, method, stream.is_tls());
            user
        }
        Err((method, reason, refusal)) => {
            if !refusal.hung_up {
                crate::audit::auth_failed(&ep.name, peer, &user_name, method, &reason);
                ep.metrics.setup_failed_auth.inc();
            }
            return Err(refusal);
        }
    };
    let slot = user.open_session().map_err(|max| {
        crate::audit::turned_away(&ep.name, peer, "user at max_client_connections");
        refuse(
            errors::TOO_MANY_CONNECTIONS,
            format!("too many connections for role \"{user_name}\" (max_client_connections {max})"),
        )
    })?;
    admitted.store(true, Ordering::Relaxed);
    // The database's part of the login: immediate while an instance is up and the pool has
    // met its server, up to `connection_borrow_timeout` while none is.
    let served = async {
        let member = Box::pin(ep.engine.cluster.route(ep.want))
            .await
            .map_err(|e| {
                let (code, message) = errors::borrow_failure(&e);
                tracing::warn!(endpoint = %ep.name, error = %e, "no instance for a login");
                refuse(code, message)
            })?;
        let pools = &ep.engine.cluster.members[member];
        let pg = pools.get(
            &database,
            &user.credential().secret.username,
            &user.credentials,
        );
        reported_parameters(pools, &pg, &database).await?;
        Ok::<_, Refusal>((member, pg))
    };
    let (member, pg) = unless_hung_up(stream, buf, served)
        .await
        .ok_or_else(hung_up)??;
    let pools = &ep.engine.cluster.members[member];
    // Known now: served from the pool's cache.
    let reported = reported_parameters(pools, &pg, &database).await?;
    let (settings, parameters) = pg.share(settings, |s| parameter_statuses(reported, s));

    let id = ep.session_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let mut info = SessionInfo::new(id, (&ep.name, &ep.group), &user_name, peer, stream.is_tls());
    info.database = Some(database.clone());
    let cancel = super::cancel::register(&ep.engine.cancel, info);
    write(stream, &greeting(&parameters, &cancel)).await?;
    tracing::debug!(endpoint = %ep.name, session = id, user = %user_name, %database, "client logged in");
    Ok(Step::Session(
        Session::new(
            id,
            super::relay::Route {
                cluster: ep.engine.cluster.clone(),
                last_write: 0,
                member: u16::try_from(member).unwrap_or(u16::MAX),
                ryw_ms: u32::try_from(ep.read_your_writes_timeout.as_millis()).unwrap_or(u32::MAX),
                want: ep.want,
            },
            pg,
            cancel,
            settings,
            std::mem::take(buf),
            idle_limits(ep),
        ),
        slot,
    ))
}

/// AuthenticationOk, the server's parameters, the cancel key and ReadyForQuery: what a client
/// waits for before its first query.
fn greeting(parameters: &[u8], cancel: &CancelHandle) -> BytesMut {
    let mut out = BytesMut::with_capacity(parameters.len() + 64);
    wire::auth_ok(&mut out);
    out.extend_from_slice(parameters);
    wire::backend_key_data(&mut out, cancel.key.pid, cancel.key.key);
    wire::ready_for_query(&mut out, wire::status::IDLE);
    out
}

/// The server's parameters as ParameterStatus messages, with the client's own values where it
/// set them.
fn parameter_statuses(reported: &[(String, String)], settings: &[(String, String)]) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    for (name, value) in reported {
        let value = settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or(value.as_str(), |(_, v)| v.as_str());
        wire::parameter_status(&mut out, name, &normalize(name, value));
    }
    out.freeze()
}

async fn read_startup(stream: &mut Socket, buf: &mut BytesMut) -> Result<Startup, Refusal> {
    loop {
        if let Some(s) = wire::read_startup(buf)? {
            return Ok(s);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut Socket, buf: &mut BytesMut) -> Result<(), Refusal> {
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => Err(hung_up()),
        Ok(_) => Ok(()),
    }
}

async fn write(stream: &mut Socket, bytes: &[u8]) -> Result<(), Refusal> {
    stream.write_all(bytes).await.map_err(|_| hung_up())
}

/// The pool's ParameterStatus set: learned once from a server connection, then served from cache.
async fn reported_parameters<'a>(
    pools: &PgPools,
    pg: &'a PgPool,
    database: &str,
) -> Result<&'a [(String, String)], Refusal> {
    if let Some(r) = pg.reported.get() {
        return Ok(r);
    }
    let lease = pg.pool.borrow().await.map_err(|e| {
        if let crate::errors::BorrowError::Connect(_) = e {
            pools.forget(database, &pg.login.user);
        }
        let (code, message) = errors::borrow_failure(&e);
        tracing::warn!(pool = %pg.pool.name(), error = %e, "first server connection failed");
        refuse(code, message)
    })?;
    let mut reported = lease.reported.clone();
    lease.release(true);
    // sluice's own name for its connections is not the client's: one that sets none sees
    // Postgres' default, as directly.
    for (name, value) in &mut reported {
        if name == "application_name" {
            value.clear();
        }
    }
    Ok(pg.reported.get_or_init(|| reported))
}

/// The session parameters a client asked for at startup, sorted by name for cheap comparison.
fn session_settings(params: &[(String, String)]) -> Result<Vec<(String, String)>, Refusal> {
    let mut settings: Vec<(String, String)> = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "user" | "database" | "replication" => {}
            "options" => parse_options(value, &mut settings)?,
            _ if name.starts_with("_pq_.") => {}
            _ => settings.push((name.to_ascii_lowercase(), value.clone())),
        }
    }
    for (name, _) in &settings {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(refuse(
                errors::PROTOCOL_VIOLATION,
                format!("invalid parameter name \"{name}\""),
            ));
        }
    }
    // sluice names its pooled connections (`sluice pool`); a client that names none must
    // still see Postgres' default, so its session asks for the empty name explicitly.
    if !settings.iter().any(|(n, _)| n == "application_name") {
        settings.push(("application_name".into(), String::new()));
    }
    settings.sort();
    settings.dedup_by(|a, b| a.0 == b.0);
    if let Some((_, value)) = settings.iter().find(|(n, _)| n == "client_encoding")
        && encoding::canonical(value).is_none()
    {
        // Refused at login, as the server does, not at the session's first query.
        return Err(refuse(
            errors::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"client_encoding\": \"{value}\""),
        ));
    }
    Ok(settings)
}

/// `options=-c name=value --name=value`, as libpq passes them.
fn parse_options(options: &str, out: &mut Vec<(String, String)>) -> Result<(), Refusal> {
    let mut words = options.split_ascii_whitespace();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else {
            word.strip_prefix("--").or_else(|| word.strip_prefix("-c"))
        };
        let Some((name, value)) = setting.and_then(|s| s.split_once('=')) else {
            return Err(refuse(
                errors::FEATURE_NOT_SUPPORTED,
                format!("unsupported startup option \"{word}\""),
            ));
        };
        out.push((
            name.replace('-', "_").to_ascii_lowercase(),
            value.to_owned(),
        ));
    }
    Ok(())
}

/// The spelling the server would report for a client-supplied value, where clients check it.
fn normalize<'a>(name: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if name == "client_encoding"
        && let Some(canonical) = encoding::canonical(value)
    {
        return canonical.into();
    }
    value.into()
}

#[cfg(test)]
mod tests;
