//! Checking who a MySQL client is, for the first login and for COM_CHANGE_USER alike: the
//! password exchange (mysql_native_password or caching_sha2_password, switched to whichever
//! the user is configured for), IAM and JWT tokens, and the schema check; and how a refusal is
//! sent in sequence.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::AsyncReadExt;

use super::endpoint::MyEndpoint;
use super::errors::{self, Code};
use super::pools::MyPool;
use super::wire::{self, AuthSwitch, HandshakeResponse, caps};
use crate::auth::users::User;
use crate::config::{ClientAuth, PasswordAuthType};
use crate::tls::Socket;

/// Handshake packets are small; connection attributes are capped at 64 KiB by servers too.
const MAX_LOGIN_PACKET: usize = 64 << 10;
pub(super) const NATIVE: &str = "mysql_native_password";
const SHA2: &str = "caching_sha2_password";
/// How IAM and JWT tokens travel: as the password itself, so only inside TLS.
const CLEAR: &str = "mysql_clear_password";
/// Why a client was turned away: sent as an ERR packet, logged without secrets.
#[derive(Debug)]
pub(super) struct Refusal {
    pub code: Code,
    pub message: String,
    pub hung_up: bool,
}

pub(super) fn refuse(code: Code, message: impl Into<String>) -> Refusal {
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
    pub async fn refuse(&mut self, r: Refusal) {
        if !r.hung_up {
            let mut out = Vec::new();
            let seq = self.next_seq();
            wire::write_err(&mut out, seq, r.code.0, r.code.1, &r.message);
            let _ = self.stream.write_all(&out).await;
        }
    }

    pub async fn send(&mut self, out: &[u8]) -> Result<(), Refusal> {
        self.stream.write_all(out).await.map_err(|_| hung_up())
    }

    pub async fn read(&mut self) -> Result<BytesMut, Refusal> {
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

pub(super) fn nonce() -> Vec<u8> {
    // Printable, no NUL: some clients treat the salt as a C string.
    let mut rng = rand::rng();
    (0..20).map(|_| rng.random_range(b'!'..=b'~')).collect()
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
        Err(crate::errors::ConnectError::Refused { code, message, .. }) => {
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
