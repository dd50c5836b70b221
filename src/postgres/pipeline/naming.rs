//! How a Bind, Describe or Parse names a statement on the server connection: the session's
//! name becomes the shared statement's server name, prepared there first when the connection
//! lacks it, or a name the server does not know when it must fail (another session's unnamed
//! statement, a statement the server called stale).

use std::sync::Arc;

use bytes::BytesMut;

use super::{Expect, MISSING_UNNAMED, Pipeline, SERVER_NAME_PREFIX};
use crate::postgres::pinning::effects;
use crate::postgres::statements::{ServerStatements, Statement, server_name};
use crate::postgres::wire::{self, Reader, frontend};

/// What a Bind or Describe named.
pub(super) enum Named {
    /// A remapped statement.
    Mapped(Bound),
    /// A statement the server called stale, not prepared on this connection.
    Doomed(Arc<Statement>),
    /// The unnamed statement, a portal, or a name the session has no mapping for.
    Other,
}

/// A remapped statement a Bind or Describe named.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) id: u64,
    /// This connection had it prepared already (one prepared in the same request cannot be
    /// stale).
    pub(super) here: bool,
    /// Its Parse gave every parameter's type (`Statement::typed`).
    pub(super) typed: bool,
}

impl Named {
    pub(super) fn prepared(&self) -> Option<Bound> {
        match self {
            Named::Mapped(b) => Some(*b),
            _ => None,
        }
    }

    pub(super) fn expect(self, plain: fn(Option<u64>) -> Expect) -> Expect {
        match self {
            Named::Mapped(b) => plain(Some(b.id)),
            Named::Doomed(s) => Expect::Doomed(s),
            Named::Other => plain(None),
        }
    }
}

/// The name to send for a statement name the session has no mapping for.
pub(super) fn unmapped(name: &[u8]) -> &[u8] {
    if name.starts_with(SERVER_NAME_PREFIX) {
        MISSING_UNNAMED
    } else {
        name
    }
}

impl Pipeline {
    /// Bind or Describe of a statement: renamed to its server name (prepared first if this
    /// connection lacks it), or forwarded untouched when the session has no such mapping.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_named(
        &mut self,
        tag: u8,
        head: &[u8],
        name: &[u8],
        rest: &[u8],
        frame: &[u8],
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Named {
        if name.is_empty() {
            if server.unnamed_owner == self.session_id {
                sout.extend_from_slice(frame);
            } else {
                // The unnamed statement here is another session's (or none): never bind it.
                wire::renamed(sout, tag, head, MISSING_UNNAMED, rest);
            }
        } else if let Some(stmt) = self.statements.get(name) {
            let here = server.touch(stmt.id);
            let bound = Bound {
                id: stmt.id,
                here,
                typed: stmt.typed,
            };
            let settings = stmt.settings && tag == frontend::BIND;
            if here && !settings {
                // The steady state takes no reference: the count is shared by every session.
                wire::renamed(sout, tag, head, &stmt.server_name, rest);
                return Named::Mapped(bound);
            }
            let stmt = stmt.clone();
            if settings {
                // Each execution of a statement that sets parameters is read back after.
                let query = Reader::new(&stmt.parse_rest, "Parse")
                    .cstr()
                    .unwrap_or_default();
                self.track(effects(query), query);
            }
            if !here && stmt.stale_error().is_some() {
                // Prepared afresh it would run with a row shape the client never saw.
                wire::renamed(sout, tag, head, MISSING_UNNAMED, rest);
                return Named::Doomed(stmt);
            }
            if !here {
                self.prepare(&stmt, server, prefix, sout, cout, None);
            }
            wire::renamed(sout, tag, head, &stmt.server_name, rest);
            return Named::Mapped(bound);
        } else if name.starts_with(SERVER_NAME_PREFIX) {
            wire::renamed(sout, tag, head, unmapped(name), rest);
        } else {
            sout.extend_from_slice(frame);
        }
        Named::Other
    }

    pub(super) fn ensure_prepared(
        &mut self,
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) {
        if !server.touch(stmt.id) {
            self.prepare(stmt, server, prefix, sout, cout, None);
        }
    }

    /// Sends a Parse under the server name; visible to the client only if the client asked.
    pub(super) fn prepare(
        &mut self,
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        prefix: &str,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
        client_name: Option<Box<[u8]>>,
    ) {
        if let Some(old) = server.insert(stmt.id) {
            wire::close_statement(sout, &server_name(prefix, old));
            self.push(
                Expect::Close {
                    visible: false,
                    evicted: Some(old),
                },
                cout,
            );
        }
        wire::parse_renamed(sout, &stmt.server_name, &stmt.parse_rest);
        let visible = client_name.is_some();
        self.push(
            Expect::Parse {
                visible,
                stmt: Some(stmt.clone()),
                client_name,
            },
            cout,
        );
    }
}
