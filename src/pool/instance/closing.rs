//! Closes that count against the cap until the server has let the connection go: the server
//! counts a closed backend until it has exited, and a replacement opened before then would
//! put one more connection on it than the cap allows.

use std::sync::{Arc, Weak};

use tokio::time::Duration;

use super::{Instance, Pooled, State, grant_slot, used};
use crate::pool::PooledConnection;

/// How long a close waits for the server to let the connection go before its slot is free
/// anyway (a server that does not answer holds nothing sluice could wait for).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl<C: PooledConnection> Instance<C> {
    /// Remembers the instance's own `Arc`, which a close confirmed later gives its slot back to.
    pub(super) fn know_self(self: &Arc<Self>) {
        let _ = self.this.set(Arc::downgrade(self));
    }

    /// Closes connections taken out of the pools. Each keeps counting against the cap
    /// (`hold_closing`) until the server has let it go; then its slot is free.
    pub(super) fn dispose(&self, doomed: Vec<Pooled<C>>) {
        if doomed.is_empty() {
            return;
        }
        let me = self.this.get().and_then(Weak::upgrade);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(me), Some(runtime)) = (me, runtime) else {
            let n = doomed.len();
            doomed.into_iter().for_each(|p| p.conn.close());
            self.closed(n);
            return;
        };
        for p in doomed {
            let me = me.clone();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_WAIT, (*p.conn).close_confirmed()).await;
                me.closed(1);
            });
        }
    }

    /// `n` closes the server confirmed: their slots go to waiters.
    fn closed(&self, n: usize) {
        let mut st = self.lock();
        st.closing = st.closing.saturating_sub(n);
        while used(&st) < st.max && grant_slot(&mut st) {}
    }
}

/// Counts `n` connections just taken out of the pools as closing.
pub(super) fn hold_closing<C>(st: &mut State<C>, n: usize) {
    st.closing += n;
}
