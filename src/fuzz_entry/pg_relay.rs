//! Fuzz target `pg_relay`: the Postgres relay's session state machine, whole, in the world of
//! `world.rs`. Its honest server is a small Postgres: it answers each request in order (rows
//! echo the asking session's marker), skips to Sync after an error, and tracks the
//! transaction status it reports.

use bytes::{BufMut, BytesMut};
use tokio::task::AbortHandle;

use super::script::{self, Script, markers_in, unmarked};
use super::world::{self, Engine, Ledger, SESSIONS, Side};
use crate::pool::InstanceStats;
use crate::pool::scripted::Peer;
use crate::postgres::relay::rig::Rig;
use crate::postgres::wire::{self, backend, frontend, status};

pub fn pg_relay(data: &[u8]) {
    world::run::<Pg>(data);
}

struct Pg;

impl Engine for Pg {
    type Rig = Rig;
    type Server = PgServer;

    fn rig(max: usize) -> Rig {
        Rig::new(max)
    }

    fn session(rig: &Rig, s: usize) -> (Peer, AbortHandle) {
        let (peer, task) = rig.session_numbered(s as u64 + 1);
        (peer, task.abort_handle())
    }

    fn next_server(rig: &mut Rig) -> Option<Peer> {
        rig.servers.try_next()
    }

    fn stats(rig: &Rig) -> InstanceStats {
        rig.instance.stats()
    }

    fn request(s: usize, script: &mut Script<'_>) -> Option<Vec<u8>> {
        request(s, script).map(|b| b.to_vec())
    }

    fn probe(s: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        wire::sync(&mut out);
        wire::query(&mut out, &format!("SELECT '{}'", script::marker(s)));
        out.to_vec()
    }

    fn messages(buf: &mut BytesMut, to: &str) -> Vec<(u8, BytesMut)> {
        frames(buf, to)
    }

    fn is_answer(tag: u8, _: &[u8]) -> bool {
        tag == backend::READY_FOR_QUERY || tag == backend::ERROR_RESPONSE
    }
}

fn request(s: usize, script: &mut Script<'_>) -> Option<BytesMut> {
    let m = script::marker(s);
    let mut out = BytesMut::new();
    let simple = |out: &mut BytesMut, sql: &str| wire::query(out, &format!("{sql} /*{m}*/"));
    match script.byte()? % 20 {
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
        // Subscriptions and the savepoints that scope them (the listening connection cannot
        // be had here: LISTEN is answered without it).
        16 => simple(&mut out, &format!("LISTEN ch{}", script.byte()? % 2)),
        17 => simple(&mut out, "UNLISTEN *"),
        18 => simple(&mut out, "SAVEPOINT s"),
        19 => simple(&mut out, "ROLLBACK TO s"),
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

/// A server connection played by the harness: a small honest Postgres, unless the script
/// makes it lie.
struct PgServer {
    side: Side,
    ledger: Ledger,
    status: u8,
    /// After an error in an extended batch, everything up to Sync is skipped.
    skipping: bool,
    /// The portal a Bind made, with the session its parameter names: an Execute's rows.
    portal: Option<Option<usize>>,
}

impl world::Server for PgServer {
    fn new(side: Side) -> Self {
        Self {
            side,
            ledger: Ledger::default(),
            status: status::IDLE,
            skipping: false,
            portal: None,
        }
    }

    fn side(&mut self) -> &mut Side {
        &mut self.side
    }

    fn ledger(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// Answers up to `n` of the requests that wait, as Postgres would.
    fn answer(&mut self, n: usize) {
        for _ in 0..n {
            let Some((tag, body)) = self.ledger.next() else {
                return;
            };
            let mut out = BytesMut::new();
            self.reply(tag, &body, &mut out);
            self.write(&out);
            if self.side.peer.is_none() {
                return;
            }
        }
    }

    fn made_up(&mut self, script: &mut Script<'_>) -> Option<()> {
        let tag = script.byte()?;
        let mut out = BytesMut::new();
        frame(&mut out, tag, &unmarked(script.bytes()?));
        self.ledger.honest = false;
        // A ReadyForQuery ends the oldest request that waits for one, as sluice reads it.
        if tag == backend::READY_FOR_QUERY {
            let pending = &mut self.ledger.pending;
            if let Some(at) = pending.iter().position(|(t, _)| ends_request(*t)) {
                pending.drain(..=at);
            }
        }
        self.write(&out);
        Some(())
    }

    fn unasked(&mut self, kind: u8) {
        let mut out = BytesMut::new();
        match kind % 3 {
            0 => wire::notice_response(&mut out, "01000", "a notice"),
            1 => wire::parameter_status(&mut out, "TimeZone", "UTC"),
            _ => notification(&mut out),
        }
        self.write(&out);
    }
}

impl PgServer {
    fn write(&mut self, bytes: &[u8]) {
        for (tag, body) in frames(&mut BytesMut::from(bytes), "harness") {
            self.side.trace("server", "sent", tag, &body);
            if tag == backend::READY_FOR_QUERY {
                self.status = body.first().copied().unwrap_or(status::IDLE);
                self.ledger.batch_ended(self.status != status::IDLE);
                self.portal = None;
            }
        }
        self.side.write(bytes);
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
                let savepoint = word == "SAVEPOINT" || text.contains(" TO ");
                if status == status::FAILED && word != "COMMIT" && word != "ROLLBACK" {
                    wire::error_response(out, "ERROR", "25P02", "transaction is aborted");
                } else if text.contains("FAIL") || (savepoint && status == status::IDLE) {
                    failed(out, &mut status);
                } else {
                    match word.as_str() {
                        "BEGIN" => status = status::IN_TRANSACTION,
                        "ROLLBACK" if savepoint => status = status::IN_TRANSACTION,
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
            frontend::TERMINATE => self.side.peer = None,
            _ => {
                wire::error_response(out, "FATAL", "08P01", "invalid frontend message type");
                self.ledger.pending.clear();
                self.write(out);
                out.clear();
                self.side.peer = None;
            }
        }
    }
}

/// Requests a ReadyForQuery answers.
fn ends_request(tag: u8) -> bool {
    tag == frontend::QUERY || tag == frontend::SYNC
}
