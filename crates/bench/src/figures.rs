//! From the records of a phase to its figures: throughput, latency
//! percentiles, windows over time, the outage after a kill. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::Load;
use crate::limits::WINDOW_MS;
use crate::record::{failures_by_code, Ack, Failure};
use crate::stats::{summarize, windows, Summary, Window};

/// The measured span of a phase, in microseconds of the run's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from_us: u64,
    pub to_us: u64,
}

impl Span {
    pub fn contains(&self, us: u64) -> bool {
        (self.from_us..self.to_us).contains(&us)
    }

    pub fn seconds(&self) -> f64 {
        self.to_us.saturating_sub(self.from_us) as f64 / 1e6
    }

    /// Seconds from the span's start to `us`.
    pub fn offset_s(&self, us: u64) -> f64 {
        (us as f64 - self.from_us as f64) / 1e6
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseFigures {
    pub name: String,
    pub load: Load,
    pub measured_s: f64,
    /// Acknowledgements received within the measured span.
    pub acknowledged: u64,
    pub throughput_per_s: f64,
    /// From due time to acknowledgement, of the acknowledgements within
    /// the measured span.
    pub ack_latency: Summary,
    /// Open loop only: how late the dispatcher sent posts after their due
    /// time (client-side delay, included in `ack_latency`).
    pub dispatch_lateness: Option<Summary>,
    /// Open loop only: posts due in the whole phase, warm-up included.
    pub posts_due: Option<u64>,
    /// Acknowledged posts that needed more than one try.
    pub retried: u64,
    /// Posts given up on, by gRPC code (the whole phase).
    pub failed: BTreeMap<String, u64>,
    pub failed_examples: Vec<String>,
    /// Acknowledgements not recorded because the record store was full.
    pub records_dropped: u64,
    /// Per window of [`WINDOW_MS`] of the measured span, by time of
    /// acknowledgement.
    pub windows: Vec<Window>,
}

/// Most failure messages listed per phase.
const FAILED_EXAMPLES_MAX: usize = 5;

pub fn phase_figures(
    name: &str,
    load: Load,
    acks: &[Ack],
    failures: &[Failure],
    records_dropped: u64,
    span: Span,
    posts_due: Option<u64>,
) -> PhaseFigures {
    let inside: Vec<&Ack> = acks.iter().filter(|a| span.contains(a.acked_us)).collect();
    let count = inside.len() as u64;
    let seconds = span.seconds();
    let open = matches!(load, Load::Open { .. });
    let samples: Vec<(u64, u64)> = inside
        .iter()
        .map(|a| (a.acked_us, a.latency_us()))
        .collect();
    PhaseFigures {
        name: name.to_string(),
        load,
        measured_s: seconds,
        acknowledged: count,
        throughput_per_s: if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        },
        ack_latency: summarize(inside.iter().map(|a| a.latency_us())),
        dispatch_lateness: open
            .then(|| summarize(inside.iter().map(|a| a.sent_us.saturating_sub(a.due_us)))),
        posts_due,
        retried: inside.iter().filter(|a| a.tries > 1).count() as u64,
        failed: failures_by_code(failures),
        failed_examples: failures
            .iter()
            .take(FAILED_EXAMPLES_MAX)
            .map(|f| format!("post {} of {}: {} {}", f.n, f.author, f.code, f.message))
            .collect(),
        records_dropped,
        windows: windows(&samples, span.from_us, span.to_us, WINDOW_MS * 1000),
    }
}

/// The write outage after a kill at `kill_us`: milliseconds to `first`,
/// the first acknowledgement by another server (`None`: there was none).
pub fn outage_ms(kill_us: u64, first: Option<&Ack>) -> Option<f64> {
    first.map(|a| a.acked_us.saturating_sub(kill_us) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u64, due_us: u64, sent_us: u64, acked_us: u64, tries: u32) -> Ack {
        Ack {
            n,
            author: 1,
            cluster: 1,
            due_us,
            sent_us,
            acked_us,
            server: 0,
            tries,
        }
    }

    #[test]
    fn only_the_measured_span_counts() {
        let span = Span {
            from_us: 1_000_000,
            to_us: 3_000_000,
        };
        let acks = [
            ack(1, 0, 0, 500_000, 1), // warm-up
            ack(2, 1_000_000, 1_000_000, 1_001_000, 1),
            ack(3, 2_000_000, 2_000_500, 2_004_000, 2),
            ack(4, 2_999_000, 2_999_000, 3_000_500, 1), // after the end
        ];
        let f = phase_figures(
            "posts",
            Load::Open {
                rate_per_s: 1.0,
                schedule: crate::cli::ScheduleKind::Fixed,
            },
            &acks,
            &[],
            0,
            span,
            Some(4),
        );
        assert_eq!(f.acknowledged, 2);
        assert_eq!(f.throughput_per_s, 1.0);
        assert_eq!(f.retried, 1);
        assert_eq!(f.ack_latency.count, 2);
        assert_eq!(f.ack_latency.max_ms, 4.0);
        assert_eq!(f.dispatch_lateness.as_ref().map(|s| s.max_ms), Some(0.5));
        assert_eq!(f.windows.len(), 20);
        assert_eq!(f.windows[0].count, 1);
        assert_eq!(f.windows[10].count, 1);
    }

    #[test]
    fn a_closed_loop_has_no_dispatch_lateness() {
        let span = Span {
            from_us: 0,
            to_us: 1_000_000,
        };
        let f = phase_figures(
            "posts",
            Load::Closed { clients: 1 },
            &[],
            &[],
            0,
            span,
            None,
        );
        assert_eq!(f.dispatch_lateness, None);
        assert_eq!(f.acknowledged, 0);
        assert_eq!(f.throughput_per_s, 0.0);
    }

    #[test]
    fn outage_is_kill_to_first_ack() {
        let a = ack(1, 0, 0, 1_650_000, 3);
        assert_eq!(outage_ms(1_000_000, Some(&a)), Some(650.0));
        assert_eq!(outage_ms(1_000_000, None), None);
    }

    #[test]
    fn span_arithmetic() {
        let s = Span {
            from_us: 2_000_000,
            to_us: 4_500_000,
        };
        assert_eq!(s.seconds(), 2.5);
        assert_eq!(s.offset_s(3_000_000), 1.0);
        assert!(s.contains(2_000_000) && !s.contains(4_500_000));
    }
}
