//! The probe loop's pace, under tokio's paused clock: an instance marked down is probed often
//! enough that sessions waiting out its restart are served soon after it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};

use super::{Member, Monitor, Probe, ProbeFuture, ProbeReport, Thresholds, Timing};
use crate::routing::Router;

/// Answers as a writer while `up`, else fails as a refused connection would.
struct Switch(Arc<AtomicBool>);

impl Probe for Switch {
    fn addr(&self) -> &str {
        "db:5432"
    }

    fn probe(&mut self) -> ProbeFuture<'_> {
        let up = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if up {
                Ok(ProbeReport {
                    writable: true,
                    ..ProbeReport::default()
                })
            } else {
                Err("connection refused".to_owned())
            }
        })
    }
}

/// How long (virtual time) until `router` has the writer it wants, or lacks one.
async fn until(router: &Router, writer: Option<usize>) -> Duration {
    let start = Instant::now();
    while router.snapshot().writer != writer {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never {writer:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn an_instance_marked_down_is_probed_at_the_recovery_pace_until_it_is_back() {
    let up = Arc::new(AtomicBool::new(true));
    let router = Arc::new(Router::new(
        vec![Arc::new(AtomicUsize::new(0))].into(),
        Duration::from_secs(30),
    ));
    let mut tasks = JoinSet::new();
    let _monitor = Monitor::spawn(
        "pg",
        vec![Member {
            probe: Box::new(Switch(up.clone())),
            drain: Arc::new(|| {}),
        }],
        Thresholds {
            unhealthy: 3,
            healthy: 2,
        },
        Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        },
        router.clone(),
        &mut tasks,
    );
    until(&router, Some(0)).await;
    up.store(false, Ordering::SeqCst);
    // Marking it down keeps the configured pace: three failed probes a second apart.
    let down = until(&router, None).await;
    assert!(down >= Duration::from_secs(2), "marked down after {down:?}");
    // Back: two good probes at the recovery pace, not two seconds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    up.store(true, Ordering::SeqCst);
    let back = until(&router, Some(0)).await;
    assert!(
        back <= Duration::from_millis(250),
        "elected again after {back:?}"
    );
}
