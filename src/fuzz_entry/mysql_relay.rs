//! Fuzz target `mysql_relay`: the MySQL relay's session state machine, whole, in the world of
//! `world.rs`. Its honest server is a small MariaDB: it answers each command in order with
//! the sequence ids a server uses (rows echo the asking session's marker) and tracks the
//! transaction its status flags report.

use bytes::BytesMut;
use tokio::task::AbortHandle;

use super::script::{self, Script, unmarked};
use super::world::{self, Engine, Ledger, Side};
use crate::mysql::relay::rig::Rig;
use crate::mysql::wire::{self, OkPacket, command, status};
use crate::pool::InstanceStats;
use crate::pool::scripted::Peer;

pub fn mysql_relay(data: &[u8]) {
    world::run::<My>(data);
}

struct My;

impl Engine for My {
    type Rig = Rig;
    type Server = MyServer;

    fn rig(max: usize) -> Rig {
        Rig::new(max)
    }

    fn session(rig: &Rig, s: usize) -> (Peer, AbortHandle) {
        let (peer, task) = rig.session_numbered(s as u32 + 1);
        (peer, task.abort_handle())
    }

    fn next_server(rig: &mut Rig) -> Option<Peer> {
        rig.servers.try_next()
    }

    fn stats(rig: &Rig) -> InstanceStats {
        rig.instance.stats()
    }

    fn request(s: usize, script: &mut Script<'_>) -> Option<Vec<u8>> {
        let m = script::marker(s);
        let query = |sql: &str| [&[command::QUERY], format!("{sql} /*{m}*/").as_bytes()].concat();
        let payload = match script.byte()? % 16 {
            0 => [&[command::QUERY], format!("SELECT '{m}'").as_bytes()].concat(),
            1 => query("BEGIN"),
            2 => query("COMMIT"),
            3 => query("ROLLBACK"),
            4 => query("SET SESSION sql_mode = 'ANSI'"),
            5 => query("SELECT 'FAIL'"),
            6 => query("LOCK TABLES t WRITE"),
            7 => query("UNLOCK TABLES"),
            8 => vec![command::PING],
            9 => [&[command::STMT_PREPARE][..], b"SELECT 1"].concat(),
            10 => {
                let mut p = vec![command::STMT_EXECUTE];
                p.extend_from_slice(&1u32.to_le_bytes());
                p.extend_from_slice(&[0, 1, 0, 0, 0]);
                p
            }
            11 => [&[command::INIT_DB][..], b"app"].concat(),
            12 => vec![command::RESET_CONNECTION],
            13 => {
                let first = script.byte()?;
                [&[first][..], &unmarked(script.bytes()?)].concat()
            }
            14 => query("START TRANSACTION READ ONLY"),
            _ => vec![command::QUIT],
        };
        let mut out = Vec::new();
        wire::write_packet(&mut out, 0, &payload);
        Some(out)
    }

    fn probe(s: usize) -> Vec<u8> {
        let sql = format!("SELECT '{}'", script::marker(s));
        let mut out = Vec::new();
        wire::write_packet(&mut out, 0, &[&[command::QUERY], sql.as_bytes()].concat());
        out
    }

    fn messages(buf: &mut BytesMut, _: &str) -> Vec<(u8, BytesMut)> {
        let mut out = Vec::new();
        while let Some(p) = wire::next_packet(buf).filter(|p| buf.len() >= p.len) {
            let payload = buf.split_to(p.len).split_off(wire::HEADER_LEN);
            out.push((payload.first().copied().unwrap_or(0), payload));
        }
        out
    }

    fn is_answer(first: u8, _: &[u8]) -> bool {
        matches!(first, 0x00 | 0xfe | 0xff)
    }
}

/// A server connection played by the harness: a small honest MariaDB (DEPRECATE_EOF, as the
/// rig's connections are), unless the script makes it lie.
struct MyServer {
    side: Side,
    ledger: Ledger,
    in_transaction: bool,
    /// What COM_INIT_DB selected: DATABASE() reads it.
    schema: Option<Vec<u8>>,
}

impl world::Server for MyServer {
    fn new(side: Side) -> Self {
        Self {
            side,
            ledger: Ledger::default(),
            in_transaction: false,
            schema: None,
        }
    }

    fn side(&mut self) -> &mut Side {
        &mut self.side
    }

    fn ledger(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    fn answer(&mut self, n: usize) {
        for _ in 0..n {
            let Some((first, body)) = self.ledger.next() else {
                return;
            };
            let mut reply = Reply::default();
            self.reply(first, &body, &mut reply);
            self.write(&reply.out);
            if reply.ends {
                self.ledger.batch_ended(self.in_transaction);
            }
            if self.side.peer.is_none() {
                return;
            }
        }
    }

    fn made_up(&mut self, script: &mut Script<'_>) -> Option<()> {
        let seq = script.byte()?;
        let first = script.byte()?;
        let payload = [&[first][..], &unmarked(script.bytes()?)].concat();
        let mut out = Vec::new();
        wire::write_packet(&mut out, seq, &payload);
        self.ledger.honest = false;
        // An OK or ERR ends the oldest command that waits for a reply, as sluice reads it.
        if matches!(first, 0x00 | 0xff) {
            let pending = &mut self.ledger.pending;
            if let Some(at) = pending.iter().position(|(c, _)| expects_reply(*c)) {
                pending.remove(at);
            }
        }
        self.write(&out);
        Some(())
    }

    /// A server's parting word: ERR 4031 (disconnected for inactivity), then it closes.
    fn unasked(&mut self, _: u8) {
        let mut out = Vec::new();
        wire::write_err(&mut out, 0, 4031, "HY000", "disconnected by the server");
        self.write(&out);
        self.side.peer = None;
    }
}

/// What the server answers to one command.
#[derive(Default)]
struct Reply {
    out: Vec<u8>,
    seq: u8,
    /// The reply is complete (a command with no reply, like COM_STMT_CLOSE, is not).
    ends: bool,
}

impl Reply {
    fn packet(&mut self, payload: &[u8]) {
        self.seq += 1;
        wire::write_packet(&mut self.out, self.seq, payload);
    }
}

impl MyServer {
    fn write(&mut self, bytes: &[u8]) {
        if self.side.tracing() {
            for (first, body) in My::messages(&mut BytesMut::from(bytes), "harness") {
                self.side.trace("server", "sent", first, &body);
            }
        }
        self.side.write(bytes);
    }

    fn status(&self) -> u16 {
        match self.in_transaction {
            true => status::AUTOCOMMIT | status::IN_TRANS,
            false => status::AUTOCOMMIT,
        }
    }

    fn ok(&mut self, reply: &mut Reply) {
        let ok = OkPacket {
            status: self.status(),
            ..OkPacket::default()
        };
        reply.seq += 1;
        wire::write_ok(&mut reply.out, reply.seq, &ok);
        reply.ends = true;
    }

    fn err(reply: &mut Reply, code: u16, message: &str) {
        reply.seq += 1;
        wire::write_err(&mut reply.out, reply.seq, code, "42000", message);
        reply.ends = true;
    }

    fn reply(&mut self, first: u8, body: &[u8], reply: &mut Reply) {
        match first {
            command::QUERY => self.query(&String::from_utf8_lossy(&body[1..]), reply),
            command::RESET_CONNECTION => {
                self.in_transaction = false;
                self.ok(reply);
            }
            command::INIT_DB => {
                self.schema = Some(body[1..].to_vec());
                self.ok(reply);
            }
            command::PING | command::STMT_RESET | command::SET_OPTION | command::STMT_EXECUTE => {
                self.ok(reply)
            }
            command::STMT_PREPARE => {
                // Statement 1: no columns, no parameters, so nothing follows.
                let mut p = vec![0x00];
                p.extend_from_slice(&1u32.to_le_bytes());
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
                reply.packet(&p);
                reply.ends = true;
            }
            command::STMT_CLOSE | command::STMT_SEND_LONG_DATA => {}
            command::QUIT => self.side.peer = None,
            _ => Self::err(reply, 1047, "Unknown command"),
        }
    }

    fn query(&mut self, sql: &str, reply: &mut Reply) {
        let word = sql.split_whitespace().next().unwrap_or("").to_uppercase();
        if sql.contains("FAIL") {
            return Self::err(reply, 1064, "it failed");
        }
        match word.as_str() {
            "BEGIN" | "START" => self.in_transaction = true,
            "COMMIT" | "ROLLBACK" => self.in_transaction = false,
            "SELECT" => return self.rows(sql, reply),
            _ => {}
        }
        self.ok(reply);
    }

    /// One row: the query's text under a marked SELECT; under sluice's own, `1` per column
    /// and the schema (or NULL) for DATABASE().
    fn rows(&mut self, sql: &str, reply: &mut Reply) {
        let list = sql.split(" FROM ").next().unwrap_or(sql);
        let items: Vec<&str> = match sql.contains('~') {
            true => vec![sql],
            false => list.split(',').collect(),
        };
        let columns = items.len();
        reply.packet(&[columns as u8]);
        for _ in 0..columns {
            let mut def = Vec::new();
            for s in ["def", "", "", "", "c", ""] {
                wire::put_lenenc_str(&mut def, s.as_bytes());
            }
            def.extend_from_slice(&[0x0c, 33, 0, 0, 1, 0, 0, 253, 0, 0, 0, 0, 0]);
            reply.packet(&def);
        }
        let mut row = Vec::new();
        for item in items {
            match item {
                _ if sql.contains('~') => wire::put_lenenc_str(&mut row, sql.as_bytes()),
                _ if item.contains("DATABASE()") => match &self.schema {
                    Some(schema) => wire::put_lenenc_str(&mut row, schema),
                    None => row.push(0xfb),
                },
                _ => wire::put_lenenc_str(&mut row, b"1"),
            }
        }
        reply.packet(&row);
        let mut end = vec![0xfe, 0, 0];
        end.extend_from_slice(&self.status().to_le_bytes());
        end.extend_from_slice(&[0, 0]);
        reply.packet(&end);
        reply.ends = true;
    }
}

/// Commands a server answers (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA and COM_QUIT get none).
fn expects_reply(command: u8) -> bool {
    !matches!(
        command,
        command::STMT_CLOSE | command::STMT_SEND_LONG_DATA | command::QUIT
    )
}
