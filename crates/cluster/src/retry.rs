//! Retrying without hammering, and complaining without flooding the log.
//!
//! Every tsn process retries calls to peers that may be failing over: the
//! waits between attempts and the warnings about them must both stay
//! bounded, however long the outage.

use std::time::Duration;

/// Warn about the first failure of a run, then about every this many.
pub const WARN_EVERY_FAILURES: u64 = 50;

/// Exponential backoff: `min_ms`, doubling on each attempt, capped at `max_ms`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        assert!(
            min_ms >= 1 && min_ms <= max_ms,
            "backoff bounds must be 1 <= min <= max"
        );
        Backoff {
            min_ms,
            max_ms,
            next_ms: min_ms,
        }
    }

    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay_ms = self.next_ms;
        debug_assert!((self.min_ms..=self.max_ms).contains(&delay_ms));
        self.next_ms = delay_ms.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(delay_ms)
    }

    /// Starts again from the shortest wait, after a success.
    pub fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}

/// Counts consecutive failures of one peer, to warn about them at a bounded
/// rate and to say once when the peer is back.
#[derive(Debug, Default)]
pub struct FailureLog {
    failures: u64,
}

impl FailureLog {
    /// Records a failure; true when this one should be logged (the first,
    /// then every [`WARN_EVERY_FAILURES`]th).
    pub fn failed(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.failures == 1 || self.failures.is_multiple_of(WARN_EVERY_FAILURES)
    }

    /// Records a success; true when it ends a run of failures.
    pub fn succeeded(&mut self) -> bool {
        let was_failing = self.failures > 0;
        self.failures = 0;
        was_failing
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(50, 1000);
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![50, 100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }

    #[test]
    fn failures_are_logged_first_then_every_fiftieth() {
        let mut log = FailureLog::default();
        let logged: Vec<u64> = (1..=120u64).filter(|_| log.failed()).collect();
        assert_eq!(logged.len(), 3);
        assert_eq!(log.failures(), 120);
        assert!(log.succeeded());
        assert!(!log.succeeded());
    }
}
