//! What a run records while it runs: one [`Ack`] per acknowledged post, one
//! [`Failure`] per post that was given up on, in bounded stores shared by
//! the posters. Times are microseconds since the run's [`Clock`] started,
//! so records are small, plain numbers that every later step (percentiles,
//! windows, outages, the plot) can compute with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tsn_cluster::sync::lock;

/// The run's time origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    t0: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { t0: Instant::now() }
    }

    /// Microseconds from the origin to `at` (0 for an earlier instant).
    pub fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_micros() as u64
    }

    pub fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }
}

/// One acknowledged post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The post's number in this run (its id is made from it).
    pub n: u64,
    pub author: u32,
    /// The author's cluster.
    pub cluster: u32,
    /// When the post was due: its scheduled time in an open loop, its
    /// first try in a closed loop. Latency is counted from here.
    pub due_us: u64,
    /// When the first try was sent (later than `due_us` when the open
    /// loop's dispatcher ran late).
    pub sent_us: u64,
    pub acked_us: u64,
    /// Which server answered (an index into the router's address table).
    pub server: u16,
    /// Tries it took (1: no retry).
    pub tries: u32,
}

impl Ack {
    pub fn latency_us(&self) -> u64 {
        self.acked_us.saturating_sub(self.due_us)
    }
}

/// A post given up on: a refusal that retrying cannot change, or retries
/// that ran out of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub n: u64,
    pub author: u32,
    pub code: String,
    pub message: String,
}

/// The records of one load phase.
#[derive(Default)]
pub struct Records {
    acks: Mutex<Vec<Ack>>,
    failures: Mutex<Vec<Failure>>,
    /// Acknowledgements not kept because the store was full.
    dropped: AtomicU64,
    /// Acknowledgements so far (for the progress bar).
    count: AtomicU64,
    limit: usize,
}

impl Records {
    pub fn new(limit: usize) -> Records {
        Records {
            limit,
            ..Records::default()
        }
    }

    pub fn ack(&self, ack: Ack) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut acks = lock(&self.acks);
        if acks.len() < self.limit {
            acks.push(ack);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn fail(&self, failure: Failure) {
        let mut f = lock(&self.failures);
        if f.len() < self.limit {
            f.push(failure);
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Every acknowledgement so far, in no particular order.
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    pub fn failures(&self) -> Vec<Failure> {
        lock(&self.failures).clone()
    }

    /// The first acknowledgement after `after_us` by a server other than
    /// `not_server`, among posts of `cluster`'s authors.
    pub fn first_ack_after(&self, cluster: u32, after_us: u64, not_server: u16) -> Option<Ack> {
        lock(&self.acks)
            .iter()
            .filter(|a| a.cluster == cluster && a.acked_us > after_us && a.server != not_server)
            .min_by_key(|a| a.acked_us)
            .copied()
    }
}

/// Failures counted by gRPC code, for the report.
pub fn failures_by_code(failures: &[Failure]) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for f in failures {
        *by.entry(f.code.clone()).or_insert(0) += 1;
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u64, cluster: u32, acked_us: u64, server: u16) -> Ack {
        Ack {
            n,
            author: 1,
            cluster,
            due_us: 0,
            sent_us: 0,
            acked_us,
            server,
            tries: 1,
        }
    }

    #[test]
    fn the_store_is_bounded() {
        let r = Records::new(2);
        for n in 0..5 {
            r.ack(ack(n, 1, n, 0));
        }
        assert_eq!(r.acks().len(), 2);
        assert_eq!((r.count(), r.dropped()), (5, 3));
    }

    #[test]
    fn first_ack_after_a_kill_comes_from_another_server() {
        let r = Records::new(100);
        r.ack(ack(1, 1, 100, 0));
        r.ack(ack(2, 1, 250, 0)); // the killed server, late on the wire
        r.ack(ack(3, 2, 260, 1)); // another cluster
        r.ack(ack(4, 1, 900, 2));
        r.ack(ack(5, 1, 700, 2));
        assert_eq!(r.first_ack_after(1, 200, 0).map(|a| a.n), Some(5));
        assert_eq!(r.first_ack_after(1, 1000, 0), None);
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        let a = Ack {
            due_us: 100,
            sent_us: 150,
            acked_us: 1100,
            ..ack(1, 1, 0, 0)
        };
        assert_eq!(a.latency_us(), 1000);
    }

    #[test]
    fn failures_are_counted_by_code() {
        let f = |code: &str| Failure {
            n: 0,
            author: 1,
            code: code.into(),
            message: String::new(),
        };
        let by = failures_by_code(&[f("Unavailable"), f("InvalidArgument"), f("Unavailable")]);
        assert_eq!(by.get("Unavailable"), Some(&2));
        assert_eq!(by.get("InvalidArgument"), Some(&1));
    }
}
