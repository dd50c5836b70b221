//! The failover state machine: probe results in, a topology out. Pure (no I/O); the clock is
//! passed in, so the tests drive it under tokio's paused time.
//!
//! An instance is healthy after `healthy_threshold` good probes in a row and unhealthy after
//! `unhealthy_threshold` failed ones (its first result decides at once: there is no history to
//! protect). The writer is the healthy instance that accepts writes. Two writers at once are
//! told apart by what makes one newer: a higher generation (Postgres timeline), else a
//! promotion sluice watched happen (reader, then writable). An instance that was writable all
//! along, such as an old writer coming back, never wins against a newer one; a tie elects no
//! one rather than risk writes on both.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

use crate::topology::{MemberView, Topology};

/// What one good probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    pub writable: bool,
    /// Replication position as an ordered number (Postgres LSN; MariaDB GTID sequence sum).
    pub position: Option<u64>,
    /// Ordering of writers across failovers (Postgres timeline); 0 where unknown.
    pub generation: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub unhealthy: u32,
    pub healthy: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Up,
    Down,
}

#[derive(Debug)]
struct Member {
    health: Health,
    good: u32,
    bad: u32,
    last: Option<ProbeReport>,
    /// When sluice saw this instance go from reader to writable.
    promoted: Option<Instant>,
    lag: Option<Duration>,
}

/// What an observation changed, for the probe loop to act on outside any lock.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Instances whose pools must close: down, or no longer the writer.
    pub drain: Vec<usize>,
    /// The writer before and after, when it changed.
    pub writer: Option<(Option<usize>, Option<usize>)>,
    pub two_writers: bool,
}

#[derive(Debug)]
pub struct Machine {
    thresholds: Thresholds,
    members: Vec<Member>,
    writer: Option<usize>,
    /// The writer's positions over time, oldest first: a reader's lag is the age of the oldest
    /// position it has not replayed yet (a quiet writer makes no lag, unlike replay timestamps).
    samples: VecDeque<(u64, Instant)>,
    epoch: u64,
    failovers: u64,
    /// More than one instance accepted writes at the last election (reported once per episode).
    split: bool,
}

const MAX_SAMPLES: usize = 4096;

impl Machine {
    pub fn new(members: usize, thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            members: (0..members)
                .map(|_| Member {
                    health: Health::Unknown,
                    good: 0,
                    bad: 0,
                    last: None,
                    promoted: None,
                    lag: None,
                })
                .collect(),
            writer: None,
            samples: VecDeque::new(),
            epoch: 0,
            failovers: 0,
            split: false,
        }
    }

    pub fn writer(&self) -> Option<usize> {
        self.writer
    }

    /// Whether member `i` is marked down (not merely failing a probe or two).
    pub fn is_down(&self, i: usize) -> bool {
        self.members[i].health == Health::Down
    }

    /// Takes one probe result of member `i`.
    pub fn observe(&mut self, i: usize, result: Option<ProbeReport>, now: Instant) -> Changes {
        let mut changes = Changes::default();
        let t = self.thresholds;
        let m = &mut self.members[i];
        let before = m.health;
        match result {
            Some(report) => {
                m.bad = 0;
                m.good = m.good.saturating_add(1);
                let was_reader = m.last.as_ref().is_some_and(|l| !l.writable);
                if report.writable && was_reader {
                    m.promoted = Some(now);
                }
                if m.health == Health::Unknown || (m.health == Health::Down && m.good >= t.healthy)
                {
                    m.health = Health::Up;
                }
                m.last = Some(report);
            }
            None => {
                m.good = 0;
                m.bad = m.bad.saturating_add(1);
                if m.health == Health::Unknown || (m.health == Health::Up && m.bad >= t.unhealthy) {
                    m.health = Health::Down;
                }
            }
        }
        if before != Health::Down && self.members[i].health == Health::Down {
            changes.drain.push(i);
        }
        self.elect(&mut changes);
        self.measure(i, now);
        changes
    }

    fn usable_writer(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.health == Health::Up && m.last.as_ref().is_some_and(|r| r.writable)
    }

    /// Newer writers rank higher: generation, then a watched promotion.
    fn rank(&self, i: usize) -> (u64, Option<Instant>) {
        let m = &self.members[i];
        (m.last.as_ref().map_or(0, |r| r.generation), m.promoted)
    }

    fn elect(&mut self, changes: &mut Changes) {
        let before = self.writer;
        if let Some(w) = self.writer
            && !self.usable_writer(w)
        {
            self.writer = None;
            if !changes.drain.contains(&w) {
                changes.drain.push(w);
            }
        }
        let candidates: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.usable_writer(i))
            .collect();
        let best = candidates.iter().map(|&i| self.rank(i)).max();
        if let Some(best) = best {
            let top: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| self.rank(i) == best)
                .collect();
            let only = (top.len() == 1).then(|| top[0]);
            match self.writer {
                // A newer writer appeared (a promotion): the old one is fenced out.
                Some(w) if best > self.rank(w) => {
                    changes.drain.push(w);
                    self.writer = only;
                }
                Some(_) => {}
                None => self.writer = only,
            }
        }
        let split = candidates.len() > 1;
        changes.two_writers = split && !self.split;
        self.split = split;
        if self.writer != before {
            if before.is_some() {
                self.failovers += 1;
            }
            self.samples.clear();
            changes.writer = Some((before, self.writer));
        }
    }

    /// Records the writer's position, or a reader's lag behind it.
    fn measure(&mut self, i: usize, now: Instant) {
        let Some(pos) = self.members[i].last.as_ref().and_then(|r| r.position) else {
            self.members[i].lag = None;
            return;
        };
        if Some(i) == self.writer {
            if self.samples.back().is_none_or(|&(p, _)| pos > p) {
                if self.samples.len() == MAX_SAMPLES {
                    self.samples.pop_front();
                }
                self.samples.push_back((pos, now));
            }
            self.members[i].lag = Some(Duration::ZERO);
            return;
        }
        // Samples the reader has reached are dropped only when every reader has (cheap enough
        // to scan: a few thousand at most).
        let lag = match self.samples.iter().find(|&&(p, _)| p > pos) {
            Some(&(_, at)) => now.saturating_duration_since(at),
            None if self.writer.is_some() => Duration::ZERO,
            None => {
                self.members[i].lag = None;
                return;
            }
        };
        self.members[i].lag = Some(lag);
        self.forget_reached();
    }

    fn forget_reached(&mut self) {
        let slowest = (0..self.members.len())
            .filter(|&j| Some(j) != self.writer && self.members[j].health == Health::Up)
            .filter_map(|j| self.members[j].last.as_ref().and_then(|r| r.position))
            .min();
        if let Some(slowest) = slowest {
            // Keep the newest reached sample: the writer's latest position stays known.
            while self.samples.len() > 1 && self.samples[1].0 <= slowest {
                self.samples.pop_front();
            }
        }
    }

    /// The snapshot routing reads.
    pub fn topology(&mut self) -> Topology {
        self.epoch += 1;
        Topology {
            epoch: self.epoch,
            writer: self.writer,
            failovers: self.failovers,
            members: self
                .members
                .iter()
                .map(|m| MemberView {
                    healthy: m.health == Health::Up,
                    writable: m.last.as_ref().is_some_and(|r| r.writable),
                    lag: m.lag,
                    position: m.last.as_ref().and_then(|r| r.position),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
