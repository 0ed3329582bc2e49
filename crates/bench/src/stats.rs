//! Percentiles and windows. Pure.
//!
//! Latencies go into HDR histograms (microseconds, three significant
//! digits: a reported figure is within 0.1% of the true one), which is
//! what makes p99.9 and max of a few hundred thousand samples exact enough
//! to compare runs.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds; larger values are clamped to it.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant digits of the histograms.
const HISTOGRAM_SIGFIGS: u8 = 3;

/// The latency figures of one set of samples, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIGS) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles of `samples_us` (zero samples: all zero).
pub fn summarize(samples_us: impl IntoIterator<Item = u64>) -> Summary {
    let mut h = new_histogram();
    // The histogram's max is rounded to its precision; this one is exact.
    let mut max_us = 0;
    for v in samples_us {
        let v = v.clamp(1, HISTOGRAM_MAX_US);
        max_us = max_us.max(v);
        h.saturating_record(v);
    }
    if h.is_empty() {
        return Summary::default();
    }
    // A percentile is the top of its histogram bucket, which may lie above
    // the largest sample: no percentile is reported above the max.
    let at = |q: f64| ms(h.value_at_quantile(q).min(max_us));
    Summary {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: ms(max_us),
    }
}

/// The figures of one window of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    /// Seconds from the start of the measured phase to the window's start.
    pub start_s: f64,
    pub count: u64,
    /// `None` when the window holds no sample.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Windows of `width_us` from `from_us` to `to_us`; each sample is `(at_us,
/// latency_us)` and falls in the window of its `at_us`. Samples outside
/// the range are left out.
pub fn windows(samples: &[(u64, u64)], from_us: u64, to_us: u64, width_us: u64) -> Vec<Window> {
    assert!(width_us > 0);
    if to_us <= from_us {
        return Vec::new();
    }
    let n = (to_us - from_us).div_ceil(width_us) as usize;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); n];
    for &(at, lat) in samples {
        if at < from_us || at >= to_us {
            continue;
        }
        buckets[((at - from_us) / width_us) as usize].push(lat);
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let start_s = (i as u64 * width_us) as f64 / 1e6;
            if b.is_empty() {
                return Window {
                    start_s,
                    count: 0,
                    p50_ms: None,
                    p99_ms: None,
                };
            }
            let s = summarize(b);
            Window {
                start_s,
                count: s.count,
                p50_ms: Some(s.p50_ms),
                p99_ms: Some(s.p99_ms),
            }
        })
        .collect()
}

/// The median of some numbers (`None` for none); the mean of the middle
/// two for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let s = summarize((1..=10_000).map(|v| v * 10));
        assert_eq!(s.count, 10_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(s.p50_ms, 50.0), "{s:?}");
        assert!(close(s.p99_ms, 99.0), "{s:?}");
        assert!(close(s.p999_ms, 99.9), "{s:?}");
        assert!(close(s.max_ms, 100.0), "{s:?}");
        assert!(close(s.mean_ms, 50.005), "{s:?}");
    }

    #[test]
    fn no_samples_is_all_zero() {
        assert_eq!(summarize(Vec::new()), Summary::default());
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let s = summarize([u64::MAX, 0]);
        assert_eq!(s.count, 2);
        let s = summarize([111_571, 1_000]);
        assert!(s.p999_ms <= s.max_ms, "{s:?}");
    }

    #[test]
    fn samples_fall_in_their_windows() {
        let samples = [
            (1_000, 500),
            (100_999, 700),
            (101_000, 2_000),
            (451_000, 1),
            (5, 9),
        ];
        let w = windows(&samples, 1_000, 301_000, 100_000);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].count, 2);
        assert_eq!(w[0].start_s, 0.0);
        assert_eq!(w[1].count, 1);
        assert_eq!(w[1].p50_ms, Some(2.0));
        assert_eq!(w[2].count, 0);
        assert_eq!(w[2].p99_ms, None);
        assert!(windows(&samples, 10, 10, 1).is_empty());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
