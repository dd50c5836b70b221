//! A connection from sluice to a MySQL/MariaDB instance: connect, log in (mysql_native_password or
//! caching_sha2_password's fast path), and the control-plane commands sluice runs itself.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::state::ConnState;
use super::wire::{
    self, Greeting, HandshakeResponse, OkPacket, PrepareOk, Reader, Reply, ReplyKind, caps, command,
};
use std::sync::Arc;

use crate::auth::ServerAccess;
use crate::auth::credentials::{Credential, Credentials};
use crate::auth::mysql::MysqlKeys;
use crate::errors::{ConnectError, Rejected};
use crate::pool::PooledConnection;
use crate::tls::{Socket, unix_path, until_closed};

/// Largest packet sluice reads whole from a server on the control plane.
const MAX_CONTROL_PACKET: usize = wire::MAX_PAYLOAD + wire::HEADER_LEN;
/// What every server connection asks for, whatever the client did.
const BASE_CAPS: u32 = caps::LONG_PASSWORD
    | caps::LONG_FLAG
    | caps::PROTOCOL_41
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::PLUGIN_AUTH
    | caps::PLUGIN_AUTH_LENENC_DATA
    | caps::CONNECT_ATTRS;
const NATIVE: &str = "mysql_native_password";
const SHA2: &str = "caching_sha2_password";
const CLEAR: &str = "mysql_clear_password";

/// What a server connection is opened with: the pool's key (user, the client capabilities that
/// change the protocol, the handshake collation) and the secret's password hashes.
#[derive(Clone)]
pub struct ServerLogin {
    pub addr: String,
    pub user: String,
    /// The user's secret, read at each connect so a rotation reaches open pools.
    pub credentials: Arc<Credentials>,
    /// Client capability bits forwarded to the server (`wire::FORWARDED_CAPS` subset).
    pub caps: u32,
    pub collation: u8,
    /// TLS and `server_iam`, as the target group says.
    pub access: ServerAccess,
    /// The `program_name` connection attribute: what the connection is for, for operators
    /// (`performance_schema.session_connect_attrs`).
    pub program_name: &'static str,
}

/// `program_name` of pooled connections (and the KILL QUERY connections opened beside them).
pub const POOL_PROGRAM: &str = "sluice pool";
/// `program_name` of probe connections.
pub const PROBE_PROGRAM: &str = "sluice probe";
/// `program_name` of a fleet member's advertising connection.
pub const FLEET_PROGRAM: &str = "sluice fleet";

/// The CONNECT_ATTRS block: `_client_name` and `program_name`, each a length-prefixed key and
/// value (all shorter than 251 bytes, so one length byte each).
fn connect_attrs(program_name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    for (key, value) in [("_client_name", "sluice"), ("program_name", program_name)] {
        for s in [key, value] {
            out.push(u8::try_from(s.len()).unwrap_or(250));
            out.extend_from_slice(&s.as_bytes()[..s.len().min(250)]);
        }
    }
    out
}

impl std::fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLogin")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("caps", &format_args!("{:#x}", self.caps))
            .field("collation", &self.collation)
            .finish_non_exhaustive()
    }
}

pub struct ServerConn {
    pub stream: Socket,
    /// Bytes read from the server and not yet handled.
    pub buf: BytesMut,
    pub thread_id: u32,
    /// The capabilities in force on this connection.
    pub caps: u32,
    /// Schema, tracked variables and prepared statements as sluice left them.
    pub state: ConnState,
    /// Commands without a reply (COM_STMT_CLOSE) to send ahead of the next command.
    pub pending: Vec<u8>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("thread_id", &self.thread_id)
            .finish()
    }
}

impl PooledConnection for ServerConn {
    fn close(mut self) {
        // COM_QUIT lets the server end the thread without logging an aborted connection.
        let _ = self.stream.try_write(&[1, 0, 0, 0, command::QUIT]);
    }

    fn close_confirmed(
        mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            if self
                .stream
                .write_all(&[1, 0, 0, 0, command::QUIT])
                .await
                .is_ok()
            {
                until_closed(&mut self.stream).await;
            }
        })
    }

    fn is_usable(&mut self) -> bool {
        self.stream.idle_and_open(&self.buf)
    }
}

/// The server's answers to the handshake response until its OK: auth switches, the
/// caching_sha2_password fast path or full authentication (TLS only).
async fn auth_exchange(
    stream: &mut Socket,
    buf: &mut BytesMut,
    addr: &str,
    keys: &MysqlKeys,
    mut plugin: &'static str,
) -> Result<(), ConnectError> {
    let mut out = Vec::with_capacity(64);
    loop {
        let (seq, payload) = read_packet(stream, buf, addr).await?;
        match payload.first() {
            Some(0x00) => break,
            Some(0xff) => return Err(refused(addr, &payload)),
            Some(0xfe) => {
                let switch = wire::parse_auth_switch(&payload).map_err(|e| protocol(addr, e))?;
                plugin = match switch.plugin.as_str() {
                    NATIVE => NATIVE,
                    SHA2 => SHA2,
                    // What RDS's AWSAuthenticationPlugin asks for: IAM tokens in clear.
                    CLEAR if stream.is_tls() => CLEAR,
                    CLEAR => {
                        return Err(protocol(
                            addr,
                            "the server asks for a cleartext password, which only TLS may carry (set server_tls)",
                        ));
                    }
                    other => {
                        return Err(protocol(addr, format!("unsupported auth plugin {other}")));
                    }
                };
                out.clear();
                let auth = scramble(keys, plugin, &switch.data);
                wire::write_packet(&mut out, seq.wrapping_add(1), &auth);
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| ConnectError::from_io(addr, "", &e))?;
            }
            // caching_sha2_password: 3 = the fast path worked, OK follows.
            Some(0x01) if plugin == SHA2 && payload.get(1) == Some(&3) => {}
            // 4 = full authentication: the password itself, which only TLS may carry.
            Some(0x01) if plugin == SHA2 && payload.get(1) == Some(&4) && stream.is_tls() => {
                out.clear();
                let password = scramble(keys, CLEAR, &[]);
                wire::write_packet(&mut out, seq.wrapping_add(1), &password);
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| ConnectError::from_io(addr, "", &e))?;
            }
            Some(0x01) => {
                return Err(protocol(
                    addr,
                    "caching_sha2_password full authentication needs TLS (set server_tls)",
                ));
            }
            _ => return Err(protocol(addr, "unexpected packet during login")),
        }
    }
    Ok(())
}

fn protocol(addr: &str, reason: impl ToString) -> ConnectError {
    ConnectError::Protocol {
        instance: addr.to_owned(),
        reason: reason.to_string(),
    }
}

fn refused(addr: &str, payload: &[u8]) -> ConnectError {
    match wire::parse_err(payload) {
        Ok(e) => ConnectError::Refused {
            instance: addr.to_owned(),
            rejected: match e.code {
                1045 => Rejected::Credentials,
                1049 => Rejected::UnknownDatabase,
                1040 | 1203 => Rejected::TooManyConnections,
                // Shutting down, offline mode: the next login may find the server back or
                // replaced, so one refusal does not answer the pool's other waiters.
                1053 | 3032 => Rejected::NotReady,
                _ => Rejected::Other,
            },
            code: e.code.to_string(),
            message: e.message,
        },
        Err(e) => protocol(addr, e),
    }
}

/// Reads the server's greeting only: its version string and capabilities, no login.
pub async fn greeting(addr: &str) -> Result<Greeting, ConnectError> {
    let mut stream = open(addr).await.map_err(|e| unreachable(addr, e))?;
    let mut buf = BytesMut::new();
    let (_, payload) = read_packet(&mut stream, &mut buf, addr).await?;
    if payload.first() == Some(&0xff) {
        return Err(refused(addr, &payload));
    }
    Greeting::parse(&payload).map_err(|e| protocol(addr, e))
}

/// A socket to `addr`: TCP, or a Unix-domain socket for a `unix:/path` instance.
async fn open(addr: &str) -> std::io::Result<Socket> {
    match unix_path(addr) {
        Some(path) => Ok(Socket::Unix(UnixStream::connect(path).await?)),
        None => Ok(Socket::Plain(TcpStream::connect(addr).await?)),
    }
}

fn unreachable(addr: &str, e: impl ToString) -> ConnectError {
    ConnectError::Unreachable {
        instance: addr.to_owned(),
        reason: e.to_string(),
    }
}

async fn read_packet(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
    addr: &str,
) -> Result<(u8, BytesMut), ConnectError> {
    loop {
        if let Some(p) = wire::next_packet(buf) {
            if p.len > MAX_CONTROL_PACKET {
                return Err(protocol(addr, "oversized packet"));
            }
            if buf.len() >= p.len {
                let mut packet = buf.split_to(p.len);
                packet.advance(wire::HEADER_LEN);
                return Ok((p.seq, packet));
            }
        }
        buf.reserve(4096);
        match stream.read_buf(buf).await {
            // Without a word: the server is going away (a shutdown), not refusing.
            Ok(0) => return Err(unreachable(addr, "the server closed the connection")),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::from_io(addr, "", &e)),
        }
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
        let addr = login.addr.as_str();
        let token = (login.access.token(addr, &login.user).await).map_err(|e| protocol(addr, e))?;
        let token_keys = token.as_deref().map(MysqlKeys::derive);
        let keys = token_keys.as_ref().unwrap_or(&cred.mysql);
        let mut socket = open(addr).await.map_err(|e| unreachable(addr, e))?;
        if let Socket::Plain(tcp) = &socket {
            let _ = tcp.set_nodelay(true);
            login.access.tune(tcp).map_err(|e| unreachable(addr, e))?;
        }
        let mut buf = BytesMut::with_capacity(4096);
        let (_, payload) = read_packet(&mut socket, &mut buf, addr).await?;
        if payload.first() == Some(&0xff) {
            return Err(refused(addr, &payload));
        }
        let greeting = Greeting::parse(&payload).map_err(|e| protocol(addr, e))?;
        // MariaDB leaves LONG_PASSWORD ("CLIENT_MYSQL") out of its greeting on purpose.
        let required = login.caps | caps::PROTOCOL_41 | caps::SECURE_CONNECTION;
        if greeting.caps & required != required {
            return Err(protocol(
                addr,
                format!("server lacks capabilities {:#x}", required & !greeting.caps),
            ));
        }
        let mut wanted = (BASE_CAPS | login.caps) & (greeting.caps | caps::LONG_PASSWORD);
        let (mut stream, seq) = start_tls(socket, login, &greeting, &mut wanted).await?;
        let plugin = if greeting.plugin == SHA2 {
            SHA2
        } else {
            NATIVE
        };
        let response = HandshakeResponse {
            caps: wanted,
            max_packet: 1 << 30,
            charset: login.collation,
            user: login.user.clone(),
            auth: scramble(keys, plugin, &greeting.nonce),
            database: None,
            plugin: Some(plugin.to_owned()),
            attrs: connect_attrs(login.program_name),
            ssl_request: false,
        };
        let mut out = Vec::with_capacity(256);
        response.write(&mut out, seq);
        stream
            .write_all(&out)
            .await
            .map_err(|e| ConnectError::from_io(addr, "", &e))?;
        auth_exchange(&mut stream, &mut buf, addr, keys, plugin).await?;
        Ok(Self {
            stream,
            buf,
            thread_id: greeting.connection_id,
            caps: wanted,
            state: ConnState::default(),
            pending: Vec::new(),
        })
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps & caps::DEPRECATE_EOF != 0
    }

    async fn send(&mut self, addr: &str, out: &[u8]) -> Result<(), ConnectError> {
        self.write_command(out)
            .await
            .map_err(|e| ConnectError::from_io(addr, "", &e))
    }

    /// Writes a command, after any queued reply-less ones.
    pub async fn write_command(&mut self, out: &[u8]) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.stream.write_all(&self.pending).await?;
            self.pending.clear();
        }
        self.stream.write_all(out).await
    }

    async fn read(&mut self, addr: &str) -> Result<BytesMut, ConnectError> {
        Ok(read_packet(&mut self.stream, &mut self.buf, addr).await?.1)
    }

    /// Runs one command with a one-packet reply (COM_INIT_DB, COM_PING, COM_RESET_CONNECTION).
    pub async fn command(
        &mut self,
        addr: &str,
        cmd: u8,
        arg: &[u8],
    ) -> Result<OkPacket, ConnectError> {
        let mut out = Vec::with_capacity(arg.len() + 5);
        let w = wire::PacketWriter::begin(&mut out, 0);
        out.push(cmd);
        out.extend_from_slice(arg);
        w.finish(&mut out);
        self.send(addr, &out).await?;
        let payload = self.read(addr).await?;
        match payload.first() {
            Some(0xff) => Err(refused(addr, &payload)),
            _ => wire::parse_ok(&payload).map_err(|e| protocol(addr, e)),
        }
    }

    /// Makes `db` the connection's schema (COM_INIT_DB) and records it.
    pub async fn use_schema(&mut self, addr: &str, db: &str) -> Result<(), ConnectError> {
        self.command(addr, command::INIT_DB, db.as_bytes()).await?;
        self.state.schema = Some(db.into());
        Ok(())
    }

    /// `CURRENT_ROLE()` of a MariaDB connection (`None`: SQL NULL, no role).
    pub async fn current_role(&mut self, addr: &str) -> Result<Option<Box<str>>, ConnectError> {
        let mut rows = self.query(addr, "SELECT CURRENT_ROLE()").await?;
        let value = rows.pop().and_then(|r| r.into_iter().next()).flatten();
        Ok(value.map(Into::into))
    }

    /// Runs a text query to completion; the rows of its last result set, NULL as `None`.
    pub async fn query(
        &mut self,
        addr: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ConnectError> {
        let mut out = Vec::with_capacity(sql.len() + 5);
        let w = wire::PacketWriter::begin(&mut out, 0);
        out.push(command::QUERY);
        out.extend_from_slice(sql.as_bytes());
        w.finish(&mut out);
        self.send(addr, &out).await?;
        let mut reply = Reply::new(ReplyKind::Query, self.deprecate_eof());
        let mut rows = Vec::new();
        while !reply.done() {
            let payload = self.read(addr).await?;
            let first = payload.first().copied().unwrap_or(0);
            if reply.in_rows() && !reply.needs_whole(first, payload.len()) {
                rows.push(text_row(&payload).map_err(|e| protocol(addr, e))?);
            }
            reply
                .on_packet(&payload, payload.len())
                .map_err(|e| protocol(addr, e))?;
        }
        if reply.error.is_some() {
            return Err(ConnectError::Refused {
                instance: addr.to_owned(),
                rejected: Rejected::Other,
                code: reply.error.unwrap_or(0).to_string(),
                message: format!("internal query failed: {sql}"),
            });
        }
        Ok(rows)
    }

    /// Prepares `sql` and consumes its definitions.
    pub async fn prepare(&mut self, addr: &str, sql: &[u8]) -> Result<PrepareOk, ConnectError> {
        let mut out = Vec::with_capacity(sql.len() + 5);
        let w = wire::PacketWriter::begin(&mut out, 0);
        out.push(command::STMT_PREPARE);
        out.extend_from_slice(sql);
        w.finish(&mut out);
        self.send(addr, &out).await?;
        let mut reply = Reply::new(ReplyKind::Prepare, self.deprecate_eof());
        let mut error = None;
        while !reply.done() {
            let payload = self.read(addr).await?;
            if payload.first() == Some(&0xff) {
                error = Some(refused(addr, &payload));
            }
            reply
                .on_packet(&payload, payload.len())
                .map_err(|e| protocol(addr, e))?;
        }
        match (error, reply.prepared) {
            (Some(e), _) => Err(e),
            (None, Some(ok)) => Ok(ok),
            (None, None) => Err(protocol(addr, "no statement in the prepare reply")),
        }
    }

    /// Queues COM_STMT_CLOSE (the server sends no reply).
    pub fn close_statement(out: &mut Vec<u8>, id: u32) {
        let w = wire::PacketWriter::begin(out, 0);
        out.push(command::STMT_CLOSE);
        out.extend_from_slice(&id.to_le_bytes());
        w.finish(out);
    }
}

/// Switches to TLS after the greeting when wanted and offered: an SSLRequest (the first 32
/// bytes of a HandshakeResponse) as packet 1, the handshake, then the response as packet 2.
async fn start_tls(
    socket: Socket,
    login: &ServerLogin,
    greeting: &Greeting,
    wanted: &mut u32,
) -> Result<(Socket, u8), ConnectError> {
    let addr = login.addr.as_str();
    // A Unix-domain socket stays on the host: no TLS (validation refuses modes that need it).
    let Socket::Plain(mut tcp) = socket else {
        return Ok((socket, 1));
    };
    if !login.access.tls.wanted() || greeting.caps & caps::SSL == 0 {
        if login.access.tls.required() {
            return Err(protocol(
                addr,
                "the server does not offer TLS (server_tls requires it)",
            ));
        }
        return Ok((Socket::Plain(tcp), 1));
    }
    *wanted |= caps::SSL;
    let mut payload = Vec::with_capacity(32);
    payload.extend_from_slice(&wanted.to_le_bytes());
    payload.extend_from_slice(&(1u32 << 30).to_le_bytes());
    payload.push(login.collation);
    payload.extend_from_slice(&[0; 23]);
    let mut out = Vec::with_capacity(36);
    wire::write_packet(&mut out, 1, &payload);
    tcp.write_all(&out)
        .await
        .map_err(|e| ConnectError::from_io(addr, "", &e))?;
    let socket = login
        .access
        .tls
        .connect(addr, tcp)
        .await
        .map_err(|e| ConnectError::from_io(addr, "TLS: ", &e))?;
    Ok((socket, 2))
}

/// The auth response for `plugin` and salt `nonce`.
pub fn scramble(keys: &MysqlKeys, plugin: &str, nonce: &[u8]) -> Vec<u8> {
    let nonce = &nonce[..nonce.len().min(20)];
    match plugin {
        SHA2 => keys.sha2(nonce),
        // The caller checked that the connection is TLS.
        CLEAR => {
            let mut password = keys.password().as_bytes().to_vec();
            password.push(0);
            password
        }
        _ => keys.native(nonce),
    }
}

fn text_row(payload: &[u8]) -> Result<Vec<Option<String>>, wire::WireError> {
    let mut r = Reader::new(payload, "text row");
    let mut row = Vec::new();
    while !r.is_empty() {
        if r.peek() == Some(0xfb) {
            r.u8()?;
            row.push(None);
        } else {
            row.push(Some(
                String::from_utf8_lossy(r.lenenc_bytes()?).into_owned(),
            ));
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_attrs_name_the_program_as_length_prefixed_pairs() {
        let attrs = connect_attrs(POOL_PROGRAM);
        let mut pairs = Vec::new();
        let mut rest = &attrs[..];
        while let Some((&len, tail)) = rest.split_first() {
            let (s, tail) = tail.split_at(usize::from(len));
            pairs.push(String::from_utf8_lossy(s).into_owned());
            rest = tail;
        }
        assert_eq!(
            pairs,
            ["_client_name", "sluice", "program_name", "sluice pool"]
        );
    }

    #[test]
    fn a_server_going_away_refuses_only_the_login_it_answered() {
        let rejected = |code: u16| {
            let mut packet = Vec::new();
            wire::write_err(&mut packet, 2, code, "HY000", "no");
            match refused("db:3306", &packet[4..]) {
                ConnectError::Refused { rejected, .. } => rejected,
                e => panic!("{e}"),
            }
        };
        assert_eq!(rejected(1053), Rejected::NotReady, "shutdown in progress");
        assert_eq!(rejected(3032), Rejected::NotReady, "offline mode");
        assert_eq!(rejected(1045), Rejected::Credentials);
        assert_eq!(rejected(1040), Rejected::TooManyConnections);
    }
}
