//! The fleet's division: the advertisement line, fair targets, and a simulated fleet whose
//! members announce, read and die in random interleavings without ever exceeding the budget.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ad::{self, Ad};
use super::share::{next_cap, targets};
use super::{Budget, FleetSpec, Member, Row};
use crate::pool::{Instance, Limit, PooledConnection};

fn ad(id: u32, overhead: usize, held: usize, claim: usize, want: usize) -> Ad {
    Ad {
        id,
        overhead,
        held,
        claim,
        want,
    }
}

#[test]
fn the_line_reads_back_and_fits_in_an_application_name() {
    let a = ad(0xdead_beef, 2, 3, 4, 41);
    let line = ad::encode("orders-api", &a);
    assert_eq!(line, "sluice fleet orders-api deadbeef 2 3 4 41");
    assert_eq!(ad::parse(&line, "orders-api"), Some(a));
    assert_eq!(ad::parse(&line, "orders"), None, "another fleet's line");
    let long = ad::tag("a fleet name far longer than sixteen bytes, with spaces");
    assert_eq!(
        long,
        ad::tag("a fleet name far longer than sixteen bytes, with spaces")
    );
    assert_ne!(
        long,
        ad::tag("a fleet name far longer than sixteen bytes, with space")
    );
    let big = ad(u32::MAX, 1_000_000, 1_000_000, 1_000_000, 1_000_000);
    assert!(
        ad::encode(&long, &big).len() <= 63,
        "{}",
        ad::encode(&long, &big)
    );
    // A MySQL reader's own text holds the prefix in its pattern before its advertisement.
    let text = format!(
        "... LIKE '%{}{} %' ... /* {line} */",
        ad::PREFIX,
        "orders-api"
    );
    assert_eq!(ad::parse(&text, "orders-api"), Some(a));
}

#[test]
fn targets_share_fairly_and_leave_what_nobody_wants() {
    // Three busy processes, budget 12, one probe each: 3 pool connections each.
    let busy = [ad(1, 1, 0, 0, 41), ad(2, 1, 0, 0, 41), ad(3, 1, 0, 0, 41)];
    assert_eq!(targets(12, &busy), vec![3, 3, 3]);
    // Two go idle: they keep one each, the busy one gets the rest.
    let one_busy = [ad(1, 1, 0, 0, 1), ad(2, 1, 0, 0, 41), ad(3, 1, 0, 0, 1)];
    assert_eq!(targets(12, &one_busy), vec![1, 7, 1]);
    // A member that wants little leaves its part to the others.
    let mixed = [ad(1, 1, 0, 0, 2), ad(2, 1, 0, 0, 41), ad(3, 1, 0, 0, 41)];
    assert_eq!(targets(12, &mixed), vec![2, 4, 3]);
    // All idle: one each, the rest unassigned.
    let idle = [ad(1, 1, 0, 0, 1), ad(2, 1, 0, 0, 1)];
    assert_eq!(targets(12, &idle), vec![1, 1]);
    // Fewer connections than members: the lowest ids get one.
    let crowded: Vec<Ad> = (1..=5).map(|i| ad(i, 1, 0, 0, 9)).collect();
    assert_eq!(targets(8, &crowded), vec![1, 1, 1, 0, 0]);
    let total: usize = targets(100, &busy).iter().sum();
    assert!(total <= 97, "overheads come first");
}

#[test]
fn a_cap_shrinks_at_once_and_grows_only_into_its_claim_and_the_room_left() {
    let me = |claim, want| ad(1, 1, 3, claim, want);
    // Others now want everything: down to the fair target at once.
    let crowd = [me(9, 41), ad(2, 1, 0, 3, 41), ad(3, 1, 0, 3, 41)];
    assert_eq!(next_cap(12, &crowd, 0, 9, true), 3);
    // The others left: the target is 11, but the claim advertised was 3.
    let alone = [me(3, 41)];
    assert_eq!(next_cap(12, &alone, 0, 3, true), 3);
    assert_eq!(targets(12, &alone), vec![11]);
    assert_eq!(next_cap(12, &[me(11, 41)], 0, 3, true), 11);
    // Another still claims 6 though its target is 3: grow only into what it leaves.
    let slow = [me(7, 41), ad(2, 1, 6, 6, 1)];
    assert_eq!(next_cap(12, &slow, 0, 3, true), 4);
    // A read that may have missed a claim grows nobody.
    assert_eq!(next_cap(12, &[me(11, 41)], 0, 3, false), 3);
}

/// One simulated process: its cap, its connections, and what the database shows of it.
#[derive(Debug, Clone)]
struct Proc {
    id: u32,
    cap: usize,
    held: usize,
    intent: usize,
    want: usize,
    shown: Option<Ad>,
    /// Announced, not yet read: the next step of its round.
    reading: bool,
    alive: bool,
    /// The step of its first advertisement, and of its last read.
    first_shown: usize,
    last_read: usize,
}

impl Proc {
    fn new(id: u32) -> Self {
        Self {
            id,
            cap: 0,
            held: 0,
            intent: 1,
            want: 1,
            shown: None,
            reading: false,
            alive: true,
            first_shown: 0,
            last_read: 0,
        }
    }
}

fn step(procs: &mut [Proc], budget: usize, i: usize, now: usize) {
    if !procs[i].reading {
        let p = &mut procs[i];
        let claim = p.cap.max(p.held).max(p.intent);
        if p.shown.is_none() {
            p.first_shown = now;
        }
        p.shown = Some(ad(p.id, 1, p.held, claim, p.want));
        p.reading = true;
        return;
    }
    let p = &procs[i];
    let mut members = vec![p.shown.unwrap()];
    members.extend(
        procs
            .iter()
            .enumerate()
            .filter(|(j, q)| *j != i && q.alive)
            .filter_map(|(_, q)| q.shown),
    );
    let cap = next_cap(budget, &members, 0, p.cap, true);
    let intent = targets(budget, &members)[0];
    let p = &mut procs[i];
    p.cap = cap;
    p.intent = intent;
    p.reading = false;
    p.last_read = now;
    // Transactions are short next to a round: what is lent above a lowered cap is back by
    // the end of the round.
    p.held = p.held.min(cap);
}

#[test]
fn a_simulated_fleet_never_exceeds_its_budget_and_settles_on_the_fair_shares() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let budget = rng.random_range(6..40);
        let mut procs: Vec<Proc> = (0..rng.random_range(2..6))
            .map(|i| Proc::new(i + 1))
            .collect();
        for n in 0..3000 {
            let i = rng.random_range(0..procs.len());
            if !procs[i].alive {
                continue;
            }
            match rng.random_range(0..100) {
                0..=59 => step(&mut procs, budget, i, n + 1),
                // Busy: connections open up to the cap at once (the worst case).
                60..=79 => procs[i].held = procs[i].held.max(procs[i].cap),
                // Lent connections come back: down to the cap.
                80..=89 => procs[i].held = procs[i].held.min(procs[i].cap),
                90..=97 => procs[i].want = rng.random_range(1..30),
                98 if procs.iter().filter(|p| p.alive).count() > 1 => {
                    procs[i].alive = false;
                    procs[i].held = 0;
                }
                99 if procs.iter().filter(|p| p.alive).count() < 6 => {
                    procs.push(Proc::new(procs.len() as u32 + 1));
                }
                _ => {}
            }
            // A joining process's probe connection is open before the others make room for
            // it: the documented transient, one connection per process joining, for a round.
            let used: usize = procs.iter().filter(|p| p.alive).map(|p| 1 + p.held).sum();
            let living = procs.iter().filter(|p| p.alive).count();
            let joining = procs
                .iter()
                .filter(|p| {
                    p.alive
                        && (p.shown.is_none()
                            || procs
                                .iter()
                                .any(|q| q.alive && q.id != p.id && q.last_read <= p.first_shown))
                })
                .count();
            assert!(
                used <= budget.max(living) + joining,
                "seed {seed}: {used} connections over a budget of {budget}: {:?}",
                procs.iter().filter(|p| p.alive).collect::<Vec<_>>()
            );
        }
        // Quiet rounds: everyone settles on the fair division of what they want.
        for _ in 0..6 {
            for i in 0..procs.len() {
                if procs[i].alive {
                    procs[i].held = procs[i].held.min(procs[i].cap);
                    step(&mut procs, budget, i, usize::MAX);
                    step(&mut procs, budget, i, usize::MAX);
                }
            }
        }
        let living: Vec<&Proc> = procs.iter().filter(|p| p.alive).collect();
        let shown: Vec<Ad> = living.iter().map(|p| p.shown.unwrap()).collect();
        let fair = targets(budget, &shown);
        for (p, t) in living.iter().zip(fair) {
            assert_eq!(p.cap, t, "seed {seed}: {p:?} settled off its share");
        }
    }
}

/// A member of fleet `name` on an instance whose own cap is `own`.
fn member_of(name: &str, budget: Budget, own: usize) -> (Arc<Instance<Nothing>>, Member<Nothing>) {
    let instance = Arc::new(Instance::new("x:1".into(), Limit::Absolute(own), 100));
    let spec = FleetSpec {
        name: name.into(),
        budget,
    };
    let member = Member::new(&spec, instance.clone());
    (instance, member)
}

#[derive(Debug)]
struct Nothing;

impl PooledConnection for Nothing {
    fn close(self) {}
    fn is_usable(&mut self) -> bool {
        true
    }
}

#[test]
fn a_member_caps_its_instance_from_what_it_reads() {
    let (instance, member) = member_of("orders-api", Budget::Absolute(12), 20);
    assert_eq!(
        instance.stats().max,
        0,
        "no pool connection before the first read"
    );
    let line = |id: u32, claim: usize, want: usize| Row {
        conn: None,
        text: Some(ad::encode("orders-api", &ad(id, 1, claim, claim, want))),
    };
    let mine = member.advertise(1);
    assert!(mine.starts_with(&member.key()), "{mine}");
    // Two busy others claim 3 each: this process's first read gives it its reserve, which
    // its first advertisement claimed.
    let others = || vec![line(7, 3, 41), line(8, 3, 41), Row::default()];
    assert_eq!(member.observe(others()), Some(1));
    member.advertise(1);
    assert_eq!(member.observe(others()), Some(1));
    let (view, _) = instance.stats().fleet.unwrap();
    assert_eq!((view.members, view.seen, view.share), (3, 9, 1));
    assert_eq!(instance.stats().max, 1);
    // Alone: two rounds to grow to everything but its probe.
    member.advertise(1);
    member.observe(vec![]);
    member.advertise(1);
    assert_eq!(
        member.observe(vec![]),
        Some(1),
        "it wants only one: it has borrowed nothing"
    );
}

#[test]
fn a_percent_budget_waits_for_the_server_size() {
    let (instance, member) = member_of("f", Budget::Percent(80), 50);
    member.advertise(1);
    assert_eq!(
        member.observe(vec![]),
        None,
        "the server's size is not known yet"
    );
    instance.learn_server_max(100);
    member.advertise(1);
    assert_eq!(member.observe(vec![]), Some(1));
    let (view, waits) = instance.stats().fleet.unwrap();
    assert_eq!((view.budget, view.members, waits), (80, 1, 0));
}

#[test]
fn a_member_missing_from_a_read_keeps_its_place_and_one_that_cannot_speak_fences_itself() {
    let (instance, member) = member_of("f", Budget::Absolute(12), 20);
    let other = || {
        vec![Row {
            conn: None,
            text: Some(ad::encode("f", &ad(9, 1, 9, 9, 41))),
        }]
    };
    // The other holds 9: this one has its reserve and no room.
    for _ in 0..3 {
        member.advertise(1);
        assert_eq!(member.observe(other()), Some(1));
    }
    // Gone from two reads (reconnecting, or dead): its place holds, then it is gone.
    let members = || instance.stats().fleet.unwrap().0.members;
    for expected in [2, 2, 1] {
        member.advertise(1);
        member.observe(vec![]);
        assert_eq!(members(), expected);
    }
    let (view, _) = instance.stats().fleet.unwrap();
    assert_eq!(
        (view.seen, view.share),
        (1, 1),
        "idle: one connection wanted"
    );
    // Two rounds without advertising: no more pool connections.
    member.missed();
    assert_eq!(instance.stats().max, 1);
    member.missed();
    assert_eq!(instance.stats().max, 0);
    member.advertise(1);
    assert_eq!(
        member.observe(vec![]),
        Some(1),
        "speaking again, it has its part again"
    );
}
