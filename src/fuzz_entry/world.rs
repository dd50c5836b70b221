//! The relay fuzz targets' world, whatever the engine: two client sessions and the server
//! connections their pool opens, all in memory, driven by a script of client requests,
//! server answers (a small honest server, or made-up messages), closes and pauses. Checked
//! after every step and at the end: no session sees another's rows, output stays bounded by
//! input, the pool stays under its cap, every client request gets an answer or a clear error,
//! every session ends once its client leaves, and every server connection comes back. The
//! engine's honest server checks the rest as it reads: a connection inside one session's
//! transaction, or with its request unanswered, gets no other session's request.

use bytes::BytesMut;
use tokio::task::AbortHandle;
use tokio::time::Duration;

use super::script::{self, Script, drain, markers_in};
use crate::pool::InstanceStats;
use crate::pool::scripted::Peer;

pub const SESSIONS: usize = 2;
/// What sluice may add per message it handles (its own queries, a re-prepared statement's
/// name, an error text).
const SLACK_PER_MESSAGE: usize = 4096;

/// What an engine brings: its rig, its messages, and its honest server.
pub trait Engine {
    type Rig;
    type Server: Server;
    fn rig(max: usize) -> Self::Rig;
    /// Session `s`'s client end and its task.
    fn session(rig: &Self::Rig, s: usize) -> (Peer, AbortHandle);
    fn next_server(rig: &mut Self::Rig) -> Option<Peer>;
    fn stats(rig: &Self::Rig) -> InstanceStats;
    /// A request session `s` makes, as the script picks it.
    fn request(s: usize, script: &mut Script<'_>) -> Option<Vec<u8>>;
    /// A request that ends whatever the session left open and asks a simple query.
    fn probe(s: usize) -> Vec<u8>;
    /// The whole messages at the front of `buf` (first byte, body); sluice must never write
    /// a malformed one `to` a side.
    fn messages(buf: &mut BytesMut, to: &str) -> Vec<(u8, BytesMut)>;
    /// A message that answers a request: ReadyForQuery, OK, ERR, EOF, an error.
    fn is_answer(first: u8, body: &[u8]) -> bool;
}

/// A server connection played by the harness.
pub trait Server {
    fn new(side: Side) -> Self;
    fn side(&mut self) -> &mut Side;
    /// What it was asked and whose it is: the world files each request sluice sends there.
    fn ledger(&mut self) -> &mut Ledger;
    /// Answers up to `n` of the requests that wait.
    fn answer(&mut self, n: usize);
    /// Sends a message the script makes up; the server is no longer honest.
    fn made_up(&mut self, script: &mut Script<'_>) -> Option<()>;
    /// Sends an honest message nobody asked for (a notice, a notification).
    fn unasked(&mut self, kind: u8);
}

/// One end the harness plays, with what crossed it.
#[derive(Debug)]
pub struct Side {
    pub index: usize,
    pub peer: Option<Peer>,
    /// Bytes the harness sent and got.
    pub sent: usize,
    pub got: usize,
    pub messages: usize,
    /// `SLUICE_FUZZ_TRACE`: print what crosses this end.
    trace: bool,
}

impl Side {
    fn new(index: usize, peer: Peer, trace: bool) -> Self {
        Self {
            index,
            peer: Some(peer),
            sent: 0,
            got: 0,
            messages: 0,
            trace,
        }
    }

    pub fn tracing(&self) -> bool {
        self.trace
    }

    /// Prints one message that crossed this end, when tracing: `side` is "client" or
    /// "server", `what` is "sent" or "got".
    pub fn trace(&self, side: &str, what: &str, first: u8, body: &[u8]) {
        if self.trace {
            let text = String::from_utf8_lossy(body);
            eprintln!("{side} {} {what}: {} {text:?}", self.index, first as char);
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let Some(peer) = &mut self.peer else { return };
        if bytes.is_empty() {
            return; // a command with no reply: no message to count toward the slack
        }
        self.sent += bytes.len();
        self.messages += 1;
        if peer.sock.write(bytes).is_err() {
            self.peer = None;
        }
    }

    /// Reads what waits: the whole messages, after counting the bytes.
    pub fn read<E: Engine>(&mut self, to: &str) -> Vec<(u8, BytesMut)> {
        let Some(peer) = &mut self.peer else {
            return Vec::new();
        };
        let before = peer.buf.len();
        let open = drain(peer);
        self.got += peer.buf.len() - before;
        let messages = E::messages(&mut peer.buf, to);
        if !open {
            self.peer = None;
        }
        messages
    }
}

pub fn run<E: Engine>(data: &[u8]) {
    script::play(async {
        let mut script = Script::new(data);
        let max = 1 + usize::from(script.byte().unwrap_or(0) % 2);
        let mut rig = E::rig(max);
        let mut world = World::<E> {
            clients: Vec::new(),
            servers: Vec::new(),
            tasks: Vec::new(),
            max,
            trace: script::tracing(),
        };
        for s in 0..SESSIONS {
            let (peer, task) = E::session(&rig, s);
            world
                .clients
                .push(Client::new(Side::new(s, peer, world.trace)));
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
    });
}

struct World<E: Engine> {
    clients: Vec<Client>,
    servers: Vec<E::Server>,
    tasks: Vec<AbortHandle>,
    max: usize,
    trace: bool,
}

impl<E: Engine> World<E> {
    /// Plays one step of the script; returns how long to let things run after it.
    fn step(&mut self, op: u8, script: &mut Script<'_>) -> Option<Duration> {
        if self.trace {
            eprintln!("step {op}");
        }
        match op % 16 {
            0..=5 | 13..=15 => {
                let s = usize::from(op) % SESSIONS;
                let out = E::request(s, script)?;
                self.clients[s].send::<E>(&out);
            }
            6 => self.server(script.byte()?)?.answer(1),
            7 => self.server(script.byte()?)?.answer(usize::MAX),
            8 => self.server(script.byte()?)?.made_up(script)?,
            9 => {
                let k = script.byte()?;
                let kind = script.byte()?;
                self.server(k)?.unasked(kind);
            }
            10 => self.server(script.byte()?)?.side().peer = None,
            11 => return script.pause(),
            _ => {
                let s = usize::from(script.byte()?) % SESSIONS;
                self.clients[s].side.peer = None;
            }
        }
        Some(Duration::from_millis(1))
    }

    /// The `k`th of the server connections still open.
    fn server(&mut self, k: u8) -> Option<&mut E::Server> {
        let mut open: Vec<&mut E::Server> = self
            .servers
            .iter_mut()
            .filter_map(|s| {
                let open = s.side().peer.is_some();
                open.then_some(s)
            })
            .collect();
        let n = open.len();
        (n > 0).then(|| open.swap_remove(usize::from(k) % n))
    }

    /// Reads what sluice wrote to every side, picks up new server connections, checks.
    fn observe(&mut self, rig: &mut E::Rig) {
        while let Some(peer) = E::next_server(rig) {
            let side = Side::new(self.servers.len(), peer, self.trace);
            self.servers.push(E::Server::new(side));
        }
        for server in &mut self.servers {
            for (first, body) in server.side().read::<E>("server") {
                server.side().trace("server", "got", first, &body);
                server.ledger().received(first, body);
            }
        }
        for client in &mut self.clients {
            client.read::<E>();
        }
        let (to_clients, to_servers) = self.totals();
        let from_clients: usize = self.clients.iter().map(|c| c.side.sent).sum();
        let mut from_servers = 0;
        let mut messages = 8;
        for server in &mut self.servers {
            from_servers += server.side().sent;
            messages += server.side().messages;
        }
        messages += self.clients.iter().map(|c| c.side.messages).sum::<usize>();
        assert!(
            to_clients <= from_servers + messages * SLACK_PER_MESSAGE,
            "unbounded output to clients: {to_clients} bytes for {from_servers}"
        );
        assert!(
            to_servers <= from_clients * (self.max + 1) + messages * SLACK_PER_MESSAGE,
            "unbounded output to servers: {to_servers} bytes for {from_clients}"
        );
        let stats = E::stats(rig);
        assert!(
            stats.open <= self.max,
            "{} connections over a cap of {}",
            stats.open,
            self.max
        );
    }

    /// Bytes sluice wrote to the clients and to the servers.
    fn totals(&mut self) -> (usize, usize) {
        let to_clients = self.clients.iter().map(|c| c.side.got).sum();
        let to_servers = self.servers.iter_mut().map(|s| s.side().got).sum();
        (to_clients, to_servers)
    }

    /// Honest servers from here on (the others close): each client still there asks once more
    /// and must get an answer or an error; then every client leaves, and every session must end
    /// and every connection come back.
    async fn end(mut self, rig: &mut E::Rig) {
        // A server that lied (more results announced, a copy begun) may leave its session
        // waiting: it goes away, and that session must then hear of it.
        for server in &mut self.servers {
            if !server.ledger().honest {
                server.side().peer = None;
            }
        }
        self.serve_until_quiet(rig).await;
        for client in &mut self.clients {
            client.probe::<E>();
        }
        self.serve_until_quiet(rig).await;
        for client in &self.clients {
            assert!(
                client.side.peer.is_none() || client.answered,
                "session {} got no answer to its request",
                client.side.index
            );
        }
        for client in &mut self.clients {
            client.side.peer = None;
        }
        self.serve_until_quiet(rig).await;
        for (s, task) in self.tasks.iter().enumerate() {
            assert!(task.is_finished(), "session {s} outlived its client");
        }
        let stats = E::stats(rig);
        assert_eq!(
            stats.open, stats.idle,
            "a server connection never came back"
        );
    }

    /// Honest servers answer everything until nothing moves, even after the relay's timers
    /// (borrow, reset) had time to fire. A MySQL session's commands go one round each, so the
    /// bound is above the longest script's; each round lets time pass, so a session waiting
    /// behind another's queue times out as it would.
    async fn serve_until_quiet(&mut self, rig: &mut E::Rig) {
        const TIMERS: Duration = Duration::from_secs(6);
        for _ in 0..4096 {
            let before = self.moved();
            for server in &mut self.servers {
                server.answer(usize::MAX);
            }
            script::settle(Duration::from_millis(10)).await;
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

    /// Bytes moved so far, and sides open: anything that changes is progress.
    fn moved(&mut self) -> (usize, usize, usize) {
        let (to_clients, to_servers) = self.totals();
        let mut open = self.servers.len();
        open += self
            .clients
            .iter()
            .filter(|c| c.side.peer.is_some())
            .count();
        for server in &mut self.servers {
            open += usize::from(server.side().peer.is_some());
        }
        (to_clients, to_servers, open)
    }
}

struct Client {
    side: Side,
    /// Whether an answer came after the last probe.
    answered: bool,
}

impl Client {
    fn new(side: Side) -> Self {
        Self {
            side,
            answered: false,
        }
    }

    fn send<E: Engine>(&mut self, bytes: &[u8]) {
        if self.side.tracing() {
            for (first, body) in E::messages(&mut BytesMut::from(bytes), "harness") {
                self.side.trace("client", "sent", first, &body);
            }
        }
        self.side.write(bytes);
    }

    fn probe<E: Engine>(&mut self) {
        self.send::<E>(&E::probe(self.side.index));
        self.answered = false;
    }

    fn read<E: Engine>(&mut self) {
        let id = self.side.index;
        for (first, body) in self.side.read::<E>("client") {
            self.side.trace("client", "got", first, &body);
            for s in markers_in(&body, SESSIONS) {
                assert_eq!(s, id, "session {id} got session {s}'s row");
            }
            if E::is_answer(first, &body) {
                self.answered = true;
            }
        }
    }
}

/// What an honest server knows of its conversation, the same for every engine: the requests
/// that wait, whose batch it is serving, whose transaction it is in. It checks each request
/// sluice sends against them.
#[derive(Debug)]
pub struct Ledger {
    pub pending: std::collections::VecDeque<(u8, BytesMut)>,
    /// The session whose batch (the requests since the last answer that ended one) this is.
    pub asker: Option<usize>,
    batch_done: bool,
    /// The session whose transaction is open on this connection.
    owner: Option<usize>,
    /// Only harness-made messages so far: its view of the conversation is sluice's. One that
    /// lied may also leave sluice waiting for what never comes, as a direct client would.
    pub honest: bool,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            pending: Default::default(),
            asker: None,
            batch_done: true,
            owner: None,
            honest: true,
        }
    }
}

impl Ledger {
    /// A request arrived: it must not be another session's while this connection serves a
    /// transaction or an unanswered request.
    pub fn received(&mut self, first: u8, body: BytesMut) {
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
        self.pending.push_back((first, body));
    }

    /// The next request to answer; the first of a batch says whose the batch is.
    pub fn next(&mut self) -> Option<(u8, BytesMut)> {
        let (first, body) = self.pending.pop_front()?;
        let m = markers_in(&body, SESSIONS).last();
        if self.batch_done || m.is_some() {
            self.asker = m;
            self.batch_done = false;
        }
        Some((first, body))
    }

    /// An answer that ends a batch went out, saying whether a transaction is open.
    pub fn batch_ended(&mut self, in_transaction: bool) {
        self.owner = if in_transaction {
            self.owner.or(self.asker)
        } else {
            None
        };
        self.batch_done = true;
    }
}
