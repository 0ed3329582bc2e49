//! A token bucket per caller: how many new users one peer address may have
//! assigned per second. Pure, with the clock passed in.
//!
//! Every new user costs the coordinator a line on disk and a place in a
//! table with a ceiling (`--users-max`), so no single caller may fill it:
//! at [`ASSIGN_NEW_USERS_PER_PEER_PER_S`] a caller needs hours, not a
//! second, and others are served meanwhile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// New users a peer may have assigned per second, on average.
pub const ASSIGN_NEW_USERS_PER_PEER_PER_S: f64 = 200.0;
/// New users a peer may have assigned at once (the bucket's size): a
/// benchmark's or a sync service's burst of first logins fits.
pub const ASSIGN_NEW_USERS_BURST: f64 = 20_000.0;
/// Most peers tracked; when full, the buckets that are full again are
/// forgotten (a forgotten peer starts with a full bucket, as it would).
pub const RATE_PEERS_MAX: usize = 10_000;

#[derive(Default)]
pub struct Buckets {
    /// Peer -> (tokens left, when they were counted).
    peers: HashMap<IpAddr, (f64, Instant)>,
}

impl Buckets {
    /// Takes `n` tokens from `peer`'s bucket if it holds them.
    pub fn take(&mut self, peer: IpAddr, n: usize, now: Instant) -> bool {
        if self.peers.len() >= RATE_PEERS_MAX && !self.peers.contains_key(&peer) {
            self.peers
                .retain(|_, (tokens, at)| refill(*tokens, *at, now) < ASSIGN_NEW_USERS_BURST);
        }
        let (tokens, at) = self
            .peers
            .entry(peer)
            .or_insert((ASSIGN_NEW_USERS_BURST, now));
        let available = refill(*tokens, *at, now);
        *at = now.max(*at);
        let wanted = n as f64;
        if available >= wanted {
            *tokens = available - wanted;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

fn refill(tokens: f64, at: Instant, now: Instant) -> f64 {
    let s = now.saturating_duration_since(at).as_secs_f64();
    (tokens + s * ASSIGN_NEW_USERS_PER_PEER_PER_S).min(ASSIGN_NEW_USERS_BURST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut buckets = Buckets::default();
        assert!(buckets.take(a, ASSIGN_NEW_USERS_BURST as usize, t0));
        assert!(!buckets.take(a, 1, t0));
        // Another peer is not held up.
        assert!(buckets.take(b, 10, t0));
        // A second refills the rate, no more.
        let t1 = t0 + Duration::from_secs(1);
        let rate = ASSIGN_NEW_USERS_PER_PEER_PER_S as usize;
        assert!(!buckets.take(a, rate + 1, t1));
        assert!(buckets.take(a, rate, t1));
        // A clock going back gives nothing.
        assert!(!buckets.take(a, 1, t0));
    }
}
