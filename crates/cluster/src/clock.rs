//! Cluster time: the one clock every deciding timestamp comes from (a
//! post's `ts_ms`, a follow's `since_ms`, the "not too far ahead" check of
//! a post that arrives). Pure: every reading of the machine's clock is
//! passed in.
//!
//! Each process compares its own wall clock with nobody's. It estimates the
//! coordinator's clock, the reference, from heartbeat round trips, as NTP
//! does: a reply sent at local instant `sent`, received at `received`,
//! carrying the coordinator's time `c`, says that at the local instant
//! halfway between the two the coordinator's clock read `c`, give or take
//! half the round trip. Between samples the time moves with the local
//! *monotonic* clock (`Instant`), so a step of this machine's wall clock
//! (an operator, NTP, a VM resumed) does not move cluster time at all; only
//! the monotonic clock's rate error does, which is bounded by
//! [`CLOCK_DRIFT_MAX_PPM`] and counted in the uncertainty.
//!
//! Of the samples of the last [`CLOCK_SAMPLE_MAX_AGE_MS`] (at most
//! [`CLOCK_SAMPLES_MAX`]), the one with the smallest uncertainty now wins:
//! a short round trip beats a long one that queued somewhere.
//!
//! Two more rules make the time safe to order by:
//!
//! * it never goes back: each reading is at least the previous one, and at
//!   least the floor — the newest timestamp of the cluster's journal,
//!   raised when a server opens its store and when it becomes primary — so
//!   a failover to a machine whose estimate is behind cannot go back;
//! * it is *unknown* when no sample is fresh; a process then takes no
//!   deciding timestamp and is not made primary. Its *error* is the
//!   uncertainty plus how far the floor holds it ahead of the estimate;
//!   [`ClusterClock::within`] compares it with `--max-clock-offset-ms`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Samples older than this are forgotten; with none left the time is
/// unknown. Long enough that a coordinator restart does not stop a
/// cluster, short enough that a process cut off from the coordinator soon
/// stops taking deciding timestamps.
pub const CLOCK_SAMPLE_MAX_AGE_MS: u64 = 10_000;
/// Most samples kept (the window the best one is chosen from).
pub const CLOCK_SAMPLES_MAX: usize = 64;
/// Bound of the rate error of the monotonic clock, in parts per million
/// (crystal oscillators stay within ~100).
pub const CLOCK_DRIFT_MAX_PPM: u64 = 200;
/// Default of `--max-clock-offset-ms`: how far cluster time may be from the
/// coordinator's clock for a process to lead its cluster.
pub const MAX_CLOCK_OFFSET_MS: u64 = 250;

/// One heartbeat round trip: local instants of the send and the receipt,
/// and the coordinator's clock in the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub sent: Instant,
    pub received: Instant,
    pub coordinator_ms: i64,
}

impl Sample {
    /// The local instant the coordinator's reading is placed at.
    fn midpoint(&self) -> Instant {
        self.sent + (self.received - self.sent) / 2
    }

    /// Half the round trip plus the drift since the receipt, at `now`.
    fn uncertainty_ms(&self, now: Instant) -> u64 {
        let half_rtt = millis_up((self.received - self.sent) / 2);
        let since = now.saturating_duration_since(self.received);
        let drift = (since.as_micros() as u64).saturating_mul(CLOCK_DRIFT_MAX_PPM) / 1_000_000_000;
        half_rtt.saturating_add(drift)
    }

    /// The coordinator's clock at `now`, as this sample estimates it.
    fn estimate_ms(&self, now: Instant) -> i64 {
        let mid = self.midpoint();
        let ahead = now.saturating_duration_since(mid).as_millis();
        let behind = mid.saturating_duration_since(now).as_millis();
        let ahead = i64::try_from(ahead).unwrap_or(i64::MAX);
        let behind = i64::try_from(behind).unwrap_or(i64::MAX);
        self.coordinator_ms
            .saturating_add(ahead)
            .saturating_sub(behind)
    }
}

fn millis_up(d: Duration) -> u64 {
    let us = d.as_micros();
    u64::try_from(us.div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// The estimate of the coordinator's clock at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub ms: i64,
    /// The coordinator's clock is within `ms ± uncertainty_ms`.
    pub uncertainty_ms: u64,
}

/// The cluster time of one process.
#[derive(Clone, Debug, Default)]
pub struct ClusterClock {
    /// Oldest first.
    samples: VecDeque<Sample>,
    /// No reading is earlier (the journal's newest timestamp).
    floor_ms: i64,
    /// The last reading handed out.
    last_ms: i64,
}

impl ClusterClock {
    /// Adds a heartbeat round trip. A sample that cannot be one (received
    /// before it was sent, no coordinator time) is ignored.
    pub fn sample(&mut self, s: Sample) {
        if s.received < s.sent || s.coordinator_ms <= 0 {
            return;
        }
        self.samples.push_back(s);
        while self.samples.len() > CLOCK_SAMPLES_MAX {
            self.samples.pop_front();
        }
    }

    /// No reading will be earlier than `ts_ms` (a timestamp of the journal).
    pub fn raise_floor(&mut self, ts_ms: i64) {
        self.floor_ms = self.floor_ms.max(ts_ms);
    }

    /// The best estimate at `now` from the fresh samples; `None`: unknown.
    pub fn estimate(&mut self, now: Instant) -> Option<Estimate> {
        let max_age = Duration::from_millis(CLOCK_SAMPLE_MAX_AGE_MS);
        self.samples
            .retain(|s| now.saturating_duration_since(s.received) <= max_age);
        // Newest first, so that of equally good samples the newest wins.
        self.samples
            .iter()
            .rev()
            .min_by_key(|s| s.uncertainty_ms(now))
            .map(|s| Estimate {
                ms: s.estimate_ms(now),
                uncertainty_ms: s.uncertainty_ms(now),
            })
    }

    /// How far a reading at `now` may be from the coordinator's clock:
    /// the uncertainty, plus how far the floor or an earlier reading holds
    /// it ahead of the estimate. `None`: unknown.
    pub fn error_ms(&mut self, now: Instant) -> Option<u64> {
        let e = self.estimate(now)?;
        let held = self.floor_ms.max(self.last_ms).saturating_sub(e.ms).max(0);
        Some(e.uncertainty_ms.saturating_add(held as u64))
    }

    /// Whether the time is known at `now` and within `max_offset_ms` of the
    /// coordinator's clock: what a process must be to lead its cluster.
    pub fn within(&mut self, now: Instant, max_offset_ms: u64) -> bool {
        self.error_ms(now).is_some_and(|e| e <= max_offset_ms)
    }

    /// The cluster time at `now`: never earlier than the floor or than any
    /// earlier reading. `None`: unknown (no fresh sample).
    pub fn now_ms(&mut self, now: Instant) -> Option<i64> {
        let e = self.estimate(now)?;
        let ms = e.ms.max(self.floor_ms).max(self.last_ms);
        self.last_ms = ms;
        Some(ms)
    }
}

/// A [`ClusterClock`] shared by the heartbeat loop, which samples it, and
/// the tasks that read it, with the bound this process must keep.
#[derive(Clone, Debug)]
pub struct SharedClock {
    clock: Arc<Mutex<ClusterClock>>,
    max_offset_ms: u64,
}

impl SharedClock {
    pub fn new(max_offset_ms: u64) -> SharedClock {
        SharedClock {
            clock: Arc::default(),
            max_offset_ms,
        }
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    pub fn sample(&self, s: Sample) {
        lock(&self.clock).sample(s);
    }

    pub fn raise_floor(&self, ts_ms: i64) {
        lock(&self.clock).raise_floor(ts_ms);
    }

    /// The cluster time now; `None`: unknown.
    pub fn now_ms(&self) -> Option<i64> {
        lock(&self.clock).now_ms(Instant::now())
    }

    /// Whether this process's time is known and within its bound now.
    pub fn within_bound(&self) -> bool {
        lock(&self.clock).within(Instant::now(), self.max_offset_ms)
    }

    /// The error now (see [`ClusterClock::error_ms`]).
    pub fn error_ms(&self) -> Option<u64> {
        lock(&self.clock).error_ms(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: i64 = 1_700_000_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(t0: Instant, sent: u64, coordinator_ms: i64, received: u64) -> Sample {
        Sample {
            sent: t0 + ms(sent),
            received: t0 + ms(received),
            coordinator_ms,
        }
    }

    #[test]
    fn unknown_until_a_sample_and_after_the_samples_age_out() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        assert_eq!(c.now_ms(t0), None);
        assert_eq!(c.error_ms(t0), None);
        assert!(!c.within(t0, u64::MAX));
        c.sample(sample(t0, 0, C, 10));
        assert!(c.now_ms(t0 + ms(10)).is_some());
        let late = t0 + ms(10 + CLOCK_SAMPLE_MAX_AGE_MS + 1);
        assert_eq!(c.now_ms(late), None, "no fresh sample: unknown");
        assert!(!c.within(late, u64::MAX));
    }

    #[test]
    fn the_offset_is_placed_at_the_midpoint_with_half_the_round_trip_as_uncertainty() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        // Sent at 0, received at 40: the coordinator read C at 20.
        c.sample(sample(t0, 0, C, 40));
        let e = c.estimate(t0 + ms(40)).unwrap();
        assert_eq!(e.ms, C + 20);
        assert_eq!(e.uncertainty_ms, 20);
        assert_eq!(c.now_ms(t0 + ms(1_040)), Some(C + 1_020));
    }

    #[test]
    fn the_best_round_trip_in_the_window_wins() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        c.sample(sample(t0, 0, C + 100, 200)); // rtt 200: C at 100 -> says C+100 at 100 (off by 0)
        c.sample(sample(t0, 300, C + 305, 310)); // rtt 10: C+305 at 305
        c.sample(sample(t0, 400, C + 900, 1_400)); // rtt 1000, queued
        let e = c.estimate(t0 + ms(1_400)).unwrap();
        assert_eq!(
            e.uncertainty_ms,
            5 + 1_090 * CLOCK_DRIFT_MAX_PPM / 1_000_000
        );
        assert_eq!(e.ms, C + 1_400);
    }

    #[test]
    fn a_later_sample_wins_once_drift_outweighs_its_longer_round_trip() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        c.sample(sample(t0, 0, C, 2)); // uncertainty 1 + drift
        c.sample(sample(t0, 9_000, C + 9_003, 9_006)); // uncertainty 3
                                                       // At 9 s the first has drifted 9000 ms * 200 ppm = 1.8 ms: 2 < 3.
        assert_eq!(c.estimate(t0 + ms(9_006)).unwrap().uncertainty_ms, 2);
        // Once the first ages out, the newer one is what is left.
        let e = c.estimate(t0 + ms(CLOCK_SAMPLE_MAX_AGE_MS + 3)).unwrap();
        assert_eq!(e.uncertainty_ms, 3);
    }

    #[test]
    fn the_time_never_goes_back_and_never_before_the_floor() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        c.sample(sample(t0, 0, C, 0));
        assert_eq!(c.now_ms(t0 + ms(100)), Some(C + 100));
        // A newer, equally good sample that says the coordinator is ahead.
        c.sample(sample(t0, 200, C + 250, 200));
        assert_eq!(c.now_ms(t0 + ms(200)), Some(C + 250));
        // One that says it is behind what was read: held, never back.
        let mut d = ClusterClock::default();
        d.sample(sample(t0, 0, C, 0));
        assert_eq!(d.now_ms(t0 + ms(500)), Some(C + 500));
        d.sample(sample(t0, 600, C + 100, 600));
        assert_eq!(
            d.now_ms(t0 + ms(600)),
            Some(C + 500),
            "held at the last reading"
        );
        assert_eq!(d.error_ms(t0 + ms(600)), Some(400), "held 400 ms ahead");
        assert_eq!(
            d.now_ms(t0 + ms(1_100)),
            Some(C + 600),
            "moves again once caught up"
        );
        // The journal's newest timestamp.
        d.raise_floor(C + 5_000);
        assert_eq!(d.now_ms(t0 + ms(1_200)), Some(C + 5_000));
        assert!(!d.within(t0 + ms(1_200), MAX_CLOCK_OFFSET_MS));
        assert!(d.within(t0 + ms(5_900), MAX_CLOCK_OFFSET_MS));
    }

    #[test]
    fn the_wall_clock_of_the_machine_plays_no_part() {
        // Only Instants and the coordinator's readings go in: a process
        // whose wall clock is 30 s ahead reads the same time.
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        c.sample(sample(t0, 0, C, 4));
        assert_eq!(c.now_ms(t0 + ms(2_002)), Some(C + 2_000));
    }

    #[test]
    fn impossible_samples_are_ignored_and_the_window_is_bounded() {
        let t0 = Instant::now();
        let mut c = ClusterClock::default();
        c.sample(Sample {
            sent: t0 + ms(10),
            received: t0,
            coordinator_ms: C,
        });
        c.sample(sample(t0, 0, 0, 1));
        assert_eq!(c.now_ms(t0 + ms(10)), None);
        for i in 0..(CLOCK_SAMPLES_MAX as u64 * 2) {
            c.sample(sample(t0, i, C + i as i64, i + 2));
        }
        assert_eq!(c.samples.len(), CLOCK_SAMPLES_MAX);
        assert!(c.now_ms(t0 + ms(200)).is_some());
        // Extreme values saturate instead of overflowing.
        let mut x = ClusterClock::default();
        x.sample(sample(t0, 0, i64::MAX, 0));
        assert_eq!(x.now_ms(t0 + ms(1)), Some(i64::MAX));
    }
}
