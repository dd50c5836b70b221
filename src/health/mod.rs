//! Health probes: one loop per instance feeds the failover state machine, which publishes the
//! topology routing reads, and closes the pools of instances that went down or lost the writer
//! role.
//!
//! Engines plug in through [`Probe`]; this module never touches a protocol.

pub mod machine;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio::time::{Duration, Instant, MissedTickBehavior};

pub use machine::{Machine, ProbeReport, Thresholds};

use crate::routing::Router;

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<ProbeReport, String>> + Send + 'a>>;

/// The engine side of probing one instance. It keeps its own connection between probes and
/// reconnects after a failure.
pub trait Probe: Send + 'static {
    fn addr(&self) -> &str;
    fn probe(&mut self) -> ProbeFuture<'_>;
}

/// A probe's own server connection: kept between probes, opened again when the server closed
/// it or the last probe failed (a probe cut short by its timeout leaves a reply half read, so
/// the connection is taken out for each probe and only a completed one gives it back).
#[derive(Debug)]
pub struct ProbeConn<C>(Option<C>);

impl<C> Default for ProbeConn<C> {
    fn default() -> Self {
        Self(None)
    }
}

impl<C: crate::pool::PooledConnection> ProbeConn<C> {
    /// The kept connection if the server has not closed it, else a new one from `connect`.
    pub async fn take<E: ToString>(
        &mut self,
        connect: impl Future<Output = Result<C, E>>,
    ) -> Result<C, String> {
        match self.0.take().and_then(|mut c| c.is_usable().then_some(c)) {
            Some(c) => Ok(c),
            None => connect.await.map_err(|e| e.to_string()),
        }
    }

    /// Gives back the connection of a probe that completed.
    pub fn keep(&mut self, conn: C) {
        self.0 = Some(conn);
    }
}

/// Closes an instance's pools: idle connections now, leased ones when they come back, waiters
/// told to route again. Handed in by `app`: health decides when, never how.
pub type Drain = Arc<dyn Fn() + Send + Sync>;

/// How often an instance marked down is probed until it is back, when `interval` is longer.
/// Marking one down still takes `unhealthy_threshold` probes at `interval`; coming back takes
/// `healthy_threshold` probes at this pace, so sessions waiting out a restart in place are
/// served about 0.2 s after the server is (1-2 s at the default 1 s interval; PgBouncer's
/// `server_login_retry` is 15 s).
const RECOVERY_PROBE: Duration = Duration::from_millis(100);

/// Probe timings of a target group.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
}

/// A target group's probes: start with [`Monitor::spawn`].
#[derive(Debug)]
pub struct Monitor {
    group: String,
    machine: Mutex<Machine>,
    router: Arc<Router>,
    addrs: Box<[String]>,
}

/// One instance: how to probe it, and how to close its pools.
pub struct Member {
    pub probe: Box<dyn Probe>,
    pub drain: Drain,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("addr", &self.probe.addr())
            .finish()
    }
}

impl Monitor {
    pub fn spawn(
        group: &str,
        members: Vec<Member>,
        thresholds: Thresholds,
        timing: Timing,
        router: Arc<Router>,
        tasks: &mut JoinSet<()>,
    ) -> Arc<Monitor> {
        let monitor = Arc::new(Monitor {
            group: group.to_owned(),
            machine: Mutex::new(Machine::new(members.len(), thresholds)),
            router,
            addrs: members.iter().map(|m| m.probe.addr().to_owned()).collect(),
        });
        let drains: Arc<[Drain]> = members.iter().map(|m| m.drain.clone()).collect();
        for (i, member) in members.into_iter().enumerate() {
            tasks.spawn(monitor.clone().run(i, member.probe, drains.clone(), timing));
        }
        monitor
    }

    async fn run(
        self: Arc<Self>,
        i: usize,
        mut probe: Box<dyn Probe>,
        drains: Arc<[Drain]>,
        timing: Timing,
    ) {
        let mut tick = tokio::time::interval(timing.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_failure: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.router.nudged(i) => {}
            }
            let result = match tokio::time::timeout(timing.timeout, probe.probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", timing.timeout)),
            };
            match &result {
                Err(e) if last_failure.as_deref() != Some(e) => {
                    tracing::warn!(target_group = %self.group, instance = probe.addr(), error = %e, "probe failed");
                }
                Ok(_) if last_failure.is_some() => {
                    tracing::info!(target_group = %self.group, instance = probe.addr(), "probe succeeded again");
                }
                _ => {}
            }
            last_failure = result.as_ref().err().cloned();
            if self.observe(i, result.ok(), &drains) {
                tick.reset_after(timing.interval.min(RECOVERY_PROBE));
            }
        }
    }

    /// Takes one probe result; true while instance `i` is marked down.
    fn observe(&self, i: usize, report: Option<ProbeReport>, drains: &[Drain]) -> bool {
        let (changes, topology, down) = {
            let mut m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
            let changes = m.observe(i, report, Instant::now());
            (changes, m.topology(), m.is_down(i))
        };
        if let Some((before, after)) = changes.writer {
            let name = |w: Option<usize>| w.map_or("none", |w| self.addrs[w].as_str());
            match after {
                Some(_) => {
                    tracing::warn!(target_group = %self.group, previous = name(before), writer = name(after), "writer elected")
                }
                None => {
                    tracing::warn!(target_group = %self.group, previous = name(before), "no writer: borrows wait for one")
                }
            }
        }
        if changes.two_writers {
            tracing::warn!(target_group = %self.group, instance = %self.addrs[i], "more than one instance accepts writes; the newer writer is trusted");
        }
        self.router.publish(topology);
        for d in changes.drain {
            (drains[d])();
        }
        down
    }
}

#[cfg(test)]
mod tests;
