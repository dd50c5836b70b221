//! The fleet side of an instance: the share that caps its pools and the numbers a member
//! advertises.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Instance, State, effective_max, limit_max, resize, used};
use crate::pool::PooledConnection;

/// A fleet's view of this instance, as the last read of the database left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetView {
    /// The fleet's connections allowed on the instance.
    pub budget: usize,
    /// The fleet's connections on the instance, as its members advertise them.
    pub seen: usize,
    /// Processes of the fleet, this one included.
    pub members: usize,
    /// This process's pool cap from the fleet.
    pub share: usize,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Fleet {
    pub(super) view: FleetView,
    /// Borrows that waited because the share, not the process's own cap, was reached.
    pub(super) waits: u64,
    /// The most sessions waiting at once since the last sample.
    wait_peak: usize,
}

/// What a fleet member advertises, read from the instance (and the peaks reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSample {
    pub open: usize,
    /// The fleet share now in force.
    pub share: usize,
    /// The process's own cap (`max_connections` or its percent).
    pub limit: usize,
    /// The most leases out at once since the last sample.
    pub borrowed_peak: usize,
    /// The most sessions waiting at once since the last sample.
    pub waiting_peak: usize,
}

impl<C: PooledConnection> Instance<C> {
    /// Puts the instance's pools under a fleet budget: no pool connection until a read of the
    /// fleet gives this process a share (the first read grants at most one).
    pub fn join_fleet(self: &Arc<Self>) {
        self.know_self();
        let mut st = self.lock();
        st.fleet = Some(Fleet::default());
        st.max = effective_max(&st);
    }

    /// Applies a fleet read: the share caps the pools as `reconfigure` does.
    pub fn set_fleet_view(&self, view: FleetView) {
        let mut doomed = Vec::new();
        {
            let mut st = self.lock();
            if let Some(f) = &mut st.fleet {
                f.view = view;
            }
            resize(&mut st, &mut doomed);
        }
        self.dispose(doomed);
    }

    /// The numbers a fleet member advertises; the peaks start again from now.
    pub fn fleet_sample(&self) -> FleetSample {
        let borrowed = self.borrowed.load(Ordering::Relaxed);
        let borrowed_peak = self.borrowed_peak.swap(borrowed, Ordering::Relaxed);
        let mut st = self.lock();
        // Borrowers that gave up stay queued until a release skips them: not wanted.
        let waiting: usize = st
            .pools
            .iter()
            .map(|p| p.waiters.iter().filter(|w| !w.tx.is_closed()).count())
            .sum();
        let limit = limit_max(&st);
        let (share, waiting_peak) = st.fleet.as_mut().map_or((limit, 0), |f| {
            (f.view.share, std::mem::replace(&mut f.wait_peak, waiting))
        });
        FleetSample {
            // What is still closing on the server is still held there.
            open: used(&st),
            share,
            limit,
            borrowed_peak: borrowed_peak.max(borrowed),
            waiting_peak: waiting_peak.max(waiting),
        }
    }
}

/// A borrow waits under a fleet: counted against the budget when the share, not the
/// process's own cap, stopped it; and the peak of waiters kept for the next advertisement.
pub(super) fn fleet_wait<C>(st: &mut State<C>) {
    let waiting: usize = st.pools.iter().map(|p| p.waiters.len()).sum();
    let by_budget = st.max < limit_max(st);
    if let Some(f) = &mut st.fleet {
        f.waits += u64::from(by_budget);
        f.wait_peak = f.wait_peak.max(waiting);
    }
}
