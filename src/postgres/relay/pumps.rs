//! The relay's pumps: the complete messages read from each side, handled in order, and the
//! large ones that stream through without being buffered whole.

use bytes::BytesMut;
use tokio::time::{Duration, Instant};

use super::route::{commits, ends_session};
use super::{Active, HIGH_WATER, MAX_BUFFERED_MESSAGE, STREAM_CHUNK, Session, errors};
use crate::postgres::server::ServerConn;
use crate::postgres::wire::{self, backend, frontend, status};
use crate::tls::consume;

impl Session {
    /// Handles the complete client messages read so far.
    pub(super) fn pump_client(&mut self, conn: &mut ServerConn) -> Result<(), Active> {
        if self.holding() {
            return Ok(());
        }
        let mut cin = std::mem::take(&mut self.cin);
        let result = loop {
            if self.client_streaming > 0 {
                let n = self.client_streaming.min(cin.len());
                if n == 0 {
                    break Ok(());
                }
                self.sout.extend_from_slice(&cin[..n]);
                consume(&mut cin, n);
                self.client_streaming -= n;
                continue;
            }
            if self.sout.len() >= HIGH_WATER || cin.len() < wire::FRAME_HEADER_LEN {
                break Ok(());
            }
            let tag = cin[0];
            let frame = match wire::next_frame(&cin, usize::MAX) {
                Ok(Some(f)) => f,
                Ok(None) => match self.partial_client_message(&mut cin) {
                    Ok(true) => continue,
                    Ok(false) => break Ok(()),
                    Err(end) => break Err(end),
                },
                Err(e) => {
                    break Err(Active::Fatal(
                        errors::PROTOCOL_VIOLATION,
                        format!("invalid message: {e}"),
                    ));
                }
            };
            if tag == frontend::TERMINATE {
                break Err(Active::ClientGone);
            }
            let message = &cin[..frame.len];
            if tag == frontend::QUERY || tag == frontend::SYNC {
                self.route.cluster.metrics.query_requests.inc();
            }
            if (tag == frontend::QUERY || tag == frontend::PARSE) && !self.commit_in_flight {
                self.commit_in_flight = commits(tag, message);
            }
            match self.pipeline.client_message(
                message,
                &mut conn.statements,
                &self.pg.statements,
                &self.pg.prefix,
                &mut self.sout,
                &mut self.cout,
            ) {
                Ok(Some(reason)) => self.pin(reason),
                Ok(None) => {
                    if let Some(discard) = self.pipeline.take_discard() {
                        self.on_discard(conn, discard);
                    }
                }
                Err(e) => {
                    break Err(Active::Fatal(
                        errors::PROTOCOL_VIOLATION,
                        format!("invalid message: {e}"),
                    ));
                }
            }
            consume(&mut cin, frame.len);
        };
        self.cin = cin;
        result
    }

    /// A client message not yet whole: a large CopyData streams on as it comes (`Ok(true)`:
    /// pump on), one too large to buffer ends the session, anything else waits for its rest.
    fn partial_client_message(&mut self, cin: &mut BytesMut) -> Result<bool, Active> {
        let declared = wire::declared_len(cin);
        if cin[0] == frontend::COPY_DATA && cin.len() >= STREAM_CHUNK {
            self.sout.extend_from_slice(cin);
            self.client_streaming = declared - cin.len();
            cin.clear();
            return Ok(true);
        }
        if declared > MAX_BUFFERED_MESSAGE {
            return Err(Active::Fatal(
                errors::PROGRAM_LIMIT,
                format!("message of {declared} bytes is too large"),
            ));
        }
        Ok(false)
    }

    /// Handles the complete server messages read so far.
    pub(super) fn pump_server(&mut self, conn: &mut ServerConn) {
        let mut sbuf = std::mem::take(&mut conn.buf);
        loop {
            if self.server_streaming > 0 {
                let n = self.server_streaming.min(sbuf.len());
                if n == 0 {
                    break;
                }
                self.cout.extend_from_slice(&sbuf[..n]);
                consume(&mut sbuf, n);
                self.server_streaming -= n;
                continue;
            }
            if self.cout.len() >= HIGH_WATER || sbuf.len() < wire::FRAME_HEADER_LEN {
                break;
            }
            let rows = (self.pipeline).data_rows(&sbuf, HIGH_WATER - self.cout.len());
            if rows > 0 {
                self.cout.extend_from_slice(&sbuf[..rows]);
                consume(&mut sbuf, rows);
                continue;
            }
            match wire::next_frame(&sbuf, usize::MAX) {
                Ok(Some(frame))
                    if frame.tag == backend::ERROR_RESPONSE && ends_session(&sbuf[..frame.len]) =>
                {
                    // The server ends this connection (shutdown, postmaster exit, a terminated
                    // backend): that is sluice's connection, not the client's session, so the
                    // client gets the lost-server error instead, and keeps its session.
                    if let Ok(f) = wire::parse_error_fields(frame.body(&sbuf)) {
                        tracing::warn!(
                            code = f.code,
                            message = f.message,
                            "the server ended a connection"
                        );
                    }
                    sbuf.clear();
                    self.server_fatal = true;
                    break;
                }
                Ok(Some(frame)) => {
                    let ready = frame.tag == backend::READY_FOR_QUERY;
                    let sent = if ready {
                        self.pipeline.ready_sent()
                    } else {
                        None
                    };
                    self.pipeline.server_message(
                        &sbuf[..frame.len],
                        &mut conn.statements,
                        &self.pg.statements,
                        &self.pg.prefix,
                        &mut self.sout,
                        &mut self.cout,
                    );
                    consume(&mut sbuf, frame.len);
                    if self.pipeline.take_out_of_order() {
                        self.server_broke(&mut sbuf, "a response out of order");
                        break;
                    }
                    if ready {
                        let p = &self.pipeline;
                        let in_transaction = p.status() != status::IDLE;
                        self.cancel
                            .target
                            .state
                            .set(in_transaction, p.pinned().is_some());
                    }
                    if let Some(sent) = sent {
                        let waited = self.pipeline.take_borrow_wait();
                        let m = &self.route.cluster.metrics;
                        let done = Instant::now();
                        self.clock = Some(done);
                        let database = done.saturating_duration_since(sent);
                        m.database_response_latency.observe(database);
                        m.query_response_latency
                            .observe(database + Duration::from_micros(u64::from(waited)));
                    }
                }
                Ok(None) => {
                    let tag = sbuf[0];
                    if (tag == backend::DATA_ROW || tag == backend::COPY_DATA)
                        && sbuf.len() >= STREAM_CHUNK
                        && !self.pipeline.internal()
                    {
                        let declared = wire::declared_len(&sbuf);
                        self.cout.extend_from_slice(&sbuf);
                        self.server_streaming = declared - sbuf.len();
                        sbuf.clear();
                        continue;
                    }
                    if wire::declared_len(&sbuf) > MAX_BUFFERED_MESSAGE {
                        self.server_broke(&mut sbuf, "a message too large to buffer");
                    }
                    break;
                }
                Err(_) => {
                    self.server_broke(&mut sbuf, "a message with an impossible length");
                    break;
                }
            }
        }
        conn.buf = sbuf;
    }

    /// A server that sent what no PostgreSQL sends loses its connection; the client gets the
    /// lost-server error and keeps its session, as when the server ends the connection itself.
    fn server_broke(&mut self, sbuf: &mut BytesMut, what: &str) {
        tracing::warn!("the server sent {what}; closing that server connection");
        sbuf.clear();
        self.server_fatal = true;
    }
}
