//! A client gone while its session held a server connection: the connection goes back to the
//! pool only if it can be made clean (rolled back, reset), else it is closed.

use super::{RESET_TIMEOUT, Session};
use crate::pool::Lease;
use crate::postgres::server::ServerConn;
use crate::postgres::wire::status;

impl Session {
    /// The client left while holding a server connection: keep it only if it can be made clean.
    pub(super) async fn clean_up(&mut self, mut lease: Lease<ServerConn>) {
        if !self.pipeline.quiet()
            || !self.sout.is_empty()
            || !lease.buf.is_empty()
            || self.server_streaming > 0
            || self.client_streaming > 0
        {
            return; // mid-message: dropping the lease closes it and the server rolls back
        }
        let login = &self.pg.login;
        let mut clean = true;
        if self.pipeline.status() != status::IDLE {
            clean = timed(lease.simple_query(login, "ROLLBACK")).await;
        }
        if clean && self.pipeline.server_state_unknown() {
            clean = timed(lease.simple_query(login, "DISCARD ALL")).await;
            lease.statements.clear();
            lease.settings.clear();
            if clean && !self.pg.init_query.is_empty() {
                clean = timed(lease.simple_query(login, &self.pg.init_query)).await;
            }
        }
        let reusable = clean && !self.pipeline.retiring();
        lease.release(reusable);
    }
}

async fn timed<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> bool {
    matches!(tokio::time::timeout(RESET_TIMEOUT, f).await, Ok(Ok(_)))
}
