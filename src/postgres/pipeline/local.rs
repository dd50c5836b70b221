//! Answering without a server connection: a batch that only prepares statements this pool's
//! server already accepted (and closes statements) needs no borrow, which also keeps pgbench's
//! blocking `PQprepare` from stalling a small pool.

use bytes::BytesMut;

use super::Pipeline;
use crate::postgres::listen::sql::subscription;
use crate::postgres::pinning::pin_reason;
use crate::postgres::statements::StatementRegistry;
use crate::postgres::wire::{self, Reader, frontend, status};

impl Pipeline {
    /// Answers a batch of named Parse and Close-statement messages ending in Sync without a
    /// server connection, when every Parse is of a statement a server of this pool accepted.
    /// Returns the bytes consumed from `cin` (0: the batch needs a server).
    pub fn answer_locally(
        &mut self,
        cin: &[u8],
        registry: &StatementRegistry,
        cout: &mut BytesMut,
    ) -> usize {
        // A session that has used LISTEN keeps the server in the loop: its statements may
        // carry subscription changes to their Executes.
        if self.status != status::IDLE
            || !self.expect.is_empty()
            || self.pins.pinned.is_some()
            || self.listen.is_some()
        {
            return 0;
        }
        // First pass: check; nothing changes unless the whole batch qualifies.
        let mut end = 0;
        for (count, item) in wire::Frames::new(cin, 1 << 20).enumerate() {
            let Ok((at, f)) = item else { return 0 };
            let body = f.body(&cin[at..]);
            let mut r = Reader::new(body, "");
            let ok = match f.tag {
                frontend::PARSE => r.cstr().is_ok_and(|name| {
                    let query = Reader::new(r.rest(), "Parse").cstr().unwrap_or_default();
                    !name.is_empty()
                        && !self.statements.contains_key(name)
                        && pin_reason(query).is_none()
                        // Its Executes must carry the subscription change: the server answers.
                        && subscription(query).is_none()
                        && registry.confirmed(r.rest()).is_some()
                }),
                frontend::CLOSE => r.u8() == Ok(frontend::KIND_STATEMENT),
                frontend::SYNC if count > 0 => {
                    end = at + f.len;
                    break;
                }
                _ => false,
            };
            if !ok {
                return 0;
            }
        }
        if end == 0 {
            return 0;
        }
        for item in wire::Frames::new(&cin[..end], 1 << 20) {
            let Ok((at, f)) = item else { return 0 };
            let mut r = Reader::new(f.body(&cin[at..]), "");
            match f.tag {
                frontend::PARSE => {
                    let name = r.cstr().unwrap_or_default();
                    if let Some(stmt) = registry.confirmed(r.rest()) {
                        self.statements.insert(name.into(), stmt);
                    }
                    wire::parse_complete(cout);
                }
                frontend::CLOSE => {
                    let _ = r.u8();
                    if let Ok(name) = r.cstr() {
                        self.statements.remove(name);
                    }
                    wire::close_complete(cout);
                }
                _ => wire::ready_for_query(cout, status::IDLE),
            }
        }
        end
    }
}
