//! How the pipeline handles the client's requests that sluice may answer or rename: simple
//! queries (`DISCARD ALL`, `DEALLOCATE`), Parse, Bind, Describe and Close of named statements.

use bytes::BytesMut;
use tokio::time::Instant;

use super::listen;
use super::naming::{Named, unmapped};
use super::{Discard, Expect, MISSING_UNNAMED, Pipeline, Reply, SERVER_NAME_PREFIX, memo};
use crate::postgres::pinning::{Deallocate, deallocate, discard_all};
use crate::postgres::statements::{ServerStatements, StatementRegistry};
use crate::postgres::wire::{self, Reader, WireError, frontend, status};
use crate::session::PinReason;

impl Pipeline {
    /// `DISCARD ALL` of an unpinned session outside a transaction: nothing of the session lives
    /// on the server but remapped statements and tracked parameters, so forgetting them is the
    /// whole effect. (Pinned, the server does it, and its CommandComplete says it happened.)
    /// Not while a parameter change is still to be read back, or sluice's own query about one
    /// is in flight: what came back for it afterwards would undo the reset, so the server runs
    /// it then.
    pub(super) fn discard_all_locally(&mut self, sql: &[u8], cout: &mut BytesMut) -> bool {
        if !discard_all(sql)
            || self.status != status::IDLE
            || self.pins.pinned.is_some()
            || self.tracked.is_some()
            || self.expect.iter().any(|e| matches!(e, Expect::Internal(_)))
        {
            return false;
        }
        self.forget_statements();
        self.listen_discarded();
        self.discarded = Some(Discard::Local);
        self.push(Expect::Synthetic(Reply::DiscardedAll, None), cout);
        true
    }

    /// A simple Query; `DEALLOCATE` of remapped statements is answered in the server's place.
    pub(super) fn query(
        &mut self,
        frame: &[u8],
        sql: &[u8],
        maybe_reset: bool,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Option<PinReason> {
        match maybe_reset.then(|| deallocate(sql)).flatten() {
            // Remapped statements are freed by forgetting them; the server keeps its copy for
            // other sessions, so sluice answers in the server's place.
            Some(Deallocate::All) if self.pins.pinned.is_none() => {
                self.forget_statements();
                self.push(Expect::Synthetic(Reply::DeallocatedAll, None), cout);
                None
            }
            Some(Deallocate::Name(name)) if self.statements.remove(&name[..]).is_some() => {
                self.push(Expect::Synthetic(Reply::Deallocated, None), cout);
                None
            }
            Some(Deallocate::Name(name)) if name.starts_with(SERVER_NAME_PREFIX) => {
                let sql = format!(
                    "DEALLOCATE \"{}\"",
                    String::from_utf8_lossy(MISSING_UNNAMED)
                );
                wire::query(sout, &sql);
                self.push(Expect::Ready(Instant::now()), cout);
                None
            }
            _ => {
                // Pinned, DEALLOCATE ALL frees SQL-level statements and sluice's with them: its
                // CommandComplete says so.
                let mut fx = match &mut self.scans {
                    Some(scans) => memo::effects_of(&mut scans.query, sql),
                    None => self.first_scan(sql),
                };
                let looked = self.look(&mut fx, sql);
                let pin = self.track(fx, sql);
                match looked.listen_at {
                    Some(at) => listen::query_unlisten(sout, sql, at),
                    None => sout.extend_from_slice(frame),
                }
                if let Some(op) = looked.op {
                    self.expect.push_back(Expect::Statement(Box::new(op)));
                } else if looked.unlistens {
                    let ops = crate::postgres::listen::sql::unlistens(sql);
                    if !ops.is_empty() {
                        self.expect.push_back(Expect::AtReady(ops));
                    }
                }
                self.push(Expect::Ready(Instant::now()), cout);
                pin
            }
        }
    }

    /// A Parse: unnamed ones go through; named ones are remapped to a shared statement, which
    /// this connection may already have.
    pub(super) fn parse(
        &mut self,
        frame: &[u8],
        (server, registry, prefix): (&mut ServerStatements, &StatementRegistry, &str),
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<Option<PinReason>, WireError> {
        let body = &frame[wire::FRAME_HEADER_LEN..];
        let mut pin = None;
        self.open_segment();
        let mut r = Reader::new(body, "Parse");
        let name = r.cstr()?;
        let mut rest = r.rest();
        let query = Reader::new(rest, "Parse").cstr()?;
        let mut fx = match &mut self.scans {
            Some(scans) => memo::effects_of(&mut scans.parse, query),
            None => self.first_scan(query),
        };
        let looked = self.look(&mut fx, query);
        let unlisten;
        if let Some(at) = looked.listen_at {
            unlisten = listen::rest_unlisten(rest, at);
            rest = &unlisten;
        }
        let rewritten = looked.listen_at.is_some();
        if name.is_empty() {
            self.parsed(name, looked.op);
            pin = self.track(fx, query);
            server.unnamed_owner = self.session_id;
            if rewritten {
                wire::parse_renamed(sout, name, rest);
            } else {
                sout.extend_from_slice(frame);
            }
            self.push(Expect::parse_through(), cout);
        } else if let Some(existing) = self.statements.get(name).cloned() {
            // Redefining a live name: make the server raise 42P05 as it would have.
            self.ensure_prepared(&existing, server, prefix, sout, cout);
            wire::parse_renamed(sout, &existing.server_name, rest);
            self.push(Expect::parse_through(), cout);
        } else {
            self.parsed(name, looked.op);
            pin = self.track(fx, query);
            let stmt = registry.intern(rest, fx.settings);
            self.statements.insert(name.into(), stmt.clone());
            if server.touch(stmt.id) {
                let client_name = Some(name.into());
                self.push(Expect::Synthetic(Reply::ParseComplete, client_name), cout);
            } else {
                self.prepare(&stmt, server, prefix, sout, cout, Some(name.into()));
            }
        }
        Ok(pin)
    }

    /// A session's first statement is scanned without being remembered: a connection that
    /// runs one (a Lambda's, pgbench `-C`) would pay for the copy and use it never.
    fn first_scan(&mut self, text: &[u8]) -> crate::postgres::pinning::Effects {
        self.scans = Some(Box::default());
        crate::postgres::pinning::effects(text)
    }

    /// A Close: of a remapped statement, answered in the server's place (it keeps the statement
    /// for other sessions).
    pub(super) fn close(
        &mut self,
        frame: &[u8],
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<(), WireError> {
        let body = &frame[wire::FRAME_HEADER_LEN..];
        self.open_segment();
        let mut r = Reader::new(body, "Close");
        let kind = r.u8()?;
        let name = r.cstr()?;
        if kind == frontend::KIND_STATEMENT {
            self.parsed(name, None);
        }
        if kind == frontend::KIND_STATEMENT && self.statements.remove(name).is_some() {
            // The server keeps the statement for other sessions; the client sees it closed.
            self.push(Expect::Synthetic(Reply::CloseComplete, None), cout);
        } else if kind == frontend::KIND_STATEMENT {
            wire::renamed(sout, frontend::CLOSE, b"S", unmapped(name), &[]);
            self.push(
                Expect::Close {
                    visible: true,
                    evicted: None,
                },
                cout,
            );
        } else {
            sout.extend_from_slice(frame);
            self.push(
                Expect::Close {
                    visible: true,
                    evicted: None,
                },
                cout,
            );
        }
        Ok(())
    }

    /// A Bind of, or a Describe of, a statement: remapped to the server's name for it
    /// (prepared there first if the connection lacks it). A Describe of a portal goes through.
    pub(super) fn bind_or_describe(
        &mut self,
        frame: &[u8],
        (server, prefix): (&mut ServerStatements, &str),
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<Named, WireError> {
        let tag = frame[0];
        let body = &frame[wire::FRAME_HEADER_LEN..];
        self.open_segment();
        if tag == frontend::BIND {
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr()?;
            let name = r.cstr()?;
            let head = &body[..portal.len() + 1];
            let rest = r.rest();
            return Ok(self.forward_named(tag, head, name, rest, frame, server, prefix, sout, cout));
        }
        let mut r = Reader::new(body, "Describe");
        let kind = r.u8()?;
        let name = r.cstr()?;
        if kind == frontend::KIND_STATEMENT {
            Ok(self.forward_named(tag, b"S", name, &[], frame, server, prefix, sout, cout))
        } else {
            sout.extend_from_slice(frame);
            Ok(Named::Other)
        }
    }
}
