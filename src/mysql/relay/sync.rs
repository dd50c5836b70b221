//! Making a borrowed connection carry the session: its schema, tracked variables and
//! LAST_INSERT_ID() replayed when they differ, and the read-back after a statement changed them.

use super::{End, Session};
use crate::errors::{BorrowError, ConnectError};
use crate::mysql::errors::{self, Code};
use crate::mysql::pools::MyPool;
use crate::mysql::server::ServerConn;
use crate::mysql::state::{Vars, effective};
use crate::mysql::wire::{command, status};
use crate::pool::Lease;
use crate::routing::Want;
use crate::tls::{Socket, unless_hung_up};
use tokio::time::Instant;

/// A replay the server refused: the client gets this as its command's ERR.
pub(in crate::mysql) type Refused = (Code, String);

fn refused(e: ConnectError) -> Refused {
    errors::refusal(&e)
}

impl Session {
    /// Borrows a connection if the session holds none, and brings it to the session's state; an
    /// error is the current command's ERR.
    /// `Err`: the client hung up while the command waited for a connection.
    pub(super) async fn ensure_lease(
        &mut self,
        client: &mut Socket,
    ) -> Result<Result<(), Refused>, End> {
        if self.lease.is_some() {
            return Ok(Ok(()));
        }
        for _ in 0..3 {
            let mut lease = match self.borrow(client).await? {
                Ok(lease) => lease,
                Err(r) => return Ok(Err(r)),
            };
            // A schema cannot be unselected: a session without one needs a connection without one.
            if self.schema.is_none() && lease.state.schema.is_some() {
                lease.release(false);
                continue;
            }
            self.kill
                .target
                .set(Some((self.pool.addr.clone(), lease.thread_id)));
            // Boxed: a replay is rare next to the borrows that need none, and inline its state
            // would be part of every session task.
            let synced = if self.needs_sync(&lease) {
                let synced = Box::pin(self.sync(&mut lease)).await;
                self.clock = Some(Instant::now());
                synced
            } else {
                Ok(())
            };
            return Ok(match synced {
                Ok(()) => {
                    self.lease = Some(lease);
                    Ok(())
                }
                Err(r) => {
                    // Refused half way: what the connection holds now is not known.
                    self.kill.target.set(None);
                    lease.release(false);
                    Err(r)
                }
            });
        }
        Ok(Err((
            errors::UNKNOWN,
            "sluice: no server connection without a schema".into(),
        )))
    }

    /// A connection, on the instance routing picks, that the server has not closed while it sat
    /// idle. With no instance to route to (a failover), or one that cannot be reached, it waits
    /// up to the borrow timeout for the probes to find another. A failed borrow fails the
    /// command, not the session: the client may retry.
    async fn borrow(
        &mut self,
        client: &mut Socket,
    ) -> Result<Result<Lease<ServerConn>, Refused>, End> {
        if self.needs_replayed_reader() {
            if let Some(lease) = Box::pin(self.replayed_reader()).await {
                return Ok(Ok(lease));
            }
            self.want = Want::Writer;
        }
        match self.borrow_idle() {
            Some(lease) => Ok(Ok(lease)),
            // Waiting, connecting or routing: boxed, so its state is not part of every session
            // task. It may have taken a while: the command's clock moves on.
            None => {
                let lease = Box::pin(self.borrow_watched(client)).await;
                self.clock = Some(Instant::now());
                lease
            }
        }
    }

    /// The wait for a connection, watching the client: a `KILL QUERY` for the session or a
    /// client that hangs up meanwhile ends the wait, and the command never runs. Before, it ran
    /// when a connection came free, for a client that had given up on it (and may have retried
    /// it).
    async fn borrow_watched(
        &mut self,
        client: &mut Socket,
    ) -> Result<Result<Lease<ServerConn>, Refused>, End> {
        let target = std::sync::Arc::clone(&self.kill.target);
        let mut early = bytes::BytesMut::new();
        // Pinned here and passed on by reference: a future moved by value is copied whole (its
        // largest state), and the borrow's is large: three such copies were 465 instructions of
        // every queued borrow.
        let waited = {
            let routed = std::pin::pin!(self.borrow_routed());
            let routed = target.unless_cancelled(routed);
            unless_hung_up(client, &mut early, routed).await
        };
        // What the client sent meanwhile comes after the command being served.
        self.cin.extend_from_slice(&early);
        match waited {
            Some(Some(got)) => Ok(got),
            Some(None) => {
                tracing::info!(
                    session = self.id,
                    "command killed while it waited for a server connection"
                );
                Ok(Err(errors::borrow_failure(&BorrowError::Cancelled)))
            }
            None => {
                tracing::debug!(
                    session = self.id,
                    "client hung up while its request waited for a server connection"
                );
                Err(End::ClientGone)
            }
        }
    }

    /// The steady state: an idle connection on the instance routing picks, no future.
    fn borrow_idle(&mut self) -> Option<Lease<ServerConn>> {
        let member = self.ep.engine.cluster.router.pick(self.want)?;
        self.use_member(member);
        let now = *self.clock.get_or_insert_with(Instant::now);
        self.ep.engine.cluster.take_idle(&self.pool.pool, now)
    }

    /// Switches the session to its pool on instance `member`.
    pub(super) fn use_member(&mut self, member: usize) {
        if member != self.member {
            self.pool = self.ep.engine.cluster.pool_like(member, &self.pool);
            self.member = member;
        }
    }

    async fn borrow_routed(&mut self) -> Result<Lease<ServerConn>, Refused> {
        let mut deadline = None;
        let fail = |id: u32, e: BorrowError| {
            tracing::warn!(session = id, error = %e, "borrow failed");
            errors::borrow_failure(&e)
        };
        loop {
            let cluster = &self.ep.engine.cluster;
            let member = match cluster.router.pick(self.want) {
                Some(m) => m,
                None => cluster
                    .route(self.want)
                    .await
                    .map_err(|e| fail(self.id, e))?,
            };
            self.use_member(member);
            let cluster = &self.ep.engine.cluster;
            match cluster
                .borrow_on(&self.pool.pool, member, &mut deadline)
                .await
            {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => {}
                Err(e) => return Err(fail(self.id, e)),
            }
        }
    }

    /// Whether the connection's schema or tracked variables differ from the session's.
    fn needs_sync(&self, conn: &ServerConn) -> bool {
        if self.schema.is_some() && self.schema != conn.state.schema {
            return true;
        }
        match self.pool.baseline.get() {
            Some(baseline) => {
                // Both at the baseline (the common case) is the same object: no field compare.
                let (have, want) = (
                    effective(&conn.state.vars, baseline),
                    effective(&self.vars, baseline),
                );
                !std::ptr::eq(have, want) && have != want
            }
            None => false,
        }
    }

    async fn sync(&self, conn: &mut ServerConn) -> Result<(), Refused> {
        let addr = self.pool.login.addr.as_str();
        if self.schema != conn.state.schema
            && let Some(db) = &self.schema
        {
            conn.use_schema(addr, db).await.map_err(refused)?;
        }
        if let Some(baseline) = self.pool.baseline.get() {
            let have = effective(&conn.state.vars, baseline);
            let want = effective(&self.vars, baseline);
            let sql = self.pool.dialect.replay_sql(have, want);
            if !sql.is_empty() {
                conn.state.vars = None; // unknown until the SET succeeds
                conn.query(addr, &sql).await.map_err(refused)?;
                conn.state.vars = self.vars.clone();
            }
        }
        Ok(())
    }

    /// Puts the session's LAST_INSERT_ID() on the connection before a statement reads it.
    pub(super) async fn sync_last_insert_id(&mut self) -> Result<(), Refused> {
        let want = self.last_insert_id;
        let addr = self.pool.login.addr.clone();
        let Some(conn) = self.lease.as_mut() else {
            return Ok(());
        };
        if conn.state.last_insert_id != want {
            conn.query(&addr, &format!("SELECT LAST_INSERT_ID({want})"))
                .await
                .map_err(refused)?;
            conn.state.last_insert_id = want;
        }
        Ok(())
    }

    /// Reads the tracked variables and schema back after a statement that may have changed them.
    pub(super) async fn read_back(&mut self) -> Result<(), ConnectError> {
        let addr = self.pool.login.addr.clone();
        let Some(conn) = self.lease.as_mut() else {
            return Ok(());
        };
        let (vars, schema) = read_state(&self.pool, conn, &addr).await?;
        self.vars = vars.clone();
        conn.state.vars = vars;
        if schema != conn.state.schema {
            if let Some(db) = &schema {
                self.pool
                    .known_schemas
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(db.to_string());
            }
            conn.state.schema = schema.clone();
        }
        self.schema = schema;
        Ok(())
    }
}

/// The connection's tracked variables (`None` when they equal the baseline) and schema.
async fn read_state(
    pool: &MyPool,
    conn: &mut ServerConn,
    addr: &str,
) -> Result<(Option<Vars>, Option<Box<str>>), ConnectError> {
    let row = conn.query(addr, &pool.dialect.read_back).await?.pop();
    let (vars, schema) = row
        .and_then(|r| pool.dialect.parse_read_back(r))
        .ok_or_else(|| ConnectError::Protocol {
            instance: addr.to_owned(),
            reason: "unreadable session variables".into(),
        })?;
    let vars = match pool.baseline.get() {
        Some(b) if *b == vars => None,
        _ => Some(vars),
    };
    Ok((vars, schema))
}

/// COM_RESET_CONNECTION, then what a new connection would have: the init query run again and
/// the variables read back (a reset restores global defaults, not the handshake's).
pub(super) async fn reset_server(pool: &MyPool, conn: &mut ServerConn) -> Result<(), ConnectError> {
    let addr = pool.login.addr.as_str();
    let ok = conn.command(addr, command::RESET_CONNECTION, &[]).await?;
    if ok.status & status::IN_TRANS != 0 {
        // A reset ends every transaction; a server that says otherwise is not pooled.
        return Err(ConnectError::Protocol {
            instance: addr.into(),
            reason: "still in a transaction after COM_RESET_CONNECTION".into(),
        });
    }
    let stale: Vec<u32> = conn.state.statements.drain().map(|(_, id)| id).collect();
    drop(stale); // the reset closed them on the server
    conn.state.last_insert_id = 0;
    if !pool.init_query.is_empty() {
        for statement in pool.init_query.split(';').filter(|s| !s.trim().is_empty()) {
            conn.query(addr, statement).await?;
        }
    }
    restore_role(pool, conn, addr).await?;
    let (vars, schema) = read_state(pool, conn, addr).await?;
    conn.state.vars = vars;
    conn.state.schema = schema;
    Ok(())
}

/// MariaDB keeps the active role through COM_RESET_CONNECTION (and COM_CHANGE_USER): without
/// this, a session's `SET ROLE` outlived it on the pooled connection and the next session of
/// the user acted with that role (found by `my_statements::session_state_never_crosses_sessions`).
/// MySQL's `SET ROLE DEFAULT` is what a new connection has (a server without roles refuses it,
/// and has none to restore; no MySQL server runs in this repository's tests).
async fn restore_role(
    pool: &MyPool,
    conn: &mut ServerConn,
    addr: &str,
) -> Result<(), ConnectError> {
    if !pool.dialect.mariadb {
        return match conn.query(addr, "SET ROLE DEFAULT").await {
            Ok(_) | Err(ConnectError::Refused { .. }) => Ok(()),
            Err(e) => Err(e),
        };
    }
    let want = pool.baseline_role.get().cloned().flatten();
    if conn.current_role(addr).await? != want {
        let sql = match &want {
            Some(role) => format!("SET ROLE `{}`", role.replace('`', "``")),
            None => "SET ROLE NONE".into(),
        };
        conn.query(addr, &sql).await?;
    }
    Ok(())
}
