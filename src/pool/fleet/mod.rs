//! A connection budget shared by a fleet of sluice processes, learned from the database
//! itself. Each process advertises its numbers for an instance where every connection to that
//! instance can read them (the engines say where: `application_name`, a statement's text),
//! reads everyone's, and computes the same fair division as the others ([`share`]); its own
//! part caps its pools on that instance. A process that dies takes its advertisement with it.

pub mod ad;
pub mod share;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use ad::Ad;

use super::PooledConnection;
use super::instance::{FleetSample, FleetView, Instance};

/// How large a fleet's budget is on each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Absolute(usize),
    /// A percentage of the instance's own `max_connections`.
    Percent(u32),
}

/// A fleet as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    pub name: String,
    pub budget: Budget,
}

/// One row the exchange read: a connection's id where the engine can show a member between
/// its statements (MySQL), and the text that may hold an advertisement.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub conn: Option<u64>,
    pub text: Option<String>,
}

/// This process's membership for one instance.
#[derive(Debug)]
pub struct Member<C> {
    tag: String,
    id: u32,
    budget: Budget,
    instance: Arc<Instance<C>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// What the last advertisement said.
    published: Option<Ad>,
    /// The target of the last read: claimed in the next advertisement, opened after it.
    intent: usize,
    /// Each member's last advertisement by connection id: what a row read between a member's
    /// statements stands for.
    by_conn: HashMap<u64, Ad>,
    /// The other members of the last read, and those missing since, with the reads they
    /// still count for.
    last: Vec<Ad>,
    ghosts: HashMap<u32, (Ad, u32)>,
    /// Rounds in a row this process could not advertise.
    misses: u32,
    members: usize,
    /// Whether the last read left this process no pool connection while it wanted some.
    starved: bool,
}

/// Reads for which a member missing from the database still counts: it may be reconnecting.
const GHOST_READS: u32 = 2;

/// Rounds a member may fail to advertise before it fences itself (share 0): fewer than the
/// others keep its place for, so it has stopped before they grow into its part.
const FENCE_AFTER: u32 = 2;

impl<C: PooledConnection> Member<C> {
    /// Joins the fleet on `instance`: its pools wait for a share from the first read.
    pub fn new(spec: &FleetSpec, instance: Arc<Instance<C>>) -> Self {
        instance.join_fleet();
        Self {
            tag: ad::tag(&spec.name),
            id: rand::random(),
            budget: spec.budget,
            instance,
            // The first advertisement claims the one connection every member is given, so
            // the first read can grant it (the claim is written before the read).
            state: Mutex::new(State {
                intent: 1,
                ..State::default()
            }),
        }
    }

    /// What every member's advertisement starts with: how the engines find them.
    pub fn key(&self) -> String {
        format!("{}{} ", ad::PREFIX, self.tag)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This round's advertisement, `overhead` being this process's connections to the
    /// instance outside its pools. Call it once a round: it restarts the peaks it reports.
    pub fn advertise(&self, overhead: usize) -> String {
        let s: FleetSample = self.instance.fleet_sample();
        let mut st = self.lock();
        let ad = Ad {
            id: self.id,
            overhead,
            held: s.open,
            claim: s.share.max(s.open).max(st.intent.min(s.limit)),
            want: (s.borrowed_peak + s.waiting_peak + 1).min(s.limit),
        };
        st.published = Some(ad);
        ad::encode(&self.tag, &ad)
    }

    /// Applies what an exchange read after the last [`Member::advertise`]: every other
    /// member's advertisement. Returns this process's new share, None when it cannot tell
    /// (nothing advertised yet, or a percent budget before the server's size is known).
    pub fn observe(&self, rows: impl IntoIterator<Item = Row>) -> Option<usize> {
        let cap = self.instance.stats().fleet.map_or(0, |(v, _)| v.share);
        let budget = match self.budget {
            Budget::Absolute(n) => n,
            Budget::Percent(p) => self.instance.server_max()? * p as usize / 100,
        };
        let mut st = self.lock();
        let me = st.published?;
        st.misses = 0;
        let mut members = vec![me];
        let mut by_conn = HashMap::new();
        let mut grow = true;
        for row in rows {
            let parsed = row.text.as_deref().and_then(|t| ad::parse(t, &self.tag));
            let known = row.conn.and_then(|c| st.by_conn.get(&c).copied());
            let ad = match (parsed, known) {
                (Some(ad), _) => ad,
                // Between two of its statements: its last advertisement stands, but it may
                // have claimed more since, so this read grows nobody.
                (None, Some(ad)) => {
                    grow = false;
                    ad
                }
                (None, None) => continue,
            };
            if ad.id == self.id || members.iter().any(|m| m.id == ad.id) {
                continue;
            }
            if let Some(c) = row.conn {
                by_conn.insert(c, ad);
            }
            members.push(ad);
        }
        // A member missing from this read may only be between connections (it fences itself
        // after FENCE_AFTER rounds it could not advertise): it keeps its place for a while.
        let seen: Vec<u32> = members.iter().map(|m| m.id).collect();
        st.ghosts.retain(|id, _| !seen.contains(id));
        for m in std::mem::take(&mut st.last) {
            if !seen.contains(&m.id) {
                st.ghosts.entry(m.id).or_insert((m, GHOST_READS));
            }
        }
        st.last = members[1..].to_vec();
        st.ghosts.retain(|_, (_, left)| *left > 0);
        for (ghost, left) in st.ghosts.values_mut() {
            *left -= 1;
            members.push(*ghost);
        }
        let share = share::next_cap(budget, &members, 0, cap, grow);
        let target = share::targets(budget, &members)[0];
        st.intent = target;
        st.by_conn = by_conn;
        if st.members != members.len() {
            tracing::info!(instance = %self.instance.addr(), fleet = %self.tag, members = members.len(), budget, "fleet members changed");
            st.members = members.len();
        }
        let starved = target == 0 && me.want > 1;
        if starved && !st.starved {
            tracing::warn!(instance = %self.instance.addr(), fleet = %self.tag, members = members.len(), budget, "the fleet budget leaves this process no pool connection: it waits until a member leaves or the budget grows");
        }
        st.starved = starved;
        drop(st);
        self.instance.set_fleet_view(FleetView {
            budget,
            seen: members.iter().map(|m| m.overhead + m.held).sum(),
            members: members.len(),
            share,
        });
        Some(share)
    }

    /// A round in which this process could not advertise (its exchange or its connection
    /// failed). The others keep its place for [`GHOST_READS`] reads; past [`FENCE_AFTER`]
    /// such rounds it stops opening connections, so none of them grows into space it holds.
    pub fn missed(&self) {
        let mut st = self.lock();
        st.misses += 1;
        if st.misses != FENCE_AFTER {
            return;
        }
        drop(st);
        tracing::warn!(instance = %self.instance.addr(), fleet = %self.tag, "this process could not advertise in the fleet for {FENCE_AFTER} rounds: its share is 0 until it can");
        let view = self
            .instance
            .stats()
            .fleet
            .map(|(v, _)| v)
            .unwrap_or_default();
        self.instance.set_fleet_view(FleetView { share: 0, ..view });
    }
}

#[cfg(test)]
mod tests;
