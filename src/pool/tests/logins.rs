//! Server logins under tokio's paused clock: how many run at once, and who gets a connection
//! while one is slow.

use super::*;
use crate::errors::{ConnectError, Rejected};

/// A connector whose logins from the `slow_from`th on take `delay`, or fail after it.
struct Slow {
    counter: Arc<Counter>,
    slow_from: usize,
    delay: Duration,
    fail: Option<ConnectError>,
    running: Arc<Running>,
}

fn unreachable() -> ConnectError {
    ConnectError::Unreachable {
        instance: "i".into(),
        reason: "scripted".into(),
    }
}

fn refused(rejected: Rejected) -> ConnectError {
    ConnectError::Refused {
        instance: "i".into(),
        rejected,
        code: "53300".into(),
        message: "too many connections for role".into(),
    }
}

/// Logins running now, and the most that ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connector<Conn> for Slow {
    fn connect(&self) -> ConnectFuture<'_, Conn> {
        Box::pin(async move {
            let id = self.counter.opened.fetch_add(1, Ordering::SeqCst);
            let now = self.running.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.running.most.fetch_max(now, Ordering::SeqCst);
            let _done = Decrement(&self.running.now);
            if id >= self.slow_from {
                tokio::time::sleep(self.delay).await;
                if let Some(e) = &self.fail {
                    return Err(e.clone());
                }
            }
            Ok(Conn {
                id,
                closed: self.counter.closed.clone(),
                dead: false,
            })
        })
    }
}

struct Rig {
    instance: Arc<Instance<Conn>>,
    counter: Arc<Counter>,
    running: Arc<Running>,
    pool: Pool<Conn>,
}

fn rig(cap: usize, slow_from: usize, delay_ms: u64, fail: Option<ConnectError>) -> Rig {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(cap), 100));
    let counter = Arc::new(Counter::default());
    let running = Arc::new(Running::default());
    let connector = Slow {
        counter: counter.clone(),
        slow_from,
        delay: Duration::from_millis(delay_ms),
        fail,
        running: running.clone(),
    };
    let pool = Pool::new(
        "test".into(),
        instance.clone(),
        Box::new(connector),
        settings(),
    );
    Rig {
        instance,
        counter,
        running,
        pool,
    }
}

/// `n` borrowers at once, each keeping its lease (long transactions): when each was served.
async fn burst(p: &Pool<Conn>, n: usize) -> (Vec<Lease<Conn>>, Vec<Duration>) {
    let asked = Instant::now();
    let borrowers: Vec<_> = (0..n)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.borrow().await.map(|l| (l, asked.elapsed())) })
        })
        .collect();
    let (mut leases, mut waited) = (Vec::new(), Vec::new());
    for b in borrowers {
        let (lease, w) = b.await.unwrap().unwrap();
        leases.push(lease);
        waited.push(w);
    }
    (leases, waited)
}

/// Found cold-filling a pool under 1,000 clients (`benches/load/cold.sh`): a borrower waited
/// for its own login while connections came back. Like PgBouncer's queue, it now takes the
/// first connection ready, and its login, when done, serves the next borrower.
#[tokio::test(start_paused = true)]
async fn a_borrower_takes_a_connection_released_while_its_login_runs() {
    // Room under the cap: the login's 10 ms rule must not push its own borrower out of the
    // queue (review of the first version).
    let r = rig(3, 1, 800, None);
    let held = r.pool.borrow().await.unwrap();
    let asked = Instant::now();
    let waiter = tokio::spawn({
        let p = r.pool.clone();
        async move { p.borrow().await.map(|l| (l, Instant::now())) }
    });
    tokio::time::sleep(Duration::from_millis(25)).await;
    assert_eq!(
        r.instance.stats().open,
        2,
        "one login runs for the borrower"
    );
    held.release(true);
    let (lease, at) = waiter.await.unwrap().unwrap();
    assert_eq!(
        lease.id, 0,
        "the released connection, not the one still logging in"
    );
    assert_eq!(
        at - asked,
        Duration::from_millis(25),
        "served at the release"
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = r.instance.stats();
    assert_eq!(
        (stats.open, stats.idle),
        (2, 1),
        "the login's connection waits idle"
    );
    let next = r
        .pool
        .try_borrow_idle(Instant::now())
        .expect("the login's connection");
    assert_eq!(next.id, 1);
    assert_eq!(r.counter.opened.load(Ordering::SeqCst), 2);
}

/// A failed login still reaches the borrower that waits for it at once, not at the borrow
/// timeout, and gives its slot back.
#[tokio::test(start_paused = true)]
async fn a_failed_login_fails_its_borrower_at_once() {
    let r = rig(1, 0, 800, Some(unreachable()));
    let asked = Instant::now();
    let err = r.pool.borrow().await.unwrap_err();
    assert!(matches!(err, BorrowError::Connect(_)), "{err}");
    assert_eq!(asked.elapsed(), Duration::from_millis(800));
    assert_eq!(r.instance.stats().open, 0, "the slot was given back");
}

/// A borrower served by a release leaves its login running; if that login fails, nobody waits
/// for it and the slot goes back.
#[tokio::test(start_paused = true)]
async fn a_login_nobody_waits_for_gives_its_slot_back_when_it_fails() {
    let r = rig(2, 1, 800, Some(unreachable()));
    let held = r.pool.borrow().await.unwrap();
    let waiter = tokio::spawn({
        let p = r.pool.clone();
        async move { p.borrow().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    held.release(true);
    let lease = waiter.await.unwrap().unwrap();
    assert_eq!(lease.id, 0);
    assert_eq!(r.instance.stats().open, 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        r.instance.stats().open,
        1,
        "the failed login gave its slot back"
    );
}

/// Quick logins run one at a time, as PgBouncer's do: on a cold pool under 1,000 clients, nine
/// at once made the slowest transaction 24.4 ms, one at a time 6.1 (`benches/load/cold.sh`).
#[tokio::test(start_paused = true)]
async fn quick_logins_run_one_at_a_time() {
    let r = rig(4, 0, 2, None);
    let (leases, waited) = burst(&r.pool, 4).await;
    assert_eq!(leases.len(), 4);
    assert_eq!(
        r.running.most.load(Ordering::SeqCst),
        1,
        "logins ran at once"
    );
    assert_eq!(
        waited.iter().max(),
        Some(&Duration::from_millis(8)),
        "{waited:?}"
    );
    assert_eq!(r.counter.opened.load(Ordering::SeqCst), 4);
}

/// A login lets another start beside it every `SLOW_LOGIN` it runs, so long transactions
/// against a distant server are not served one login at a time.
#[tokio::test(start_paused = true)]
async fn slow_logins_let_another_start_beside_them() {
    let r = rig(4, 0, 100, None);
    let (leases, waited) = burst(&r.pool, 4).await;
    assert_eq!(leases.len(), 4);
    assert_eq!(r.running.most.load(Ordering::SeqCst), 4);
    // 100 ms logins: one at 0 ms, a second at 10, both let one more start at 20. The last is
    // done at 120 ms, not 400 (one at a time) or 130 (one more per 10 ms).
    assert_eq!(
        waited.iter().max(),
        Some(&Duration::from_millis(120)),
        "{waited:?}"
    );
    assert_eq!(r.instance.stats().open, 4, "never above the cap");
}

/// A drain (the instance went down or lost its role) sends a borrower whose login runs to route
/// again, and the login's connection, of the old generation, is closed when it arrives.
#[tokio::test(start_paused = true)]
async fn a_drain_during_a_login_routes_its_borrower_again_and_closes_what_it_opened() {
    let r = rig(2, 0, 100, None);
    let borrower = tokio::spawn({
        let p = r.pool.clone();
        async move { p.borrow().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    r.instance.drain();
    let err = borrower.await.unwrap().unwrap_err();
    assert!(matches!(err, BorrowError::Closed { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = r.instance.stats();
    assert_eq!((stats.open, stats.idle), (0, 0), "{stats:?}");
    assert_eq!(r.counter.closed.load(Ordering::SeqCst), 1);
}

/// At the cap, a connection released by one pool is not closed for another pool's borrower
/// whose own login runs: that login serves it (review of the first version).
#[tokio::test(start_paused = true)]
async fn a_release_is_not_closed_for_a_sibling_whose_login_runs() {
    let r = rig(2, 1, 800, None);
    let other = Pool::new(
        "other".into(),
        r.instance.clone(),
        Box::new(Slow {
            counter: r.counter.clone(),
            slow_from: 0,
            delay: Duration::from_millis(800),
            fail: None,
            running: r.running.clone(),
        }),
        settings(),
    );
    let held = r.pool.borrow().await.unwrap();
    let sibling = tokio::spawn(async move { other.borrow().await.map(|l| l.id) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        r.instance.stats().open,
        2,
        "at the cap, the sibling logging in"
    );
    held.release(true);
    let stats = r.instance.stats();
    assert_eq!((stats.open, stats.idle), (2, 1), "the release stays idle");
    assert_eq!(r.counter.closed.load(Ordering::SeqCst), 0);
    assert_eq!(
        sibling.await.unwrap().unwrap(),
        1,
        "served by its own login"
    );
}

/// A connector that panics once, then connects.
struct PanicsOnce(AtomicUsize, Arc<Counter>);

impl Connector<Conn> for PanicsOnce {
    fn connect(&self) -> ConnectFuture<'_, Conn> {
        let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            assert!(!first, "the connector's bug");
            Ok(Conn {
                id: self.1.opened.fetch_add(1, Ordering::SeqCst),
                closed: self.1.closed.clone(),
                dead: false,
            })
        })
    }
}

/// A login whose connector panics gives its slot back: with one login at a time, a slot kept
/// would stop the pool's logins for good (review of the first version).
#[tokio::test(start_paused = true)]
async fn a_panicking_login_gives_its_slot_back() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let connector = PanicsOnce(AtomicUsize::new(0), counter.clone());
    let p = Pool::new(
        "test".into(),
        instance.clone(),
        Box::new(connector),
        settings(),
    );
    let err = p.borrow().await.unwrap_err();
    assert!(matches!(err, BorrowError::Closed { .. }), "{err}");
    assert_eq!(instance.stats().open, 0);
    let next = p.borrow().await.expect("the next login runs");
    assert_eq!(next.id, 0);
}

/// `n` borrowers at once: what each got, and when.
async fn outcomes(p: &Pool<Conn>, n: usize) -> Vec<(Result<usize, BorrowError>, Duration)> {
    let asked = Instant::now();
    let borrowers: Vec<_> = (0..n)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { (p.borrow().await.map(|l| l.id), asked.elapsed()) })
        })
        .collect();
    let mut got = Vec::new();
    for b in borrowers {
        got.push(b.await.unwrap());
    }
    got
}

/// A refused login answers every borrower waiting for the empty pool at once, as PgBouncer
/// answers its waiting clients with the server's error; each heard it from a login of its own,
/// one after another, before (the real server's case is in `tests/it/pg_config.rs`).
#[tokio::test(start_paused = true)]
async fn a_refused_login_answers_every_borrower_waiting_for_the_empty_pool() {
    let r = rig(4, 0, 5, Some(refused(Rejected::TooManyConnections)));
    for (got, at) in outcomes(&r.pool, 6).await {
        let err = got.unwrap_err();
        assert!(
            matches!(&err, BorrowError::Connect(e) if e.refuses_every_login()),
            "{err}"
        );
        assert_eq!(at, Duration::from_millis(5), "answered by the first login");
    }
    assert_eq!(r.counter.opened.load(Ordering::SeqCst), 1, "one login");
    assert_eq!(r.instance.stats().open, 0);
    assert_eq!(r.instance.stats().waiting, 0);
}

/// A server starting up (57P03) may take the next login, so its refusal answers only its own
/// borrower, as PgBouncer lets its clients wait on; so does an unreachable instance, whose
/// borrowers route again.
#[tokio::test(start_paused = true)]
async fn a_passing_refusal_answers_only_its_own_borrower() {
    for fail in [refused(Rejected::NotReady), unreachable()] {
        let r = rig(4, 0, 5, Some(fail));
        let got = outcomes(&r.pool, 3).await;
        assert!(got.iter().all(|(g, _)| g.is_err()), "{got:?}");
        assert_eq!(r.counter.opened.load(Ordering::SeqCst), 3, "a login each");
    }
}

/// Waiters of a pool that still holds a connection wait for it: one that comes back serves
/// them, so a refusal answers only the borrower whose login it was.
#[tokio::test(start_paused = true)]
async fn a_refusal_leaves_the_waiters_of_a_pool_with_a_connection_waiting() {
    let r = rig(2, 1, 5, Some(refused(Rejected::TooManyConnections)));
    let held = r.pool.borrow().await.unwrap();
    let got = tokio::spawn({
        let p = r.pool.clone();
        async move { outcomes(&p, 2).await }
    });
    // The first waiter's login is refused at 5 ms; the second's at 10 ms, unless the held
    // connection comes back first.
    tokio::time::sleep(Duration::from_millis(7)).await;
    held.release(true);
    let got = got.await.unwrap();
    assert!(got[0].0.is_err(), "{got:?}");
    assert_eq!(got[1].0.as_ref().ok(), Some(&0), "{got:?}");
    assert_eq!(r.counter.opened.load(Ordering::SeqCst), 3);
}
