//! Where a command's response ends: a state machine fed one packet at a time, which sees only
//! the packets that carry status (OK/ERR/EOF, counts) whole and lets rows stream past.

use super::packet::{HEADER_LEN, MAX_PAYLOAD, Reader, WireError};
use super::response::{OkPacket, is_terminator, parse_ok};

/// What shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR or result sets, possibly several.
    Query,
    /// COM_STMT_PREPARE: the statement OK, then parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to EOF.
    FieldList,
    /// COM_STMT_FETCH: rows up to EOF.
    Fetch,
    /// One packet: OK, ERR, EOF or a string (COM_PING, COM_INIT_DB, COM_STATISTICS, ...).
    Single,
}

/// The COM_STMT_PREPARE OK header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    /// Packets left to pass without looking: a prepared statement's definitions and EOFs.
    Skip(u64),
    /// `LOAD DATA LOCAL INFILE`: the server asked for the client's file and waits for it.
    Infile,
    FieldList,
    Done,
}

#[derive(Debug, Clone)]
pub struct Reply {
    kind: ReplyKind,
    phase: Phase,
    deprecate_eof: bool,
    /// The previous packet was full-size: this one continues it and is not classified.
    continuing: bool,
    /// The sequence id the next packet must carry (the command was 0); after a local file the
    /// server counts on from the client's last packet, so the next one sets it again.
    seq: u8,
    seq_from_next: bool,
    /// The status of the last OK/EOF seen (the response's final state once done).
    pub end: Option<OkPacket>,
    /// The error code, when the response ended with ERR.
    pub error: Option<u16>,
    pub prepared: Option<PrepareOk>,
    /// Result sets and OKs seen: more than one means a multi-statement or CALL.
    pub results: u32,
}

impl Reply {
    pub fn new(kind: ReplyKind, deprecate_eof: bool) -> Self {
        let phase = match kind {
            ReplyKind::Query | ReplyKind::Prepare | ReplyKind::Single => Phase::Start,
            ReplyKind::FieldList => Phase::FieldList,
            ReplyKind::Fetch => Phase::Rows,
        };
        Self {
            kind,
            phase,
            deprecate_eof,
            continuing: false,
            seq: 1,
            seq_from_next: false,
            end: None,
            error: None,
            prepared: None,
            results: 0,
        }
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The server asked for a local file (the last packet fed): its contents go to the server
    /// before the rest of the reply comes.
    pub fn wants_file(&self) -> bool {
        self.phase == Phase::Infile
    }

    /// The command took sequence ids up to `seq` (more than 0 when it ran over packets).
    pub fn starts_after(&mut self, seq: u8) {
        self.seq = seq.wrapping_add(1);
    }

    /// Checks a packet's sequence id: a server never skips or repeats one, and one that does
    /// is out of step with its requests (the next reply could be an earlier request's).
    pub fn check_seq(&mut self, seq: u8) -> Result<(), WireError> {
        if std::mem::take(&mut self.seq_from_next) {
            self.seq = seq;
        }
        if seq != self.seq {
            return Err(WireError::Malformed("response packet sequence"));
        }
        self.seq = seq.wrapping_add(1);
        Ok(())
    }

    /// The file (or the empty packet that refuses it) went to the server: its OK or ERR follows.
    pub fn file_sent(&mut self) {
        self.seq_from_next = true;
        if self.phase == Phase::Infile {
            self.phase = Phase::Start;
            self.results -= 1; // the OK that follows answers the same statement
        }
    }

    /// Between a result set's column definitions and its terminator.
    pub fn in_rows(&self) -> bool {
        self.phase == Phase::Rows
    }

    /// Whether the next packet (first payload byte `first`, `payload_len` bytes) must be
    /// buffered whole before `on_packet`; rows and definitions need not be.
    pub fn needs_whole(&self, first: u8, payload_len: usize) -> bool {
        if self.continuing || payload_len >= MAX_PAYLOAD {
            return false;
        }
        match self.phase {
            Phase::Columns(_) | Phase::Skip(_) => false,
            Phase::Rows | Phase::FieldList => first == 0xff || is_terminator(first, payload_len),
            _ => true,
        }
    }

    /// Within a result set's rows, the length of the run of whole row packets that starts
    /// `buf`, fed at once: a row is neither an ERR nor a terminator, so each changes nothing but
    /// the sequence id. Anything else (the end, an error, a full-size packet, one not all here,
    /// a wrong sequence id) stops the run and goes through `on_packet`. Fed one by one and
    /// copied one by one, rows cost ~180 instructions each: the range queries' largest cost.
    pub fn whole_rows(&mut self, buf: &[u8]) -> usize {
        if self.phase != Phase::Rows || self.continuing || self.seq_from_next {
            return 0;
        }
        let mut at = 0;
        while let Some(&[a, b, c, seq, first]) = buf.get(at..=at + HEADER_LEN) {
            let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
            let end = at + HEADER_LEN + len;
            // Below MAX_PAYLOAD, 0xfe leads only a terminator.
            if len == 0 || len >= MAX_PAYLOAD || end > buf.len() || seq != self.seq {
                break;
            }
            if first == 0xff || first == 0xfe {
                break;
            }
            self.seq = seq.wrapping_add(1);
            at = end;
        }
        at
    }

    /// Feeds one packet: `payload` is whole when `needs_whole` said so, else at least its first
    /// byte.
    pub fn on_packet(&mut self, payload: &[u8], payload_len: usize) -> Result<(), WireError> {
        let continuing = std::mem::replace(&mut self.continuing, payload_len == MAX_PAYLOAD);
        if continuing {
            return Ok(());
        }
        match self.phase {
            Phase::Done => return Err(WireError::Malformed("packet after the end of a response")),
            Phase::Infile => return Err(WireError::Malformed("packet before the local file")),
            Phase::Skip(n) => {
                self.phase = if n <= 1 {
                    Phase::Done
                } else {
                    Phase::Skip(n - 1)
                };
                return Ok(());
            }
            _ => {}
        }
        let first = *payload
            .first()
            .ok_or(WireError::Truncated("response packet"))?;
        match self.phase {
            Phase::Start => self.start(first, payload)?,
            Phase::Columns(n) => {
                self.phase = match (n, self.deprecate_eof) {
                    (1, true) => Phase::Rows,
                    (1, false) => Phase::ColumnsEof,
                    _ => Phase::Columns(n - 1),
                }
            }
            Phase::ColumnsEof => {
                let eof = self.status(first, payload_len, payload)?;
                // A cursor opened by COM_STMT_EXECUTE: rows come later, by COM_STMT_FETCH.
                self.phase = if eof.status & super::status::CURSOR_EXISTS != 0 {
                    Phase::Done
                } else {
                    Phase::Rows
                };
            }
            Phase::Rows | Phase::FieldList => {
                if first == 0xff {
                    self.error(payload)?;
                } else if is_terminator(first, payload_len) {
                    let end = self.status(first, payload_len, payload)?;
                    self.phase = if self.phase == Phase::Rows
                        && end.status & super::status::MORE_RESULTS_EXISTS != 0
                    {
                        Phase::Start
                    } else {
                        Phase::Done
                    };
                }
            }
            Phase::Skip(_) | Phase::Infile | Phase::Done => {}
        }
        Ok(())
    }

    fn start(&mut self, first: u8, payload: &[u8]) -> Result<(), WireError> {
        self.results += 1;
        match (self.kind, first) {
            (_, 0xff) => self.error(payload)?,
            (ReplyKind::Prepare, 0x00) => {
                let mut r = Reader::new(payload, "COM_STMT_PREPARE OK");
                r.u8()?;
                let ok = PrepareOk {
                    statement_id: r.u32()?,
                    columns: r.u16()?,
                    params: r.u16()?,
                };
                self.prepared = Some(ok);
                let eof = u64::from(!self.deprecate_eof);
                let block = |n: u16| if n == 0 { 0 } else { u64::from(n) + eof };
                let skip = block(ok.params) + block(ok.columns);
                self.phase = if skip == 0 {
                    Phase::Done
                } else {
                    Phase::Skip(skip)
                };
            }
            (ReplyKind::Single, _) => {
                if first == 0x00 || (first == 0xfe && payload.len() < 9) {
                    self.end = parse_ok(payload).ok();
                }
                self.phase = Phase::Done;
            }
            (_, 0x00) => {
                let ok = parse_ok(payload)?;
                self.end = Some(ok);
                if ok.status & super::status::MORE_RESULTS_EXISTS == 0 {
                    self.phase = Phase::Done;
                }
            }
            // COM_STMT_PREPARE is answered by PREPARE_OK or ERR, never a result set.
            (ReplyKind::Prepare, _) => return Err(WireError::Malformed("COM_STMT_PREPARE reply")),
            (ReplyKind::Query, 0xfb) => self.phase = Phase::Infile,
            (_, 0xfb) => return Err(WireError::Malformed("LOCAL INFILE request")),
            _ => {
                let n = Reader::new(payload, "column count").lenenc_int()?;
                if n == 0 {
                    return Err(WireError::Malformed("column count"));
                }
                self.phase = Phase::Columns(n);
            }
        }
        Ok(())
    }

    fn status(&mut self, first: u8, len: usize, payload: &[u8]) -> Result<OkPacket, WireError> {
        if first != 0xfe || len >= MAX_PAYLOAD {
            return Err(WireError::Malformed("EOF packet"));
        }
        let ok = parse_ok(payload)?;
        self.end = Some(ok);
        Ok(ok)
    }

    fn error(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let mut r = Reader::new(payload, "ERR packet");
        r.u8()?;
        self.error = Some(r.u16()?);
        self.phase = Phase::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
