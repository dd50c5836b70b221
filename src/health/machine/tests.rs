//! The failover state machine under tokio's paused clock: thresholds, elections, fencing, lag.

use super::*;

fn writer(position: u64) -> Option<ProbeReport> {
    Some(ProbeReport {
        writable: true,
        position: Some(position),
        ..ProbeReport::default()
    })
}

fn reader(position: u64) -> Option<ProbeReport> {
    Some(ProbeReport {
        writable: false,
        position: Some(position),
        ..ProbeReport::default()
    })
}

fn machine(members: usize) -> Machine {
    Machine::new(
        members,
        Thresholds {
            unhealthy: 3,
            healthy: 2,
        },
    )
}

const TICK: Duration = Duration::from_millis(100);

#[tokio::test(start_paused = true)]
async fn first_results_decide_then_thresholds_apply() {
    let mut m = machine(2);
    let c = m.observe(0, writer(1), Instant::now());
    assert_eq!(
        c.writer,
        Some((None, Some(0))),
        "a first good probe elects at once"
    );
    m.observe(1, reader(1), Instant::now());
    // Two failures are not enough to depose the writer; the third is.
    for _ in 0..2 {
        tokio::time::advance(TICK).await;
        let c = m.observe(0, None, Instant::now());
        assert!(c.drain.is_empty() && c.writer.is_none());
    }
    tokio::time::advance(TICK).await;
    let c = m.observe(0, None, Instant::now());
    assert_eq!(c.drain, vec![0]);
    assert_eq!(c.writer, Some((Some(0), None)));
    assert_eq!(m.topology().failovers, 1);
    // Back up only after `healthy` good probes in a row.
    tokio::time::advance(TICK).await;
    assert_eq!(m.observe(0, writer(2), Instant::now()).writer, None);
    tokio::time::advance(TICK).await;
    assert_eq!(
        m.observe(0, writer(2), Instant::now()).writer,
        Some((None, Some(0))),
        "the only writer is trusted again when nobody else accepts writes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_promoted_reader_wins_and_the_old_writer_is_fenced() {
    let mut m = machine(3);
    m.observe(0, writer(10), Instant::now());
    m.observe(1, reader(10), Instant::now());
    m.observe(2, reader(10), Instant::now());
    assert_eq!(m.writer(), Some(0));
    // The writer is killed; a replica is promoted before the writer's third failed probe.
    tokio::time::advance(TICK).await;
    m.observe(0, None, Instant::now());
    tokio::time::advance(TICK).await;
    let c = m.observe(1, writer(11), Instant::now());
    assert_eq!(
        c.writer,
        Some((Some(0), Some(1))),
        "the promotion is used at once"
    );
    assert!(c.drain.contains(&0), "the old writer's pools close");
    // The old writer comes back still writable: it must not take writes back.
    for _ in 0..5 {
        tokio::time::advance(TICK).await;
        let c = m.observe(0, writer(10), Instant::now());
        assert_eq!(c.writer, None);
    }
    assert_eq!(m.writer(), Some(1));
    let t = m.topology();
    assert_eq!(t.writer, Some(1));
    assert!(t.members[0].writable && t.members[0].healthy);
}

#[tokio::test(start_paused = true)]
async fn two_writers_without_history_elect_nobody_and_say_so_once() {
    let mut m = machine(2);
    m.observe(0, writer(1), Instant::now());
    assert_eq!(m.writer(), Some(0));
    let c = m.observe(1, writer(1), Instant::now());
    assert!(c.two_writers);
    assert_eq!(m.writer(), Some(0), "the writer in office stays");
    assert!(!m.observe(1, writer(1), Instant::now()).two_writers);

    let mut fresh = machine(2);
    fresh.observe(0, writer(1), Instant::now());
    fresh.observe(0, None, Instant::now());
    fresh.observe(0, None, Instant::now());
    fresh.observe(0, None, Instant::now());
    fresh.observe(1, writer(1), Instant::now());
    assert_eq!(fresh.writer(), Some(1));
    for _ in 0..2 {
        fresh.observe(0, writer(1), Instant::now());
    }
    assert_eq!(
        fresh.writer(),
        Some(1),
        "a returning writer never displaces an equal one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_higher_generation_wins_even_unseen_as_reader() {
    let mut m = machine(2);
    let generation = |g| {
        Some(ProbeReport {
            writable: true,
            generation: g,
            ..ProbeReport::default()
        })
    };
    m.observe(0, generation(1), Instant::now());
    let c = m.observe(1, generation(2), Instant::now());
    assert_eq!(c.writer, Some((Some(0), Some(1))));
}

#[tokio::test(start_paused = true)]
async fn a_writer_turning_read_only_is_deposed_at_once() {
    let mut m = machine(2);
    m.observe(0, writer(5), Instant::now());
    m.observe(1, reader(5), Instant::now());
    let c = m.observe(0, reader(5), Instant::now());
    assert_eq!(c.writer, Some((Some(0), None)));
    assert_eq!(c.drain, vec![0]);
}

#[tokio::test(start_paused = true)]
async fn lag_is_the_age_of_the_oldest_unreplayed_write() {
    let mut m = machine(2);
    m.observe(0, writer(100), Instant::now());
    m.observe(1, reader(100), Instant::now());
    assert_eq!(m.topology().members[1].lag, Some(Duration::ZERO));
    // A quiet writer makes no lag, however long.
    tokio::time::advance(Duration::from_secs(60)).await;
    m.observe(0, writer(100), Instant::now());
    m.observe(1, reader(100), Instant::now());
    assert_eq!(m.topology().members[1].lag, Some(Duration::ZERO));
    // Writes the reader has not replayed: lag grows from when they were first seen.
    m.observe(0, writer(150), Instant::now());
    tokio::time::advance(Duration::from_secs(5)).await;
    m.observe(0, writer(200), Instant::now());
    m.observe(1, reader(120), Instant::now());
    assert_eq!(m.topology().members[1].lag, Some(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_secs(1)).await;
    m.observe(1, reader(160), Instant::now());
    assert_eq!(m.topology().members[1].lag, Some(Duration::from_secs(1)));
    m.observe(1, reader(200), Instant::now());
    assert_eq!(m.topology().members[1].lag, Some(Duration::ZERO));
}
