//! Fuzz target `pg_relay`: the Postgres relay's session state machine, whole. Two client
//! sessions share a pool of one or two scripted server connections over the in-memory seam;
//! the input is a script of client requests, server answers (a small honest server, or
//! made-up messages), closes and pauses. Checked after every step and at the end: no session
//! sees another's rows, a connection inside one session's transaction (or with its request
//! unanswered) gets no other session's request, output stays bounded by input, every client
//! request gets an answer or a clear error, every session ends once its client leaves, and
//! every server connection comes back to the pool.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use tokio::time::Duration;

use super::script::{self, Script, markers_in, unmarked};
use crate::pool::scripted::Peer;
use crate::postgres::relay::rig::Rig;
use crate::postgres::wire::{self, backend, frontend, status};

const SESSIONS: usize = 2;
/// What sluice may add per message it handles (its own queries, a re-prepared statement's
/// name, an error text).
const SLACK_PER_MESSAGE: usize = 4096;

pub fn pg_relay(data: &[u8]) {
    script::play(run(Script::new(data)));
}

async fn run(mut script: Script<'_>) {
    let max = 1 + usize::from(script.byte().unwrap_or(0) % 2);
    let mut rig = Rig::new(max);
    let mut world = World {
        clients: Vec::new(),
        servers: Vec::new(),
        tasks: Vec::new(),
        max,
    };
    for s in 0..SESSIONS {
        let (peer, task) = rig.session_numbered(s as u64 + 1);
        world.clients.push(Client::new(s, peer));
        world.tasks.push(task);
    }
    while let Some(op) = script.byte() {
        let Some(pause) = world.step(op, &mut script) else {
            break;
        };
        script::settle(pause).await;
        world.observe(&mut rig);
    }
    world.end(&mut rig).await;
}

struct World {
    clients: Vec<Client>,
    servers: Vec<Server>,
    tasks: Vec<tokio::task::JoinHandle<crate::postgres::relay::Session>>,
    max: usize,
}

impl World {
    /// Plays one step of the script; returns how long to let things run after it.
    fn step(&mut self, op: u8, script: &mut Script<'_>) -> Option<Duration> {
        script::trace("step", b'#', &[op]);
        match op % 16 {
            0..=5 | 13..=15 => {
                let s = usize::from(op) % SESSIONS;
                let out = request(s, script)?;
                self.clients[s].send(&out);
            }
            6 => {
                let k = script.byte()?;
                self.server(k)?.answer(1);
            }
            7 => {
                let k = script.byte()?;
                self.server(k)?.answer(usize::MAX);
            }
            8 => {
                let k = script.byte()?;
                let tag = script.byte()?;
                let body = unmarked(script.bytes()?);
                let mut out = BytesMut::new();
                frame(&mut out, tag, &body);
                let server = self.server(k)?;
                server.honest = false;
                server.send(&out);
            }
            9 => {
                let k = script.byte()?;
                let kind = script.byte()?;
                let mut out = BytesMut::new();
                match kind % 3 {
                    0 => wire::notice_response(&mut out, "01000", "a notice"),
                    1 => wire::parameter_status(&mut out, "TimeZone", "UTC"),
                    _ => notification(&mut out),
                }
                self.server(k)?.send(&out);
            }
            10 => {
                let k = script.byte()?;
                self.server(k)?.peer = None;
            }
            11 => return script.pause(),
            _ => {
                let s = usize::from(script.byte()?) % SESSIONS;
                self.clients[s].peer = None;
            }
        }
        Some(Duration::from_millis(1))
    }

    fn server(&mut self, k: u8) -> Option<&mut Server> {
        let open: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].peer.is_some())
            .collect();
        let at = *open.get(usize::from(k) % open.len().max(1))?;
        Some(&mut self.servers[at])
    }

    /// Reads what sluice wrote to every side, picks up new server connections, checks.
    fn observe(&mut self, rig: &mut Rig) {
        while let Some(peer) = rig.servers.try_next() {
            self.servers.push(Server::new(self.servers.len(), peer));
        }
        for server in &mut self.servers {
            server.read();
        }
        for client in &mut self.clients {
            client.read();
        }
        let (to_clients, to_servers) = self.totals();
        let (from_clients, from_servers) = (
            self.clients.iter().map(|c| c.sent).sum::<usize>(),
            self.servers.iter().map(|s| s.sent).sum::<usize>(),
        );
        let messages: usize = self.clients.iter().map(|c| c.requests).sum::<usize>()
            + self.servers.iter().map(|s| s.messages).sum::<usize>()
            + 8;
        assert!(
            to_clients <= from_servers + messages * SLACK_PER_MESSAGE,
            "unbounded output to clients: {to_clients} bytes for {from_servers}"
        );
        assert!(
            to_servers <= from_clients * (self.max + 1) + messages * SLACK_PER_MESSAGE,
            "unbounded output to servers: {to_servers} bytes for {from_clients}"
        );
        let stats = rig.instance.stats();
        assert!(
            stats.open <= self.max,
            "{} connections over a cap of {}",
            stats.open,
            self.max
        );
    }

    fn totals(&self) -> (usize, usize) {
        (
            self.clients.iter().map(|c| c.got).sum(),
            self.servers.iter().map(|s| s.got).sum(),
        )
    }

    /// Honest servers from here on: each client still there asks once more and must get an
    /// answer or an error; then every client leaves, and every session must end and every
    /// connection come back.
    async fn end(mut self, rig: &mut Rig) {
        self.serve_until_quiet(rig).await;
        for client in &mut self.clients {
            client.probe();
        }
        self.serve_until_quiet(rig).await;
        for client in &self.clients {
            assert!(
                client.peer.is_none() || client.answered,
                "session {} got no answer to its request",
                client.id
            );
        }
        for client in &mut self.clients {
            client.peer = None;
        }
        self.serve_until_quiet(rig).await;
        for (s, task) in self.tasks.iter().enumerate() {
            assert!(task.is_finished(), "session {s} outlived its client");
        }
        let stats = rig.instance.stats();
        assert_eq!(
            stats.open, stats.idle,
            "a server connection never came back"
        );
    }

    /// Honest servers answer everything until nothing moves, even after the relay's timers
    /// (borrow, reset) had time to fire.
    async fn serve_until_quiet(&mut self, rig: &mut Rig) {
        const TIMERS: Duration = Duration::from_secs(6);
        for _ in 0..200 {
            let before = self.moved();
            for server in &mut self.servers {
                server.answer(usize::MAX);
            }
            script::settle(Duration::from_millis(1)).await;
            self.observe(rig);
            if self.moved() == before {
                script::settle(TIMERS).await;
                self.observe(rig);
                if self.moved() == before {
                    return;
                }
            }
        }
    }

    /// Bytes moved so far, and sides closed: anything that changes is progress.
    fn moved(&self) -> (usize, usize, usize) {
        let (to_clients, to_servers) = self.totals();
        let open = self.clients.iter().filter(|c| c.peer.is_some()).count()
            + self.servers.iter().filter(|s| s.peer.is_some()).count()
            + self.servers.len();
        (to_clients, to_servers, open)
    }
}

/// A client request the script picks, marked with its session.
fn request(s: usize, script: &mut Script<'_>) -> Option<BytesMut> {
    let m = script::marker(s);
    let mut out = BytesMut::new();
    let simple = |out: &mut BytesMut, sql: &str| wire::query(out, &format!("{sql} /*{m}*/"));
    match script.byte()? % 16 {
        0 => wire::query(&mut out, &format!("SELECT '{m}'")),
        1 => simple(&mut out, "BEGIN"),
        2 => simple(&mut out, "COMMIT"),
        3 => simple(&mut out, "ROLLBACK"),
        4 => simple(&mut out, &format!("SET application_name = 'a{s}'")),
        5 => simple(&mut out, "SELECT 'FAIL'"),
        6 => simple(&mut out, "SELECT pg_advisory_lock(1)"),
        7 => simple(&mut out, "DISCARD ALL"),
        8 => {
            parse(&mut out, "", "SELECT $1::text");
            bind(&mut out, "", &m);
            frame(&mut out, frontend::DESCRIBE, b"P\0");
            execute(&mut out);
        }
        9 => parse(&mut out, statement(script)?, "SELECT $1::text"),
        10 => {
            bind(&mut out, statement(script)?, &m);
            execute(&mut out);
        }
        11 => wire::sync(&mut out),
        12 => frame(&mut out, frontend::FLUSH, &[]),
        13 => {
            parse(&mut out, "", "SELECT 'FAIL'");
            bind(&mut out, "", &m);
            execute(&mut out);
        }
        14 => {
            let tag = script.byte()?;
            frame(&mut out, tag, &unmarked(script.bytes()?));
        }
        _ => wire::terminate(&mut out),
    }
    Some(out)
}

fn statement(script: &mut Script<'_>) -> Option<&'static str> {
    Some(["a", "b"][usize::from(script.byte()? % 2)])
}

fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    let mut body = Vec::new();
    for s in [name, sql] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[0, 0]);
    frame(out, frontend::PARSE, &body);
}

fn bind(out: &mut BytesMut, statement: &str, param: &str) {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_slice(statement.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    body.put_i16(1);
    body.put_i32(param.len() as i32);
    body.put_slice(param.as_bytes());
    body.put_i16(0);
    frame(out, frontend::BIND, &body);
}

fn execute(out: &mut BytesMut) {
    frame(out, frontend::EXECUTE, &[0, 0, 0, 0, 0]);
    wire::sync(out);
}

fn frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn notification(out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_i32(99);
    body.put_slice(b"ch\0payload\0");
    frame(out, backend::NOTIFICATION_RESPONSE, &body);
}

fn data_row(out: &mut BytesMut, value: &[u8]) {
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(value.len() as i32);
    body.put_slice(value);
    frame(out, backend::DATA_ROW, &body);
}

/// Frames read whole off `buf`; sluice must never write a malformed one.
fn frames(buf: &mut BytesMut, to: &str) -> Vec<(u8, BytesMut)> {
    let mut out = Vec::new();
    loop {
        match wire::next_frame(buf, usize::MAX) {
            Ok(Some(f)) => {
                let mut whole = buf.split_to(f.len);
                out.push((f.tag, whole.split_off(wire::FRAME_HEADER_LEN)));
            }
            Ok(None) => return out,
            Err(e) => panic!("sluice wrote a malformed frame to a {to}: {e}"),
        }
    }
}

/// Reads what waits on `peer`: `false` once the other end closed.
fn drain(peer: &mut Peer) -> bool {
    loop {
        match peer.sock.read_some(&mut peer.buf, 1 << 16) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

struct Client {
    id: usize,
    peer: Option<Peer>,
    sent: usize,
    got: usize,
    requests: usize,
    /// Whether a ReadyForQuery or ErrorResponse came after the last probe.
    answered: bool,
}

impl Client {
    fn new(id: usize, peer: Peer) -> Self {
        Self {
            id,
            peer: Some(peer),
            sent: 0,
            got: 0,
            requests: 0,
            answered: false,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        for (tag, body) in frames(&mut BytesMut::from(bytes), "harness") {
            script::trace(&format!("client {} sent", self.id), tag, &body);
        }
        if let Some(peer) = &mut self.peer {
            self.sent += bytes.len();
            self.requests += 1;
            if peer.sock.write(bytes).is_err() {
                self.peer = None;
            }
        }
    }

    /// Ends whatever extended batch is open and asks a simple query.
    fn probe(&mut self) {
        let mut out = BytesMut::new();
        wire::sync(&mut out);
        wire::query(&mut out, &format!("SELECT '{}'", script::marker(self.id)));
        self.send(&out);
        self.answered = false;
    }

    fn read(&mut self) {
        let Some(peer) = &mut self.peer else { return };
        let before = peer.buf.len();
        let open = drain(peer);
        self.got += peer.buf.len() - before;
        for (tag, body) in frames(&mut peer.buf, "client") {
            script::trace(&format!("client {} got", self.id), tag, &body);
            for s in markers_in(&body, SESSIONS) {
                assert_eq!(s, self.id, "session {} got session {s}'s row", self.id);
            }
            if tag == backend::READY_FOR_QUERY || tag == backend::ERROR_RESPONSE {
                self.answered = true;
            }
        }
        if !open {
            self.peer = None;
        }
    }
}

/// A server connection played by the harness: a small honest Postgres that answers each
/// request in order (rows echo the asking session's marker), unless the script makes it lie.
struct Server {
    index: usize,
    peer: Option<Peer>,
    pending: VecDeque<(u8, BytesMut)>,
    status: u8,
    /// After an error in an extended batch, everything up to Sync is skipped.
    skipping: bool,
    /// The session whose batch (the requests since the last ReadyForQuery) this is.
    asker: Option<usize>,
    /// A ReadyForQuery went out: the next request starts a batch.
    batch_done: bool,
    /// The portal a Bind made, with the session its parameter names: an Execute's rows.
    portal: Option<Option<usize>>,
    /// The session whose transaction is open on this connection.
    owner: Option<usize>,
    /// Only harness-made messages so far: its view of the conversation is sluice's.
    honest: bool,
    sent: usize,
    got: usize,
    messages: usize,
}

impl Server {
    fn new(index: usize, peer: Peer) -> Self {
        Self {
            index,
            peer: Some(peer),
            pending: VecDeque::new(),
            status: status::IDLE,
            skipping: false,
            asker: None,
            batch_done: true,
            portal: None,
            owner: None,
            honest: true,
            sent: 0,
            got: 0,
            messages: 0,
        }
    }

    fn read(&mut self) {
        let Some(peer) = &mut self.peer else { return };
        let before = peer.buf.len();
        let open = drain(peer);
        self.got += peer.buf.len() - before;
        for (tag, body) in frames(&mut peer.buf, "server") {
            script::trace(&format!("server {} got", self.index), tag, &body);
            let asker = markers_in(&body, SESSIONS).last();
            if let (Some(m), true) = (asker, self.honest) {
                if let Some(o) = self.owner.filter(|&o| o != m) {
                    panic!("session {m}'s request reached session {o}'s transaction");
                }
                let waiting = self
                    .pending
                    .iter()
                    .flat_map(|(_, b)| markers_in(b, SESSIONS));
                if let Some(o) = waiting.filter(|&o| o != m).last() {
                    panic!("session {m}'s request reached a connection still serving {o}");
                }
            }
            self.pending.push_back((tag, body));
        }
        if !open {
            self.peer = None;
        }
    }

    /// Sends messages the script made up: a ReadyForQuery among them ends the oldest request
    /// that waits for one, as sluice reads it.
    fn send(&mut self, bytes: &[u8]) {
        for (tag, _) in frames(&mut BytesMut::from(bytes), "harness") {
            if tag == backend::READY_FOR_QUERY
                && let Some(at) = self.pending.iter().position(|(t, _)| ends_request(*t))
            {
                self.pending.drain(..=at);
            }
        }
        self.write(bytes);
    }

    fn write(&mut self, bytes: &[u8]) {
        let Some(peer) = &mut self.peer else { return };
        self.sent += bytes.len();
        self.messages += 1;
        for (tag, body) in frames(&mut BytesMut::from(bytes), "harness") {
            script::trace(&format!("server {} sent", self.index), tag, &body);
            if tag == backend::READY_FOR_QUERY {
                self.status = body.first().copied().unwrap_or(status::IDLE);
                self.owner = match self.status {
                    status::IDLE => None,
                    _ => self.owner.or(self.asker),
                };
                self.batch_done = true;
                self.portal = None;
            }
        }
        if peer.sock.write(bytes).is_err() {
            self.peer = None;
        }
    }

    /// Answers up to `n` of the requests that wait, as Postgres would.
    fn answer(&mut self, n: usize) {
        for _ in 0..n {
            let Some((tag, body)) = self.pending.pop_front() else {
                return;
            };
            let m = markers_in(&body, SESSIONS).last();
            if self.batch_done || m.is_some() {
                self.asker = m;
                self.batch_done = false;
            }
            let mut out = BytesMut::new();
            self.reply(tag, &body, &mut out);
            self.write(&out);
            if self.peer.is_none() {
                return;
            }
        }
    }

    fn reply(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) {
        let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
        let failed = |out: &mut BytesMut, status: &mut u8| {
            wire::error_response(out, "ERROR", "42000", "it failed");
            if *status == status::IN_TRANSACTION {
                *status = status::FAILED;
            }
        };
        if self.skipping && tag != frontend::SYNC {
            return;
        }
        match tag {
            frontend::QUERY => {
                let word = text.split_whitespace().next().unwrap_or("").to_uppercase();
                let mut status = self.status;
                if status == status::FAILED && word != "COMMIT" && word != "ROLLBACK" {
                    wire::error_response(out, "ERROR", "25P02", "transaction is aborted");
                } else if text.contains("FAIL") {
                    failed(out, &mut status);
                } else {
                    match word.as_str() {
                        "BEGIN" => status = status::IN_TRANSACTION,
                        "COMMIT" | "ROLLBACK" => status = status::IDLE,
                        "SELECT" if text.contains('~') => data_row(out, body),
                        _ => {}
                    }
                    wire::command_complete(out, word.as_bytes());
                }
                wire::ready_for_query(out, status);
            }
            frontend::PARSE if text.contains("FAIL") => {
                failed(out, &mut self.status);
                self.skipping = true;
            }
            frontend::PARSE => wire::parse_complete(out),
            frontend::BIND => {
                self.portal = Some(markers_in(body, SESSIONS).last());
                frame(out, backend::BIND_COMPLETE, &[]);
            }
            frontend::DESCRIBE => frame(out, backend::NO_DATA, &[]),
            frontend::EXECUTE => match self.portal {
                Some(bound) => {
                    let m = bound.map(script::marker).unwrap_or_default();
                    data_row(out, m.as_bytes());
                    wire::command_complete(out, b"SELECT 1");
                }
                None => {
                    failed(out, &mut self.status);
                    self.skipping = true;
                }
            },
            frontend::CLOSE => wire::close_complete(out),
            frontend::SYNC => {
                self.skipping = false;
                wire::ready_for_query(out, self.status);
            }
            frontend::FLUSH | frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL => {}
            frontend::TERMINATE => self.peer = None,
            _ => {
                wire::error_response(out, "FATAL", "08P01", "invalid frontend message type");
                self.pending.clear();
                self.write(out);
                out.clear();
                self.peer = None;
            }
        }
    }
}

/// Requests a ReadyForQuery answers.
fn ends_request(tag: u8) -> bool {
    tag == frontend::QUERY || tag == frontend::SYNC
}
