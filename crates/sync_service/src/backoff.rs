//! Retrying without hammering, and complaining without flooding the log.
//!
//! A destination or primary that cannot be reached is retried forever (the
//! sync service never skips a change), so both the waits between attempts
//! and the warnings about them must stay bounded.

use std::time::Duration;

use crate::limits::{RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MIN_MS, WARN_EVERY_FAILURES};

/// Exponential backoff from [`RETRY_BACKOFF_MIN_MS`] up to
/// [`RETRY_BACKOFF_MAX_MS`]; a new one for each call that is retried.
#[derive(Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_ms: RETRY_BACKOFF_MIN_MS,
        }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay_ms = self.next_ms;
        assert!((RETRY_BACKOFF_MIN_MS..=RETRY_BACKOFF_MAX_MS).contains(&delay_ms));
        self.next_ms = (self.next_ms * 2).min(RETRY_BACKOFF_MAX_MS);
        Duration::from_millis(delay_ms)
    }
}

/// Counts consecutive failures of one peer, to warn about them at a
/// bounded rate and to say once when the peer is back.
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

    /// Records a success; true when it ends a run of failures (the peer is
    /// reachable again).
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
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn failures_are_logged_first_then_every_fiftieth() {
        let mut log = FailureLog::default();
        let mut which = Vec::new();
        for i in 1..=120u64 {
            if log.failed() {
                which.push(i);
            }
        }
        assert_eq!(which, vec![1, 50, 100]);
        assert!(log.succeeded());
        assert!(!log.succeeded());
        assert_eq!(log.failures(), 0);
    }
}
