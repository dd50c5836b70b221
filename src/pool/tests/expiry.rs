//! Queued borrowers time out at their own deadlines, answered by the instance's expiry task
//! rather than a timer of their own.

use super::*;

fn timeout_of(secs: f64) -> PoolSettings {
    PoolSettings {
        borrow_timeout: Duration::from_secs_f64(secs),
        ..settings()
    }
}

#[tokio::test(start_paused = true)]
async fn each_waiter_times_out_at_its_own_deadline_and_leaves_the_queue() {
    let instance = Arc::new(Instance::new("i".into(), Limit::Absolute(1), 100));
    let counter = Arc::new(Counter::default());
    let p = pool(&instance, &counter, timeout_of(1.0));
    let _held = p.borrow().await.unwrap();
    let start = Instant::now();
    let waiter = |p: Pool<Conn>| {
        tokio::spawn(async move {
            let err = p.borrow().await.unwrap_err();
            assert!(matches!(err, BorrowError::Timeout { .. }), "{err}");
            start.elapsed()
        })
    };
    let a = waiter(p.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = waiter(p.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(instance.stats().waiting, 2);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.as_millis(), 1000, "A joined at 0 ms");
    assert_eq!(b.as_millis(), 1400, "B joined at 400 ms");
    assert_eq!(
        instance.stats().waiting,
        0,
        "expired waiters leave the queue"
    );
}

/// A reload may shorten the borrow timeout: a later waiter's earlier deadline wakes the
/// expiry task, which slept for the first one's.
#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_behind_a_later_one_is_kept() {
    let instance = Arc::new(Instance::<Conn>::new("i".into(), Limit::Absolute(1), 100));
    let index = instance.add_pool();
    let life = Duration::from_secs(60);
    let now = Instant::now();
    assert!(matches!(
        instance.take(index, life, now),
        instance::Take::Connect
    ));
    let instance::Take::Wait(mut late) = instance.take(index, life, now + Duration::from_secs(10))
    else {
        panic!("no room was left");
    };
    let instance::Take::Wait(soon) = instance.take(index, life, now + Duration::from_secs(1))
    else {
        panic!("no room was left");
    };
    assert!(matches!(soon.await, Ok(instance::Grant::Expired)));
    assert_eq!(now.elapsed().as_millis(), 1000);
    assert!(late.try_recv().is_err(), "the later waiter still waits");
    assert_eq!(instance.stats().waiting, 1);
}

/// The task goes when its runtime does (a test's, a fuzz input's): a later waiter must start
/// another rather than wait on a task that no longer runs.
#[test]
fn a_waiter_after_the_expiry_task_was_dropped_starts_another() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let instance = Arc::new(Instance::<Conn>::new("i".into(), Limit::Absolute(1), 100));
    let index = instance.add_pool();
    let life = Duration::from_secs(60);
    let first = runtime();
    // Its waiter stays queued (the receiver kept) after its runtime is gone.
    let mut abandoned = None;
    first.block_on(async {
        let now = Instant::now();
        assert!(matches!(
            instance.take(index, life, now),
            instance::Take::Connect
        ));
        let instance::Take::Wait(rx) = instance.take(index, life, now + Duration::from_secs(10))
        else {
            panic!("no room was left");
        };
        tokio::task::yield_now().await;
        abandoned = Some(rx);
    });
    drop(first);
    runtime().block_on(async {
        let instance::Take::Wait(rx) =
            instance.take(index, life, Instant::now() + Duration::from_secs(1))
        else {
            panic!("no room was left");
        };
        let got = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(
            matches!(got, Ok(Ok(instance::Grant::Expired))),
            "never answered"
        );
    });
}
