//! Pool behaviour under tokio's paused clock, with an in-memory connection type.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Duration;

use super::*;

#[derive(Debug)]
struct Conn {
    id: usize,
    closed: Arc<AtomicUsize>,
    /// The server ended it while it sat idle.
    dead: bool,
}

impl PooledConnection for Conn {
    fn close(self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }

    fn is_usable(&mut self) -> bool {
        !self.dead
    }
}

#[derive(Default)]
struct Counter {
    opened: AtomicUsize,
    closed: Arc<AtomicUsize>,
}

struct TestConnector(Arc<Counter>);

impl Connector<Conn> for TestConnector {
    fn connect(&self) -> ConnectFuture<'_, Conn> {
        Box::pin(async move {
            let id = self.0.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Conn {
                id,
                closed: self.0.closed.clone(),
                dead: false,
            })
        })
    }
}

fn settings() -> PoolSettings {
    PoolSettings {
        borrow_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(600),
    }
}

fn pool(instance: &Arc<Instance<Conn>>, counter: &Arc<Counter>, s: PoolSettings) -> Pool<Conn> {
    Pool::new(
        "test".into(),
        instance.clone(),
        Box::new(TestConnector(counter.clone())),
        s,
    )
}

#[tokio::test(start_paused = true)]
async fn cap_is_held_and_waiters_are_served_in_order() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(2), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let a = p.borrow().await.unwrap();
    let b = p.borrow().await.unwrap();
    let (first, second) = (p.clone(), p.clone());
    let w1 = tokio::spawn(async move { first.borrow().await });
    tokio::task::yield_now().await;
    let w2 = tokio::spawn(async move { second.borrow().await });
    tokio::task::yield_now().await;
    assert_eq!(instance.stats().waiting, 2);
    let (a_id, b_id) = (a.id, b.id);
    a.release(true);
    let got1 = w1.await.unwrap().unwrap();
    assert_eq!(got1.id, a_id, "oldest waiter gets the first release");
    b.release(true);
    let got2 = w2.await.unwrap().unwrap();
    assert_eq!(got2.id, b_id);
    assert_eq!(
        counter.opened.load(Ordering::SeqCst),
        2,
        "never more than the cap"
    );
}

#[tokio::test(start_paused = true)]
async fn borrow_times_out_with_the_pool_name() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let _held = p.borrow().await.unwrap();
    let err = p.borrow().await.unwrap_err();
    assert!(matches!(err, BorrowError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("test"));
    assert_eq!(
        instance.stats().waiting,
        0,
        "the timed-out waiter left the queue"
    );
    drop(_held);
    assert_eq!(
        instance.stats().open,
        0,
        "a dropped lease closes its connection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sibling_pools_idle_connection_makes_room() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let a = pool(&instance, &counter, settings());
    let b = pool(&instance, &counter, settings());
    a.borrow().await.unwrap().release(true);
    let lease = b.borrow().await.unwrap();
    assert_eq!(
        counter.closed.load(Ordering::SeqCst),
        1,
        "a's idle connection was evicted"
    );
    assert_eq!(instance.stats().open, 1);
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn release_hands_the_slot_to_another_pools_waiter() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let a = pool(&instance, &counter, settings());
    let b = pool(&instance, &counter, settings());
    let held = a.borrow().await.unwrap();
    let waiter = tokio::spawn(async move { b.borrow().await });
    tokio::task::yield_now().await;
    held.release(true);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.id, 1, "b got a fresh connection of its own");
    assert_eq!(
        counter.closed.load(Ordering::SeqCst),
        1,
        "a's connection was closed for b"
    );
}

#[tokio::test(start_paused = true)]
async fn lifetime_and_idle_trim_close_old_connections() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(4), 100));
    let counter = Arc::new(Counter::default());
    let mut s = settings();
    s.max_lifetime = Duration::from_secs(60);
    s.idle_timeout = Duration::from_secs(10);
    let p = pool(&instance, &counter, s);
    p.borrow().await.unwrap().release(true);
    tokio::time::advance(Duration::from_secs(61)).await;
    let fresh = p.borrow().await.unwrap();
    assert_eq!(fresh.id, 1, "the expired idle connection was not reused");
    tokio::task::yield_now().await; // closes run in tasks of their own
    assert_eq!(counter.closed.load(Ordering::SeqCst), 1);
    fresh.release(true);
    assert_eq!(instance.trim(s.idle_timeout, s.max_lifetime), 0);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(instance.trim(s.idle_timeout, s.max_lifetime), 1);
    assert_eq!(
        instance.stats(),
        InstanceStats {
            max: 4,
            ..Default::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn idle_cap_trims_the_surplus() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(4), 50));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let leases: Vec<_> = futures_join(&p, 4).await;
    leases.into_iter().for_each(|l| l.release(true));
    assert_eq!(instance.stats().idle, 4);
    let trim = || instance.trim(Duration::from_secs(600), Duration::from_secs(3600));
    assert_eq!(
        trim(),
        0,
        "the surplus is kept while it was in use recently"
    );
    tokio::time::advance(Duration::from_secs(200)).await;
    // One connection in use again: it returns to the back, the newest idle one.
    p.borrow().await.unwrap().release(true);
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_eq!(
        trim(),
        2,
        "idle for half the idle timeout, the surplus closes"
    );
    assert_eq!(instance.stats().idle, 2);
    tokio::time::advance(Duration::from_secs(200)).await;
    assert_eq!(trim(), 0, "the cap holds 2 however long they are idle");
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_eq!(trim(), 1, "the idle timeout closes the older one");
    assert_eq!(trim(), 0, "the one used at 200 s has 200 s to go");
}

#[tokio::test(start_paused = true)]
async fn percent_limit_waits_for_the_server_max() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Percent(50), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    assert!(instance.needs_server_max());
    let first = p.borrow().await.unwrap();
    let q = p.clone();
    let waiter = tokio::spawn(async move { q.borrow().await });
    tokio::task::yield_now().await;
    instance.learn_server_max(10);
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(second.id, 1);
    assert_eq!(instance.stats().max, 5);
    drop(first);
}

async fn futures_join(p: &Pool<Conn>, n: usize) -> Vec<Lease<Conn>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(p.borrow().await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn try_borrow_idle_takes_only_what_is_idle_and_alive() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(2), 100));
    let counter = Arc::new(Counter::default());
    let mut s = settings();
    s.max_lifetime = Duration::from_secs(60);
    let p = pool(&instance, &counter, s);
    assert!(
        p.try_borrow_idle(Instant::now()).is_none(),
        "nothing idle: no connect, no wait"
    );
    assert_eq!(
        instance.stats(),
        InstanceStats {
            max: 2,
            ..Default::default()
        }
    );
    p.borrow().await.unwrap().release(true);
    let lease = p
        .try_borrow_idle(Instant::now())
        .expect("the idle connection");
    assert_eq!(lease.id, 0);
    lease.release(true);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        p.try_borrow_idle(Instant::now()).is_none(),
        "expired idle connections are closed, not lent"
    );
    tokio::task::yield_now().await; // closes run in tasks of their own
    assert_eq!(counter.closed.load(Ordering::SeqCst), 1);
    assert_eq!(instance.stats().open, 0);
}

/// A connector that never answers, to drop a borrow mid-connect.
struct Stuck;

impl Connector<Conn> for Stuck {
    fn connect(&self) -> ConnectFuture<'_, Conn> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_borrow_dropped_mid_login_or_mid_wait_gives_its_slot_back() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let stuck = Pool::new(
        "stuck".into(),
        instance.clone(),
        Box::new(Stuck),
        settings(),
    );
    let connecting = tokio::spawn({
        let p = stuck.clone();
        async move { p.borrow().await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        instance.stats().open,
        1,
        "the slot is reserved while connecting"
    );
    connecting.abort();
    let _ = connecting.await;
    assert_eq!(
        instance.stats().open,
        1,
        "the login runs on without its borrower, for whoever asks next"
    );
    tokio::time::sleep(settings().connect_timeout + Duration::from_millis(1)).await;
    assert_eq!(
        instance.stats().open,
        0,
        "the login's timeout gave the slot back"
    );

    // A waiter granted a connection in the same instant it is dropped hands it back.
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let held = p.borrow().await.unwrap();
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.borrow().await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    held.release(true); // granted to the waiter ...
    waiter.abort(); // ... which is dropped before it runs
    let _ = waiter.await;
    let stats = instance.stats();
    assert_eq!(
        (stats.open, stats.idle),
        (1, 1),
        "the connection went back to the pool"
    );
    assert!(p.try_borrow_idle(Instant::now()).is_some());
}

#[tokio::test(start_paused = true)]
async fn connections_the_server_ended_while_idle_are_closed_not_handed_out() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(3), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let mut leases: Vec<_> = Vec::new();
    for _ in 0..3 {
        leases.push(p.borrow().await.unwrap());
    }
    let alive = leases[0].id;
    for lease in &mut leases[1..] {
        lease.dead = true;
    }
    // Released dead last, so the idle list hands them out first (most recently used).
    for lease in leases {
        lease.release(true);
    }
    let got = p.try_borrow_idle(Instant::now()).unwrap();
    assert_eq!(got.id, alive);
    tokio::task::yield_now().await; // closes run in tasks of their own
    assert_eq!(counter.closed.load(Ordering::SeqCst), 2);
    got.release(true);
    let mut got = p.borrow().await.unwrap();
    assert_eq!(got.id, alive);
    got.dead = true;
    got.release(true);
    let fresh = p.borrow().await.unwrap();
    assert_eq!(
        fresh.id, 3,
        "a dead idle connection makes way for a new one"
    );
    tokio::task::yield_now().await;
    assert_eq!(counter.closed.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_busy_pool_does_not_starve_a_sibling_that_waited_longer() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let busy = pool(&instance, &counter, settings());
    let newcomer = pool(&instance, &counter, settings());
    let held = busy.borrow().await.unwrap();
    let n = newcomer.clone();
    let waits_longer = tokio::spawn(async move { n.borrow().await });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(10)).await;
    let b = busy.clone();
    let waits_less = tokio::spawn(async move { b.borrow().await });
    tokio::task::yield_now().await;
    held.release(true);
    let got = waits_longer.await.unwrap().unwrap();
    assert_eq!(
        got.id, 1,
        "the sibling connects in the slot the busy pool gave back"
    );
    assert_eq!(counter.closed.load(Ordering::SeqCst), 1);
    assert!(!waits_less.is_finished(), "the busy pool waits its turn");
    got.release(true);
    assert!(waits_less.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_cap_grants_waiters_and_trims_idle_connections() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    let held = p.borrow().await.unwrap();
    let w = p.clone();
    let waiter = tokio::spawn(async move { w.borrow().await });
    tokio::task::yield_now().await;
    instance.reconfigure(Limit::Absolute(2), 100);
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(instance.stats().open, 2);
    held.release(true);
    second.release(true);
    assert_eq!(instance.stats().idle, 2);
    instance.reconfigure(Limit::Absolute(1), 100);
    assert_eq!(
        instance.stats(),
        InstanceStats {
            max: 1,
            open: 1,
            idle: 1,
            waiting: 0,
            fleet: None,
        }
    );
    tokio::task::yield_now().await; // closes run in tasks of their own
    assert_eq!(counter.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fleet_share_caps_the_pool_and_counts_the_waits_it_causes() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(2), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, settings());
    instance.join_fleet();
    let share = |share| FleetView {
        budget: 10,
        seen: 0,
        members: 2,
        share,
    };
    instance.set_fleet_view(share(1));
    let a = p.borrow().await.unwrap();
    let waiter = p.clone();
    let w = tokio::spawn(async move { waiter.borrow().await });
    tokio::task::yield_now().await;
    let waits = |i: &Instance<Conn>| i.stats().fleet.map(|(_, w)| w);
    assert_eq!(
        waits(&instance),
        Some(1),
        "the share, not the own cap, stopped it"
    );
    // A larger share serves the waiter at once.
    instance.set_fleet_view(share(5));
    let b = w.await.unwrap().unwrap();
    assert_eq!(instance.stats().max, 2, "never above the process's own cap");
    // At the own cap, a wait is not the budget's.
    let waiter = p.clone();
    let w = tokio::spawn(async move { waiter.borrow().await });
    tokio::task::yield_now().await;
    assert_eq!(waits(&instance), Some(1));
    let sample = instance.fleet_sample();
    assert_eq!((sample.borrowed_peak, sample.waiting_peak), (2, 1));
    // A smaller share closes what comes back above it.
    instance.set_fleet_view(share(1));
    a.release(true);
    b.release(true);
    let c = w.await;
    assert!(c.is_ok());
    drop(c);
    assert!(instance.stats().open <= 1, "{:?}", instance.stats());
}

/// A connection whose server lets it go only when the test says so.
struct Lingering(Option<tokio::sync::oneshot::Receiver<()>>);

impl PooledConnection for Lingering {
    fn close(self) {}
    fn is_usable(&mut self) -> bool {
        true
    }
    fn close_confirmed(
        mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            if let Some(gone) = self.0.take() {
                let _ = gone.await;
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_holds_its_slot_until_the_server_let_it_go() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(2), 100));
    let index = instance.add_pool();
    assert!(matches!(
        instance.take(
            index,
            Duration::from_secs(60),
            Instant::now() + Duration::from_secs(60)
        ),
        instance::Take::Connect
    ));
    let (gone, lingering) = tokio::sync::oneshot::channel();
    let conn = instance::Pooled::new(Lingering(Some(lingering)), 0);
    instance.login_done(index);
    instance.put(index, conn, false, Duration::from_secs(60), Instant::now());
    tokio::task::yield_now().await;
    assert_eq!(instance.stats().open, 0);
    // One slot is free, the other still closing on the server.
    assert!(matches!(
        instance.take(
            index,
            Duration::from_secs(60),
            Instant::now() + Duration::from_secs(60)
        ),
        instance::Take::Connect
    ));
    instance.login_done(index);
    let instance::Take::Wait(rx) = instance.take(
        index,
        Duration::from_secs(60),
        Instant::now() + Duration::from_secs(60),
    ) else {
        panic!("the closing connection's slot was handed out");
    };
    gone.send(()).unwrap();
    assert!(matches!(rx.await, Ok(instance::Grant::Slot)));
}

/// Found by `my_proxy::pymysql_and_connector_over_a_small_pool` (PyMySQL and mysql-connector
/// sessions land in different pools): the server counted the evicted connection and its
/// replacement at once, one more than the cap.
#[tokio::test(start_paused = true)]
async fn an_evicted_sibling_makes_room_only_once_the_server_let_it_go() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let (a, b) = (instance.add_pool(), instance.add_pool());
    let life = Duration::from_secs(60);
    assert!(matches!(
        instance.take(a, life, Instant::now() + life),
        instance::Take::Connect
    ));
    let (gone, lingering) = tokio::sync::oneshot::channel();
    let conn = instance::Pooled::new(Lingering(Some(lingering)), 0);
    instance.login_done(a);
    instance.put(a, conn, true, life, Instant::now());
    assert_eq!(instance.stats().idle, 1);
    let instance::Take::Wait(mut rx) = instance.take(b, life, Instant::now() + life) else {
        panic!("a connection was opened while the evicted one still lingered on the server");
    };
    tokio::task::yield_now().await;
    assert_eq!((instance.stats().open, instance.stats().idle), (0, 0));
    assert!(
        rx.try_recv().is_err(),
        "granted before the server let it go"
    );
    gone.send(()).unwrap();
    assert!(matches!(rx.await, Ok(instance::Grant::Slot)));
}

mod logins;

mod expiry;
