//! Failure detection: each look of the detector logs liveness transitions
//! and replaces a dead primary by its best in-sync secondary, never while
//! the coordinator itself may have missed heartbeats.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tsn_proto::tsn::ProcessKind;

use super::election::next_epoch;
use super::registry::process_name;
use super::ControlPlane;
use crate::persist::ClusterRecord;

impl ControlPlane {
    /// One look at every process: logs liveness transitions and replaces dead
    /// primaries. Does nothing during the grace period after start, nor for a
    /// failure timeout after the coordinator itself stalled: a coordinator
    /// that was not running (descheduled on a saturated machine, or waiting
    /// on its disk) did not hear heartbeats that were sent, and must not
    /// read its own deafness as everyone else's death.
    pub fn tick(&mut self, now: Instant) {
        if let Some(prev) = self.last_tick {
            let gap = now.saturating_duration_since(prev);
            if gap > self.stall_limit() {
                self.listening_since = now;
                tracing::warn!(
                    stalled_ms = gap.as_millis() as u64,
                    "the coordinator itself stalled; nobody is declared dead for the next {} ms",
                    self.failure_timeout.as_millis()
                );
            }
        }
        self.last_tick = Some(now);
        if self.in_grace(now) {
            return;
        }
        let timeout = self.failure_timeout;
        for (&key, p) in self.processes.iter_mut() {
            let silent = now.saturating_duration_since(p.last_heartbeat);
            if p.reported_alive && silent > timeout {
                p.reported_alive = false;
                tracing::warn!(
                    cluster = key.0,
                    address = %p.address,
                    "{} is dead: no heartbeat for {} ms",
                    process_name(key),
                    silent.as_millis()
                );
            }
        }
        for c in 1..=self.cluster_count {
            self.check_primary(c, now);
        }
    }

    /// Promotes the best in-sync secondary of `c` if its primary is dead.
    fn check_primary(&mut self, c: u32, now: Instant) {
        let rec = self.record(c).clone();
        if rec.primary_id == 0 {
            return;
        }
        let primary = self
            .processes
            .get(&(c, ProcessKind::Server, rec.primary_id));
        if primary.is_some_and(|p| self.is_alive(p, now)) {
            self.waiting_logged.remove(&c);
            return;
        }
        // Never registered since start: silent since the start.
        let silent_since = primary.map_or(self.started_at, |p| p.last_heartbeat);
        let missed_ms = now.saturating_duration_since(silent_since).as_millis();

        let Some(best) = self.promotion_candidate(&rec, now) else {
            if self.waiting_logged.insert(c) {
                tracing::warn!(
                    cluster = c,
                    "cluster {c} has no in-sync secondary and waits for its primary {}",
                    rec.primary_id
                );
            }
            return;
        };
        let Ok(epoch) = next_epoch(rec.epoch) else {
            tracing::error!(cluster = c, "epoch {} cannot grow: no promotion", rec.epoch);
            return;
        };
        let promoted = ClusterRecord {
            cluster_id: c,
            epoch,
            primary_id: best,
            in_sync: BTreeSet::new(),
        };
        if let Err(e) = self.store_cluster(promoted) {
            tracing::error!(cluster = c, error = %e, "could not store a promotion; will retry");
            return;
        }
        self.waiting_logged.remove(&c);
        tracing::warn!(
            "cluster {c}: promoted server {best} (epoch {epoch}), primary {} missed heartbeats for {missed_ms} ms",
            rec.primary_id
        );
    }

    /// The alive in-sync secondary with the most of the journal (largest
    /// (last_epoch, last_seq)); ties go to the lowest server id. One whose
    /// cluster time is unknown or beyond its bound is never promoted: its
    /// timestamps could go back, or stray from the other clusters'.
    fn promotion_candidate(&self, rec: &ClusterRecord, now: Instant) -> Option<u32> {
        self.servers(rec.cluster_id)
            .filter(|(k, p)| {
                k.2 != rec.primary_id
                    && rec.in_sync.contains(&k.2)
                    && self.is_alive(p, now)
                    && !p.clock_unbounded
            })
            .max_by_key(|(k, p)| (p.last_epoch, p.last_seq, Reverse(k.2)))
            .map(|(k, _)| k.2)
    }

    pub(super) fn in_grace(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.listening_since) <= self.failure_timeout
    }

    /// A gap between two looks of the failure detector longer than this is
    /// a stall of the coordinator (it looks every tenth of the timeout).
    fn stall_limit(&self) -> Duration {
        (self.failure_timeout / 4).max(Duration::from_millis(20))
    }
}
