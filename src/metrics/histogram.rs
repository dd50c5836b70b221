//! A latency histogram recorded with atomics only: prometheus-client's own `Histogram` takes a
//! mutex on every observation, which the per-query hot path must not (docs/decisions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds in seconds: 100 µs to ~13 s by doubling, what a pooler's borrow and query
/// latencies span (loopback round trips to slow analytical queries).
pub const BOUNDS: [f64; 18] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072,
];

/// Counts per bucket (the last is +Inf) and the sum in nanoseconds.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Two relaxed atomic adds; the bucket is found by comparing integers.
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds values <= 100 µs * 2^i: compare against the bound in nanoseconds.
        let index = BOUNDS_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BOUNDS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts per bucket by upper bound (the last is +Inf; not cumulative, the encoder
    /// accumulates), the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut count = 0;
        let mut out = Vec::with_capacity(BOUNDS.len() + 1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Ordering::Relaxed);
            count += n;
            out.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (out, count, sum)
    }
}

const BOUNDS_NANOS: [u64; BOUNDS.len()] = {
    let mut out = [0u64; BOUNDS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = 100_000 << i;
        i += 1;
    }
    out
};

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count, sum) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_their_nanoseconds() {
        for (b, n) in BOUNDS.iter().zip(BOUNDS_NANOS) {
            assert!((b * 1e9 - n as f64).abs() < 1.0, "{b} vs {n}");
        }
    }

    #[test]
    fn observations_land_in_their_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(150));
        h.observe(Duration::from_secs(60));
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 4);
        assert_eq!(buckets[0], (0.0001, 2));
        assert_eq!(buckets[1], (0.0002, 1));
        assert_eq!(buckets[BOUNDS.len() - 1].1, 0);
        assert_eq!(buckets[BOUNDS.len()], (f64::INFINITY, 1));
        assert!((sum - 60.0003).abs() < 1e-9, "{sum}");
    }
}
