//! A session's state on the server connections it borrows: parameters replayed where they
//! differ, read back after transactions that may have changed them, and pins that lift when the
//! server confirms nothing holds the session any more.

use super::Session;
use crate::postgres::pinning::PIN_CHECK_SQL;
use crate::postgres::pipeline::{Discard, Purpose};
use crate::postgres::server::{Role, ServerConn};
use crate::postgres::settings::{put, read_back_sql, replay_sql};
use crate::session::PinReason;

impl Session {
    pub(super) fn on_borrow(&mut self, conn: &mut ServerConn) {
        self.cancel.target.set(Some((conn.peer.clone(), conn.key)));
        self.replay_settings(conn, false);
    }

    /// Queues the session's parameters where the connection's differ (`rerun_init`: the
    /// connection lost every session-level value, the init query's too). Returns whether it
    /// queued a query.
    pub(super) fn replay_settings(&mut self, conn: &mut ServerConn, rerun_init: bool) -> bool {
        let mut queued = false;
        if conn.settings != self.settings || rerun_init {
            let sql = replay_sql(
                &conn.settings,
                &self.settings,
                &self.pg.init_query,
                rerun_init,
            );
            if !sql.is_empty() {
                self.pipeline
                    .internal_query(Purpose::Replay, &sql, &mut self.sout);
                queued = true;
            }
            conn.settings.clone_from(&self.settings);
        }
        queued
    }

    /// A DISCARD ALL returned the session to its startup parameters.
    pub(super) fn on_discard(&mut self, conn: &mut ServerConn, discard: Discard) {
        self.settings = self.startup.clone();
        if discard == Discard::Server {
            conn.settings.clear();
            self.pipeline.server_discarded();
        }
        self.replay_settings(conn, discard == Discard::Server);
    }

    pub(super) fn pin(&mut self, reason: PinReason) {
        tracing::info!(session = self.id, %reason, "session pinned");
        self.route.cluster.pin_counts.pinned(reason);
    }

    /// Once a transaction is over: takes in what sluice's own queries found, and queues the
    /// parameter read-back or pin check still due. Returns whether it queued a query.
    pub(super) fn after_transaction(&mut self, conn: &mut ServerConn) -> bool {
        let end = self.pipeline.end_transaction();
        if let Some(reason) = end.pinned {
            self.pin(reason);
        }
        for (name, value) in end.read_back {
            let name = name.to_lowercase();
            let value = value.filter(|v| !(name == "role" && v == "none"));
            put(&mut conn.settings, &name, value.as_deref());
            // A RESET went back to the connection's startup name, sluice's own; the session's
            // goes back to its own startup one, as directly (replayed below).
            let value = if name == "application_name"
                && value.as_deref() == Some(Role::Pool.application_name())
            {
                let startup = self.startup.iter().find(|(n, _)| n == "application_name");
                startup.map(|(_, v)| v.clone())
            } else {
                value
            };
            put(&mut self.settings, &name, value.as_deref());
        }
        // Shared again, so the next borrow compares pointers.
        if conn.settings == self.settings {
            conn.settings.clone_from(&self.settings);
        }
        if let Some(reason) = end.unpinned {
            tracing::info!(session = self.id, %reason, "session unpinned: nothing pins it on the server any more");
            self.route.cluster.pin_counts.unpinned(reason);
        }
        let mut names = end.touched;
        if end.reset_all {
            // RESET ALL also undid what the init query set: such a connection serves no one else.
            names.extend(self.settings.iter().map(|(n, _)| n.clone()));
            names.extend(conn.settings.iter().map(|(n, _)| n.clone()));
            if !self.pg.init_query.is_empty() {
                self.pipeline.retire_connection();
            }
            // The session is back at its startup parameters, the connection at its own, which
            // name sluice as the application. (Values set after the RESET ALL are known only
            // from the read-back: then the read-back decides.)
            if !end.set_after_reset_all {
                self.settings = self.startup.clone();
                conn.settings.clear();
            }
        }
        // A RESET goes back to the session's startup value (`options=-c DateStyle=German`, its
        // application_name), not the shared connection's, which is what the server's RESET
        // gave it (and what the connection has now).
        for name in &end.resets {
            let startup = self.startup.iter().find(|(n, _)| n == name);
            put(&mut self.settings, name, startup.map(|(_, v)| v.as_str()));
            put(&mut conn.settings, name, None);
        }
        // Where the connection now differs from the session (after RESET ALL, or a read-back
        // that found sluice's application_name), the session's values go back at once, ahead
        // of the client's next statement, not at the next borrow: a pinned session keeps this
        // connection, and a transaction opened right behind would see sluice's values (psycopg
        // isolation test: `RESET ALL` then `BEGIN` while holding a cursor).
        let replayed = self.replay_settings(conn, false);
        let mut queued = false;
        if !names.is_empty() {
            names.sort();
            names.dedup();
            let sql = read_back_sql(&names);
            self.pipeline
                .internal_query(Purpose::ReadBack, &sql, &mut self.sout);
            queued = true;
        }
        if end.check_pins {
            self.pipeline
                .internal_query(Purpose::PinCheck, PIN_CHECK_SQL, &mut self.sout);
            queued = true;
        }
        queued || replayed
    }
}
