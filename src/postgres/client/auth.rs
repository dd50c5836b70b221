//! Client authentication for Postgres sessions: SCRAM-SHA-256 or MD5 against the user's
//! secret, or an IAM token or JWT sent as a cleartext password inside TLS.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::{PgEndpoint, Refusal, errors, read_more, refuse, wire, write};
use crate::auth::scram::{self, ScramExchange};
use crate::auth::users::User;
use crate::config::{ClientAuth, PasswordAuthType};
use crate::tls::Socket;

/// Authentication messages are small.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// Reads one password-type message ('p') and returns its body.
async fn read_password(stream: &mut Socket, buf: &mut BytesMut) -> Result<BytesMut, Refusal> {
    loop {
        if let Some(frame) = wire::next_frame(buf, MAX_AUTH_MESSAGE)? {
            if frame.tag != wire::frontend::PASSWORD {
                return Err(refuse(
                    errors::PROTOCOL_VIOLATION,
                    "expected a password response",
                ));
            }
            let mut msg = buf.split_to(frame.len);
            msg.advance(wire::FRAME_HEADER_LEN);
            return Ok(msg);
        }
        read_more(stream, buf).await?;
    }
}

/// A failed login: the method tried, the reason to audit, and what the client is told.
pub(super) type AuthFailure = (&'static str, String, Refusal);

pub(super) async fn authenticate(
    stream: &mut Socket,
    buf: &mut BytesMut,
    ep: &PgEndpoint,
    name: &str,
) -> Result<Arc<User>, AuthFailure> {
    let users = &ep.users;
    let bad_password = || {
        refuse(
            errors::INVALID_PASSWORD,
            format!("password authentication failed for user \"{name}\""),
        )
    };
    let (user, known) = match users.get(name) {
        Some(u) => (u.clone(), true),
        None => match users.decoy() {
            Some(d) => (d.clone(), false),
            None => return Err(("password", "unknown user".into(), bad_password())),
        },
    };
    let method = user.client_auth.name();
    let failed = |reason: &str, refusal| (method, reason.to_owned(), refusal);
    if user.client_auth != ClientAuth::Password {
        // The token travels as a cleartext password: only inside TLS.
        if !stream.is_tls() {
            let refusal = refuse(
                errors::INVALID_AUTHORIZATION,
                format!("{method} authentication requires SSL (use sslmode=require or stricter)"),
            );
            return Err(failed("token login without TLS", refusal));
        }
        let mut out = BytesMut::new();
        wire::auth_cleartext(&mut out);
        write(stream, &out)
            .await
            .map_err(|r| failed("hung up", r))?;
        let body = read_password(stream, buf)
            .await
            .map_err(|r| failed("hung up", r))?;
        let token = wire::Reader::new(&body, "PasswordMessage")
            .cstr()
            .ok()
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or_else(|| failed("malformed password message", bad_password()))?;
        users
            .verify_token(&user, token, ep.port)
            .map_err(|reason| failed(&reason, bad_password()))?;
        return Ok(user);
    }
    password_exchange(stream, buf, &user, name, known)
        .await
        .map_err(|r| {
            if known {
                // The client may hold a password rotated after sluice's last read.
                user.credentials.client_mismatch();
            }
            failed("wrong password", r)
        })?;
    Ok(user)
}

/// SCRAM-SHA-256 or MD5 against the user's secret; an unknown user's decoy never matches.
async fn password_exchange(
    stream: &mut Socket,
    buf: &mut BytesMut,
    user: &User,
    name: &str,
    known: bool,
) -> Result<(), Refusal> {
    let bad_password = || {
        refuse(
            errors::INVALID_PASSWORD,
            format!("password authentication failed for user \"{name}\""),
        )
    };
    let versions = user.credentials.versions();
    let mut out = BytesMut::new();
    match user.method {
        PasswordAuthType::PostgresMd5 => {
            let salt: [u8; 4] = rand::random();
            write(stream, &wire::auth_md5(salt)).await?;
            let body = read_password(stream, buf).await?;
            let answer = wire::Reader::new(&body, "PasswordMessage").cstr()?;
            let matches = versions.each().any(|c| {
                let expected = crate::auth::md5::expected_response(&c.md5, salt);
                scram::ct_eq(answer, &expected)
            });
            if !known || !matches {
                return Err(bad_password());
            }
        }
        _ => {
            wire::auth_sasl(&mut out, scram::MECHANISM);
            write(stream, &out).await?;
            out.clear();
            let body = read_password(stream, buf).await?;
            let mut r = wire::Reader::new(&body, "SASLInitialResponse");
            if r.cstr()? != scram::MECHANISM.as_bytes() {
                return Err(refuse(
                    errors::PROTOCOL_VIOLATION,
                    "unsupported SASL mechanism",
                ));
            }
            let len = usize::try_from(r.i32()?).map_err(|_| bad_password())?;
            let mut exchange = ScramExchange::start(r.take(len)?).map_err(|_| bad_password())?;
            wire::auth_sasl_continue(&mut out, exchange.server_first(&versions.current.scram));
            write(stream, &out).await?;
            out.clear();
            let body = read_password(stream, buf).await?;
            let server_final = versions
                .each()
                .find_map(|c| exchange.finish(&c.scram, &body).ok())
                .ok_or_else(bad_password)?;
            if !known {
                return Err(bad_password());
            }
            wire::auth_sasl_final(&mut out, server_final.as_bytes());
            write(stream, &out).await?;
        }
    }
    Ok(())
}
