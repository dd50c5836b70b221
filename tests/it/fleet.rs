//! A fleet of three sluice processes sharing one connection budget per instance, on a real
//! PostgreSQL (pgbench) and a real MariaDB (sysbench): the server's own count of the fleet's
//! connections, sampled every 100 ms, never passes the budget; every process makes progress;
//! and when two of them stop (one by SIGKILL), the third grows past its share within 5 s.

mod maria;
mod pg;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::get;
use crate::support::sluice::Sluice;
use crate::support::tools::free_port;

/// The budget the issue names: three processes, twelve connections.
const BUDGET: usize = 12;
const FLEET: &str = "orders-api";

/// `yaml` (from a `config_for*` helper) with a fleet budget and an admin port.
fn with_fleet(yaml: &str, admin: u16) -> String {
    let borrow = "      connection_borrow_timeout: 60s\n";
    assert!(yaml.contains(borrow), "{yaml}");
    let fleet = format!("      fleet: {{ name: {FLEET}, max_connections: {BUDGET} }}\n");
    let yaml = yaml.replacen(borrow, &format!("{borrow}{fleet}"), 1);
    // A stopped member drains for a second, not the default five: the survivor's 5 s to grow
    // start at the signal.
    format!("{yaml}shutdown_grace: 1s\nadmin:\n  listen: 127.0.0.1:{admin}\n")
}

/// One process of the fleet and its admin port.
struct Member {
    proxy: Sluice,
    admin: u16,
}

impl Member {
    fn start(yaml: &str, secrets: &str) -> Self {
        let admin = free_port();
        let proxy = Sluice::start_with_secrets(&with_fleet(yaml, admin), secrets);
        Self { proxy, admin }
    }

    /// A fleet series of the one instance, from a fresh scrape.
    fn fleet(&self, series: &str) -> Option<f64> {
        let (_, body) = get(self.admin, "/metrics");
        let prefix = format!("sluice_{series}{{");
        body.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// SIGTERM: the process drains (`shutdown_grace`, then its sessions end) and exits.
    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits for the exit a [`Member::terminate`] asked for.
    fn wait_exit(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.proxy.try_wait().is_none() {
            assert!(Instant::now() < deadline, "sluice did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&self) {
        self.signal("-KILL");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.proxy.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }
}

/// The fleet's metric families, as exposed (OpenMetrics names) and as docs/metrics.md lists
/// them, agree.
fn assert_fleet_families_documented(member: &Member) {
    let accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
    let (_, open) = crate::metrics::get_with(member.admin, "/metrics", accept);
    let fleet = |names: Vec<String>| {
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with("sluice_fleet_"))
            .collect();
        names.sort();
        names
    };
    let exposed = fleet(crate::metrics::families(&open));
    assert_eq!(exposed.len(), 5, "{open}");
    assert_eq!(exposed, fleet(crate::metrics::documented()));
}

/// A load tool's output once it ended, after checking it exited well.
fn finished(child: std::process::Child, who: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{who}: the load failed:\n{text}");
    text
}

/// The number after `key` on the first line of `text` that starts with it (indent ignored).
fn number(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Waits until every member sees all `n` of them.
fn wait_members(members: &[&Member], n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for m in members {
        while m.fleet("fleet_members") != Some(n) {
            assert!(
                Instant::now() < deadline,
                "members: {:?}, share {:?}",
                m.fleet("fleet_members"),
                m.fleet("fleet_share_connections")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The server's count of the fleet's connections, every 100 ms, until dropped.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, usize)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(count: impl Fn() -> usize + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = count();
                    samples.lock().unwrap().push((Instant::now(), n));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// The samples taken since `since`.
    fn since(&self, since: Instant) -> Vec<usize> {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The checks both engines share, once the load of all three has run (`during` the load's
/// samples): never over the budget, and the budget used.
fn assert_within_budget(samples: &[usize], what: &str) {
    assert!(
        samples.len() >= 10,
        "{what}: only {} samples",
        samples.len()
    );
    let max = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{what}: {} samples, at most {max} connections",
        samples.len()
    );
    assert!(
        max <= BUDGET,
        "{what}: the fleet held {max} connections, over its budget of {BUDGET}: {samples:?}"
    );
    assert!(
        max >= BUDGET - 2,
        "{what}: three busy processes never came near the budget ({max}): {samples:?}"
    );
}

/// Waits up to 5 s until `member`'s share reaches `at_least`.
fn wait_share(member: &Member, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let share = member.fleet("fleet_share_connections").unwrap_or(0.0);
        if share >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "alone and busy, the share is still {share}, not {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After two members stopped: waits until the survivor's share passed `fair` (its pool part
/// of three) and the server showed the fleet holding more than `fair_total` (a third of the
/// budget); panics past 5 s.
fn wait_growth(
    survivor: &Member,
    stopped: Instant,
    (fair, fair_total): (f64, usize),
    held: impl Fn() -> usize,
) {
    loop {
        let share = survivor.fleet("fleet_share_connections").unwrap_or(0.0);
        let open = held();
        if share > fair && open > fair_total {
            assert!(
                stopped.elapsed() <= Duration::from_secs(5),
                "the survivor grew only {:?} after two members stopped",
                stopped.elapsed()
            );
            eprintln!(
                "survivor grew to a share of {share} ({open} connections) {:?} after the stop",
                stopped.elapsed()
            );
            return;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the survivor's share is still {share} ({open} open) 5 s after two members stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How an engine's test drives the shared scenario: a load of 40 clients through a member for
/// some seconds, its transaction count once it ended well, and the server's count of the
/// fleet's connections.
struct Drive<L, F, N> {
    load: L,
    finish: F,
    count: N,
    /// A member's pool part when three are busy, and when it is alone.
    share_of_three: f64,
    alone: f64,
}

/// The scenario: three members busy, never over the budget, each making progress and
/// waiting for the budget; then, busy again, one killed and one stopped, and the third grows
/// past its part within 5 s and to the whole budget once the stopped one is gone.
fn three_busy_then_two_stop<L, F, N>(members: Vec<Member>, drive: Drive<L, F, N>)
where
    L: Fn(&Member, u32) -> std::process::Child,
    F: Fn(std::process::Child, &str) -> u64,
    N: Fn() -> usize + Clone + Send + 'static,
{
    wait_members(&members.iter().collect::<Vec<_>>(), 3.0);
    let started = Instant::now();
    let sampler = Sampler::start(drive.count.clone());
    let loads: Vec<_> = members.iter().map(|m| (drive.load)(m, 8)).collect();
    for (i, load) in loads.into_iter().enumerate() {
        let n = (drive.finish)(load, &format!("process {i}"));
        assert!(n > 0, "process {i} made no progress");
        eprintln!("process {i}: {n} transactions");
    }
    assert_within_budget(&sampler.since(started), "three busy processes");
    for m in &members {
        let waits = m.fleet("fleet_borrow_waits_total").unwrap_or(0.0);
        assert!(
            waits > 0.0,
            "40 clients on a small share never waited for the budget"
        );
    }

    // All three busy again; one dies (SIGKILL: its connections vanish with its sockets), one
    // stops (SIGTERM: it drains).
    let mut loads: Vec<_> = members.iter().map(|m| (drive.load)(m, 10)).collect();
    std::thread::sleep(Duration::from_secs(3));
    let stopped = Instant::now();
    members[0].kill9();
    members[1].terminate();
    let mut rest = members.into_iter();
    let killed = rest.next();
    let draining = rest.next().unwrap();
    let survivor = rest.next().unwrap();
    let fair = (drive.share_of_three, BUDGET / 3);
    wait_growth(&survivor, stopped, fair, drive.count);
    let busy = loads.pop().unwrap();
    // The stopped ones' load lost its sessions: only its exit is awaited.
    loads.into_iter().for_each(|l| drop(l.wait_with_output()));
    // Once the drained one is gone too, the survivor has the whole budget but its own
    // overhead.
    draining.wait_exit();
    wait_share(&survivor, drive.alone);
    assert!((drive.finish)(busy, "the survivor") > 0);
    drop(killed);
    assert_within_budget(&sampler.since(started), "after two stopped");
}
