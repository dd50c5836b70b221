//! The client side of a MySQL session: sluice's greeting, TLS (CLIENT_SSL), the login (checked in
//! `login`) and the hand-over to the relay, answered without holding a server connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::endpoint::MyEndpoint;
use super::errors;
use super::kill;
use super::login::{Login, NATIVE, Refusal, authenticate, check_schema, nonce, refuse};
use super::pools::{MyPools, PoolKey, ServerInfo};
use super::relay::{Dormant, Outcome, Session};
use super::wire::{self, Greeting, HandshakeResponse, OkPacket, caps};
use crate::auth::users::{SessionSlot, User};
use crate::session::SessionInfo;
use crate::session::park::{self, Parkable};
use crate::tls::{Flavor, Socket, unless_hung_up};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
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

/// Serves one accepted client connection to the end. An `async move` block rather than an
/// `async fn`, which would keep its arguments twice in the task: this future is what a busy
/// client costs.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ep: Arc<MyEndpoint>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Boxed: the login's state is large and short-lived; inline it would stay in the task.
        // A block, so the login's bindings end before the session's await: a binding still in
        // scope there keeps its room in the task even after it was moved out.
        let (stream, life) = {
            let Some((stream, session, slot)) = Box::pin(login_or_turn_away(tcp, &ep, peer)).await
            else {
                return;
            };
            let life = Box::new(Life {
                session: *session,
                _slot: slot,
            });
            (stream, life)
        };
        live(life, stream).await;
    }
}

/// A logged-in session and what it keeps to its end (counted open in the login, closed here).
/// Boxed: the session's task holds a pointer.
struct Life {
    session: Session,
    /// Held for its drop: the user's session count.
    _slot: Option<SessionSlot>,
}

/// A parked session: its compact form and what it keeps to its end; all a parked client costs
/// besides its socket and the lot's slot.
struct Parked {
    session: Dormant,
    _slot: Option<SessionSlot>,
}

/// Runs a session until it ends or parks. An `async move` block, as `serve`: the task keeps
/// `client` once.
#[allow(clippy::manual_async_fn)]
fn live(mut life: Box<Life>, client: Socket) -> impl Future<Output = ()> + Send {
    async move {
        let mut client = client;
        match (life.session.run(&mut client).await, client) {
            (Outcome::Park, Socket::Plain(tcp)) => {
                let Life { session, _slot } = *life;
                let parking = session.endpoint().engine.cluster.parking.clone();
                let parked = Box::new(Parked {
                    session: session.into_dormant(),
                    _slot,
                });
                park::park(parking.as_ref(), parked, tcp);
            }
            (Outcome::Closed { tls }, _) => life.session.endpoint().metrics.session_closed(tls),
            (Outcome::Park, _) => life.session.endpoint().metrics.session_closed(false),
        }
    }
}

impl Parkable for Parked {
    fn live(self: Box<Self>, client: TcpStream) -> impl Future<Output = ()> + Send {
        let Parked { session, _slot } = *self;
        let life = Box::new(Life {
            session: session.wake(),
            _slot,
        });
        live(life, Socket::Plain(client))
    }

    fn closed(&self) {
        self.session.endpoint().metrics.session_closed(false);
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.session.idle_deadline()
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
    let mut stream = Socket::Plain(tcp);
    let (mut buf, mut seq, mut hello) = (BytesMut::new(), 0, None);
    // sluice speaks first, and its greeting waits for an instance to greet from (up to
    // `connection_borrow_timeout`, then an ERR): the database's time, so the client's login
    // time starts after it.
    {
        let Some(member) = unless_hung_up(&mut stream, &mut buf, instance(ep)).await else {
            tracing::debug!(endpoint = %ep.name, %peer, "client hung up before its greeting");
            return None;
        };
        let mut login = Login {
            stream: &mut stream,
            buf,
            seq,
        };
        let greeted = match member {
            Ok(met) => greet(&mut login, ep, &mut hello, met).await,
            Err(r) => Err(r),
        };
        if let Err(r) = greeted {
            refused(&mut login, ep, peer, r).await;
            return None;
        }
        (buf, seq) = (login.buf, login.seq);
    }
    let deadline = Instant::now() + LOGIN_TIMEOUT;
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
                let who = (&*ep.name, peer);
                stream = tls
                    .accept_by(deadline, Flavor::Mysql, tcp, &early, who)
                    .await?;
            }
            Ok(Err(r)) => {
                refused(&mut login, ep, peer, r).await;
                return None;
            }
            Err(_) => {
                tracing::info!(endpoint = %ep.name, %peer, "client login timed out");
                return None;
            }
        }
    }
}

/// Logs a refusal without secrets and sends it to the client as an ERR packet.
async fn refused(login: &mut Login<'_>, ep: &MyEndpoint, peer: SocketAddr, r: Refusal) {
    if r.hung_up {
        tracing::debug!(endpoint = %ep.name, %peer, "client hung up during login");
    } else {
        tracing::info!(endpoint = %ep.name, %peer, code = r.code.0, reason = %r.message, "client refused");
    }
    // In sequence: after an AuthSwitch or a fast-auth packet the ERR is not packet 2.
    login.refuse(r).await;
}

/// The instance a login greets from, and its server's facts: the database's part of the login,
/// immediate while an instance is up and has been met.
async fn instance(ep: &MyEndpoint) -> Result<(usize, &ServerInfo), Refusal> {
    let member = Box::pin(ep.engine.cluster.route(ep.want))
        .await
        .map_err(|e| {
            tracing::warn!(endpoint = %ep.name, error = %e, "no instance for a login");
            let (code, message) = errors::borrow_failure(&e);
            refuse(code, message)
        })?;
    Ok((member, server_info(ep, member).await?))
}

async fn server_info(ep: &MyEndpoint, member: usize) -> Result<&ServerInfo, Refusal> {
    ep.engine.cluster.members[member]
        .server_info()
        .await
        .map_err(|e| {
            tracing::warn!(endpoint = %ep.name, error = %e, "cannot read the server's greeting");
            refuse(errors::UNKNOWN, format!("sluice: {e}"))
        })
}

/// Sends sluice's greeting from `member` and keeps what it told the client in `hello` (after a
/// switch to TLS the client's handshake response comes without a new greeting).
async fn greet(
    login: &mut Login<'_>,
    ep: &MyEndpoint,
    hello: &mut Option<Hello>,
    (member, server): (usize, &ServerInfo),
) -> Result<(), Refusal> {
    let tls = if ep.tls.is_some() { caps::SSL } else { 0 };
    let files = if ep.engine.local_infile {
        caps::LOCAL_FILES
    } else {
        0
    };
    let h = hello.insert(Hello {
        member,
        salt: nonce(),
        offered: (OFFERED | files) & server.caps | caps::LONG_PASSWORD | tls,
        id: kill::connection_id(
            &ep.engine.kill,
            ep.session_ids.fetch_add(1, Ordering::Relaxed) + 1,
        ),
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
    let mut out = Vec::with_capacity(128);
    greeting.write(&mut out);
    login.buf.reserve(512);
    login.seq = 1;
    login.send(&out).await
}

async fn login_exchange(
    login: &mut Login<'_>,
    ep: &Arc<MyEndpoint>,
    peer: SocketAddr,
    hello: &mut Option<Hello>,
) -> Result<Step, Refusal> {
    let Some(h) = hello.as_ref() else {
        return Err(refuse(errors::HANDSHAKE, "no greeting was sent"));
    };
    let (salt, offered, id, member) = (&h.salt[..], h.offered, h.id, h.member);
    let pools = &ep.engine.cluster.members[member];
    let server = server_info(ep, member).await?;
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
    let session = hand_over(
        login,
        ep,
        peer,
        (member, pools, server),
        &hr,
        negotiated,
        &user,
        id,
    )
    .await?;
    Ok(Step::Session(session, slot))
}

/// The client is who it says: its pool, the schema it named, the OK that ends its login, and
/// its session.
#[allow(clippy::too_many_arguments)]
async fn hand_over(
    login: &mut Login<'_>,
    ep: &Arc<MyEndpoint>,
    peer: SocketAddr,
    (member, pools, server): (usize, &MyPools, &ServerInfo),
    hr: &HandshakeResponse,
    negotiated: u32,
    user: &User,
    id: u32,
) -> Result<Box<Session>, Refusal> {
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
    let mut out = Vec::with_capacity(16);
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
    let kill = kill::register(&ep.engine.kill, id, &key.user, info);
    let session = Box::new(Session::new(
        id,
        ep.clone(),
        peer,
        (member, pool),
        kill,
        hr.database.as_deref().map(Box::from),
        std::mem::take(&mut login.buf),
    ));
    Ok(session)
}

#[cfg(test)]
mod tests;
