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
    members: usize,
}

impl<C: PooledConnection> Member<C> {
    /// Joins the fleet on `instance`: its pools wait for a share from the first read.
    pub fn new(spec: &FleetSpec, instance: Arc<Instance<C>>) -> Self {
        instance.join_fleet();
        Self {
            tag: ad::tag(&spec.name),
            id: rand::random(),
            budget: spec.budget,
            instance,
            state: Mutex::default(),
        }
    }

    /// What every member's advertisement starts with: how the engines find them.
    pub fn key(&self) -> String {
        format!("{}{} ", ad::PREFIX, self.tag)
    }

    pub fn addr(&self) -> &str {
        self.instance.addr()
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
        let sample = self.instance.stats();
        let server_max = self.instance.server_max();
        let budget = match self.budget {
            Budget::Absolute(n) => n,
            Budget::Percent(p) => server_max? * p as usize / 100,
        };
        let mut st = self.lock();
        let me = st.published?;
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
            if ad.id == self.id {
                continue;
            }
            if let Some(c) = row.conn {
                by_conn.insert(c, ad);
            }
            members.push(ad);
        }
        let cap = sample.fleet.map_or(0, |(v, _)| v.share);
        let share = share::next_cap(budget, &members, 0, cap, grow);
        st.intent = share::targets(budget, &members)[0];
        st.by_conn = by_conn;
        if st.members != members.len() {
            tracing::info!(instance = %self.instance.addr(), fleet = %self.tag, members = members.len(), budget, "fleet members changed");
            st.members = members.len();
        }
        drop(st);
        self.instance.set_fleet_view(FleetView {
            budget,
            seen: members.iter().map(|m| m.overhead + m.held).sum(),
            members: members.len(),
            share,
        });
        Some(share)
    }
}

#[cfg(test)]
mod tests;
