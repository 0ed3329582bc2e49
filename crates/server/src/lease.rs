//! The primary's lease from the coordinator. Pure: the clock is passed in.
//!
//! A heartbeat reply that confirms this server as primary renews it, from
//! when that heartbeat was *sent* (the coordinator may have decided
//! anything after that). The lease lasts a share of the coordinator's
//! failure timeout, so it runs out before the coordinator could promote
//! anyone else.

use std::time::{Duration, Instant};

use tsn_cluster::limits::LEASE_PERCENT_OF_FAILURE_TIMEOUT;

#[derive(Clone, Copy, Debug, Default)]
pub struct Lease {
    length: Duration,
    confirmed_at: Option<Instant>,
}

impl Lease {
    /// The coordinator confirmed this server's epoch in a reply to a
    /// heartbeat sent at `sent_at`.
    pub fn confirm(&mut self, sent_at: Instant, failure_timeout_ms: u64) {
        self.length =
            Duration::from_millis(failure_timeout_ms * LEASE_PERCENT_OF_FAILURE_TIMEOUT / 100);
        self.confirmed_at = Some(sent_at);
    }

    /// How long a confirmation lasts (zero before the first).
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Whether the coordinator's last confirmation still holds at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.confirmed_at.is_some_and(|t| now < t + self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_send_time_for_a_share_of_the_failure_timeout() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        assert!(!l.holds(t0), "never confirmed");
        l.confirm(t0, 500);
        let share = 500 * LEASE_PERCENT_OF_FAILURE_TIMEOUT / 100;
        assert!(share < 500, "it must end before a promotion can happen");
        assert!(l.holds(t0 + Duration::from_millis(share - 1)));
        assert!(!l.holds(t0 + Duration::from_millis(share)));
        l.confirm(t0 + Duration::from_millis(share), 500);
        assert!(l.holds(t0 + Duration::from_millis(share + 1)));
    }
}
