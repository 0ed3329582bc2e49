//! A token bucket per caller: how many new users one peer address may have
//! assigned per second, and how many accounts it may sign up. Pure, with
//! the clock passed in.
//!
//! Every new user costs the coordinator a line on disk and a place in a
//! table with a ceiling (`--users-max`), so no single caller may fill it:
//! at [`ASSIGN_NEW_USERS_PER_PEER_PER_S`] a caller needs hours, not a
//! second, and others are served meanwhile. A sign-up costs far more (a
//! password hash of [`crate::password`]'s memory and time), so it has a
//! bucket of its own with a much smaller rate.

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
/// Sign-ups a peer may make per second, on average: each costs a password
/// hash, so a caller cannot keep the coordinator's cores busy.
pub const SIGNUPS_PER_PEER_PER_S: f64 = 2.0;
/// Sign-ups a peer may make at once: a test's or a classroom's burst fits.
pub const SIGNUPS_BURST: f64 = 50.0;

pub struct Buckets {
    /// Peer -> (tokens left, when they were counted).
    peers: HashMap<IpAddr, (f64, Instant)>,
    /// Tokens added per second.
    rate_per_s: f64,
    /// Most tokens a bucket holds; a new peer starts with them.
    burst: f64,
}

impl Default for Buckets {
    /// The buckets of new users ([`ASSIGN_NEW_USERS_PER_PEER_PER_S`]).
    fn default() -> Buckets {
        Buckets::new(ASSIGN_NEW_USERS_PER_PEER_PER_S, ASSIGN_NEW_USERS_BURST)
    }
}

impl Buckets {
    pub fn new(rate_per_s: f64, burst: f64) -> Buckets {
        Buckets {
            peers: HashMap::new(),
            rate_per_s,
            burst,
        }
    }

    /// The buckets of sign-ups ([`SIGNUPS_PER_PEER_PER_S`]).
    pub fn signups() -> Buckets {
        Buckets::new(SIGNUPS_PER_PEER_PER_S, SIGNUPS_BURST)
    }

    /// Takes `n` tokens from `peer`'s bucket if it holds them.
    pub fn take(&mut self, peer: IpAddr, n: usize, now: Instant) -> bool {
        let (rate, burst) = (self.rate_per_s, self.burst);
        if self.peers.len() >= RATE_PEERS_MAX && !self.peers.contains_key(&peer) {
            self.peers
                .retain(|_, (tokens, at)| refill(*tokens, *at, now, rate, burst) < burst);
        }
        let (tokens, at) = self.peers.entry(peer).or_insert((burst, now));
        let available = refill(*tokens, *at, now, rate, burst);
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

fn refill(tokens: f64, at: Instant, now: Instant, rate_per_s: f64, burst: f64) -> f64 {
    let s = now.saturating_duration_since(at).as_secs_f64();
    (tokens + s * rate_per_s).min(burst)
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

    #[test]
    fn signups_have_their_own_smaller_bucket() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut signups = Buckets::signups();
        for _ in 0..SIGNUPS_BURST as usize {
            assert!(signups.take(a, 1, t0));
        }
        assert!(!signups.take(a, 1, t0));
        let t1 = t0 + Duration::from_secs(1);
        assert!(signups.take(a, SIGNUPS_PER_PEER_PER_S as usize, t1));
        assert!(!signups.take(a, 1, t1));
    }
}
