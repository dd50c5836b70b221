//! COM_CHANGE_USER: the client logs in again, as another user or the same one, on its open
//! connection. sluice checks the password as at login (always with a fresh salt, by switching the
//! client to the user's plugin), and the session starts over in the new user's pool, as a server
//! would start a fresh session.

use crate::tls::Socket;
use bytes::BytesMut;

use super::{End, Session};
use crate::mysql::errors;
use crate::mysql::login::{Login, authenticate, check_schema};
use crate::mysql::pools::PoolKey;
use crate::mysql::wire::{self, HandshakeResponse, OkPacket, Reader, WireError};

/// The fields of COM_CHANGE_USER sluice uses.
fn parse(payload: &[u8]) -> Result<(String, Option<String>, Option<u8>), WireError> {
    let mut r = Reader::new(payload, "COM_CHANGE_USER");
    r.u8()?;
    let user = String::from_utf8_lossy(r.cstr()?).into_owned();
    let n = usize::from(r.u8()?);
    r.take(n)?;
    let db = String::from_utf8_lossy(r.cstr_or_rest()).into_owned();
    let charset = if r.is_empty() {
        None
    } else {
        Some(r.u16()? as u8)
    };
    Ok((user, (!db.is_empty()).then_some(db), charset))
}

impl Session {
    pub(super) async fn change_user(
        &mut self,
        client: &mut Socket,
        payload: &[u8],
    ) -> Result<(), End> {
        let (name, database, charset) = parse(payload)
            .map_err(|e| End::Fatal(errors::HANDSHAKE, format!("Bad COM_CHANGE_USER: {e}")))?;
        // What the old identity held is reset before the new one may have it.
        if let Some(lease) = self.lease.take() {
            self.clean_up(lease).await;
        }
        self.start_over();
        self.schema = None;
        let request = HandshakeResponse {
            user: name,
            database,
            // No plugin named: the exchange always switches, so the salt is fresh.
            plugin: Some(String::new()),
            ..HandshakeResponse::default()
        };
        let ep = self.ep.clone();
        let mut login = Login {
            stream: client,
            buf: std::mem::take(&mut self.cin),
            seq: 1,
        };
        let user = match authenticate(&mut login, &ep, &request, &[], self.peer).await {
            Ok(user) => user,
            Err(r) => {
                login.refuse(r).await;
                return Err(End::ClientGone);
            }
        };
        let key = PoolKey {
            user: user.credential().secret.username.clone(),
            caps: self.pool.login.caps,
            collation: charset
                .filter(|c| *c != 0)
                .unwrap_or(self.pool.login.collation),
        };
        let pool =
            ep.engine.cluster.members[self.member].get(&key, &user.credentials, &self.pool.dialect);
        if let Some(db) = &request.database
            && let Err(r) = check_schema(&pool, db).await
        {
            login.refuse(r).await;
            return Err(End::ClientGone);
        }
        let mut out = Vec::with_capacity(16);
        let ok = OkPacket {
            status: wire::status::AUTOCOMMIT,
            ..OkPacket::default()
        };
        wire::write_ok(&mut out, login.next_seq(), &ok);
        login.send(&out).await.map_err(|_| End::ClientGone)?;
        self.cin = std::mem::replace(&mut login.buf, BytesMut::new());
        tracing::debug!(session = self.id, user = %request.user, "client changed user");
        let mut info = self.kill.target.info.clone();
        info.user.clone_from(&request.user);
        info.database.clone_from(&request.database);
        self.kill = crate::mysql::kill::register(&ep.engine.kill, self.id, &key.user, info);
        self.pool = pool;
        self.schema = request.database.map(String::into_boxed_str);
        Ok(())
    }
}
