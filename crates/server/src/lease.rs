//! The primary's lease from the coordinator. Pure: the clock is passed in.
//!
//! A heartbeat reply that confirms this server as primary renews it, from
//! when that heartbeat was *sent* (the coordinator may have decided
//! anything after that). The lease lasts a share of the coordinator's
//! failure timeout, so it runs out before the coordinator could promote
//! anyone else.

use std::time::{Duration, Instant};

use tsn_cluster::limits::LEASE_PERCENT_OF_FAILURE_TIMEOUT;

/// A secondary confirms its primary's lease (the lease's second source)
/// only once it has heard nothing from the coordinator for this many
/// heartbeat intervals: while the coordinator answers it, the coordinator
/// is up and may promote, and only it may confirm the primary. Short
/// enough that the confirmations start before the primary's own lease
/// (80 % of the failure timeout) runs out when the coordinator stops.
pub const RELAY_AFTER_SILENT_INTERVALS: u32 = 2;

/// Whether a server whose last answered heartbeat was sent at `heard_at`
/// still hears the coordinator at `now`.
pub fn hears_coordinator(
    heard_at: Option<Instant>,
    now: Instant,
    heartbeat_interval: Duration,
) -> bool {
    heard_at.is_some_and(|t| now < t + heartbeat_interval * RELAY_AFTER_SILENT_INTERVALS)
}

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
    fn a_server_hears_the_coordinator_for_a_few_intervals_after_an_answered_beat() {
        let t0 = Instant::now();
        let beat = Duration::from_millis(100);
        assert!(!hears_coordinator(None, t0, beat));
        let window = beat * RELAY_AFTER_SILENT_INTERVALS;
        assert!(hears_coordinator(
            Some(t0),
            t0 + window - Duration::from_millis(1),
            beat
        ));
        assert!(!hears_coordinator(Some(t0), t0 + window, beat));
        let lease = Duration::from_millis(500 * LEASE_PERCENT_OF_FAILURE_TIMEOUT / 100);
        assert!(
            window + beat < lease,
            "confirmations start before the lease ends"
        );
    }

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
