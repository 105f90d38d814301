//! A latency histogram with fixed buckets: observing is a few relaxed atomic adds, so the data
//! path can afford it per file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::exposition::{Exposition, Kind};

/// Upper bounds (seconds) of the buckets: from a small file on an idle system (~0.05 s) to a
/// large file over a slow link.
const BOUNDS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Seconds from one event to another, per file.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most `BOUNDS[i]` (not cumulative; summed when written).
    buckets: [AtomicU64; BOUNDS.len()],
    /// All observations (the `+Inf` bucket and `_count`).
    count: AtomicU64,
    /// Sum of the observations, in microseconds (integral, so it can be atomic).
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Writes the family `name` (buckets, `_sum`, `_count`).
    pub fn write(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            out.sample(&bucket, &[("le", &bound.to_string())], cumulative as f64);
        }
        let count = self.count.load(Ordering::Relaxed);
        out.sample(&bucket, &[("le", "+Inf")], count as f64);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.sample(&format!("{name}_sum"), &[], sum);
        out.sample(&format!("{name}_count"), &[], count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        for ms in [5, 60, 60, 400_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = Exposition::default();
        h.write(&mut out, "t_seconds", "T.");
        let text = out.finish();
        assert!(text.contains("t_seconds_bucket{le=\"0.01\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"120\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("t_seconds_sum 400.125\n"), "{text}");
        assert!(text.contains("t_seconds_count 4\n"), "{text}");
    }
}
