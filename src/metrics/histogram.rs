//! The hand-off time histogram: fixed buckets from 10 µs to 10 s, two `Relaxed` atomic adds
//! per observation.
//!
//! Each bucket counts the observations that fall in it alone (not cumulatively), with one
//! more for those above the last bound; the count is their sum, so `+Inf` and `_count` always
//! agree. Rendering accumulates.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::text::{self, Family};

/// Upper bounds in nanoseconds, with their `le` label as written.
const BOUNDS: [(u64, &str); 19] = [
    (10_000, "0.00001"),
    (25_000, "0.000025"),
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// A histogram of durations over [`BOUNDS`].
#[derive(Debug)]
pub(super) struct Histogram {
    /// `buckets[i]`: observations in `(BOUNDS[i - 1], BOUNDS[i]]`; the last one: above all.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    /// Sum of the observations, in nanoseconds (wraps after 584 years of hand-off time).
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(super) fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub(super) fn observe(&self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are `le`: a value on a bound belongs to that bound's bucket.
        let index = BOUNDS.partition_point(|&(bound, _)| bound < nanos);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Appends the family: cumulative `_bucket` lines ending with `+Inf`, `_sum`, `_count`.
    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let family = Family::histogram(out, name, help);
        let les = BOUNDS.iter().map(|&(_, le)| le).chain(["+Inf"]);
        let mut cumulative = 0u64;
        for (le, bucket) in les.zip(&self.buckets) {
            cumulative = cumulative.wrapping_add(bucket.load(Relaxed));
            family.sample_of(out, "_bucket", &[("le", le)], cumulative);
        }
        let sum = text::seconds(self.sum_nanos.load(Relaxed));
        family.sample_of(out, "_sum", &[], sum);
        family.sample_of(out, "_count", &[], cumulative);
    }
}
