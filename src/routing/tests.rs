//! Routing over hand-made snapshots: writer, least-busy reader, lag limit, fallback, waiting.

use super::*;

fn member(healthy: bool, writable: bool, lag_s: u64) -> MemberView {
    MemberView {
        healthy,
        writable,
        lag: Some(Duration::from_secs(lag_s)),
        position: Some(lag_s),
    }
}

fn router(n: usize) -> (Router, Vec<Arc<AtomicUsize>>) {
    let load: Vec<_> = (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    (
        Router::new(load.clone().into(), Duration::from_secs(10)),
        load,
    )
}

fn topology(writer: Option<usize>, members: Vec<MemberView>) -> Topology {
    Topology {
        epoch: 1,
        writer,
        failovers: 0,
        members: members.into(),
    }
}

#[test]
fn readers_by_load_skipping_lagging_and_down_ones() {
    let (r, load) = router(4);
    r.publish(topology(
        Some(0),
        vec![
            member(true, true, 0),
            member(true, false, 0),
            member(true, false, 0),
            member(true, false, 60),
        ],
    ));
    assert_eq!(r.pick(Want::Writer), Some(0));
    load[1].store(3, Ordering::Relaxed);
    for _ in 0..4 {
        assert_eq!(r.pick(Want::Reader { fallback: false }), Some(2));
    }
    load[2].store(5, Ordering::Relaxed);
    assert_eq!(r.pick(Want::Reader { fallback: false }), Some(1));
    // Equal loads share the work.
    load[1].store(0, Ordering::Relaxed);
    load[2].store(0, Ordering::Relaxed);
    let picks: std::collections::HashSet<_> = (0..4)
        .filter_map(|_| r.pick(Want::Reader { fallback: false }))
        .collect();
    assert_eq!(picks, [1, 2].into_iter().collect());
    let t = r.snapshot();
    assert_eq!(
        r.reader(&t, Some(1)),
        None,
        "positions 0 have not reached 1"
    );
}

#[test]
fn without_readers_only_fallback_reaches_the_writer() {
    let (r, _) = router(2);
    r.publish(topology(
        Some(0),
        vec![member(true, true, 0), member(false, false, 0)],
    ));
    assert_eq!(r.pick(Want::Reader { fallback: false }), None);
    assert_eq!(r.pick(Want::Reader { fallback: true }), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_borrow_waits_for_the_next_writer_or_its_deadline() {
    let (r, _) = router(2);
    let r = Arc::new(r);
    r.publish(topology(
        None,
        vec![member(false, true, 0), member(true, false, 0)],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.route(Want::Writer, deadline).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    r.publish(topology(
        Some(1),
        vec![member(false, true, 0), member(true, true, 0)],
    ));
    assert_eq!(waiter.await.ok().flatten(), Some(1));
    r.publish(topology(None, vec![member(false, true, 0)]));
    let started = Instant::now();
    assert_eq!(
        r.route(Want::Writer, started + Duration::from_secs(2))
            .await,
        None
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}
