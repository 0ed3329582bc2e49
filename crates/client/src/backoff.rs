//! The pause between attempts while tsn fails over: short at first, so a
//! quick failover is barely noticed, doubling up to a cap, so a long outage
//! does not flood the coordinator.

use std::time::Duration;

use crate::limits::{RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_START_MS};

#[derive(Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next_ms: RETRY_BACKOFF_START_MS,
        }
    }

    /// The pause to take now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next_ms;
        assert!((RETRY_BACKOFF_START_MS..=RETRY_BACKOFF_MAX_MS).contains(&now));
        self.next_ms = now.saturating_mul(2).min(RETRY_BACKOFF_MAX_MS);
        Duration::from_millis(now)
    }

    /// Starts again from the shortest pause, after a success.
    pub fn reset(&mut self) {
        self.next_ms = RETRY_BACKOFF_START_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_50_ms_up_to_1000_ms() {
        let mut b = Backoff::new();
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }
}
