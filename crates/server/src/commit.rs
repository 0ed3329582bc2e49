//! The commit tracker: the one owner of this server's durable position,
//! the commit point, the in-sync set with each secondary's progress, and
//! the timeline wake-ups waiting for the commit point.
//!
//! It does no I/O and reads no clock: every time it needs is passed in, so
//! its rules are unit-tested below. [`crate::node::Node`] keeps it behind
//! one mutex and announces the wake-ups it releases.
//!
//! Invariants, kept inside so that no caller has to remember them:
//! - the commit point is the lowest of the durable end here and the acks of
//!   every secondary that commits wait for (the in-sync set and the ones
//!   being added), recomputed by every change of any of them;
//! - it only grows within a term as primary, and is zero outside one;
//! - a wake-up queued at or below the commit point is handed out at once:
//!   a line may be noted after the commit point already passed it (the
//!   durable end moved and a secondary acked in between), and it must not
//!   wait for the next commit on the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most timeline lines waiting for the commit point; past this the oldest
/// is dropped (its stream still wakes at its next line).
pub const NOTIFY_QUEUE_MAX_ENTRIES: usize = 1 << 20;

/// How far one secondary is.
#[derive(Clone, Copy, Debug, Default)]
struct PeerAck {
    /// Its last durable seq, as it last told us.
    acked_seq: u64,
    /// When the request it last acknowledged was sent: it renews the lease.
    ack_sent_at: Option<Instant>,
}

/// A secondary being added to the in-sync set.
#[derive(Clone, Copy, Debug)]
struct Expanding {
    /// The seq it must reach before the coordinator is asked: everything
    /// that may have been committed without it.
    target_seq: u64,
    /// The coordinator is being asked now.
    asking: bool,
}

/// What the replication task does next about adding a secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpandStep {
    /// Nothing to ask yet (or already in sync, or already asking).
    Wait,
    /// Ask the coordinator to add it to the in-sync set.
    Ask,
}

/// The coordinator's answer to a request to add a secondary.
#[derive(Clone, Debug)]
pub enum ExpandAnswer {
    /// Added: the in-sync set is now this.
    Added(Vec<u32>),
    /// Refused (another epoch, another primary).
    Refused,
    /// Unknown outcome: keep waiting for it, ask again later.
    Failed,
}

/// `(seq, timeline owner)`: the line `seq` of `owner`'s timeline is
/// committed, so that owner's open streams wake.
pub type Wake = (u64, u32);

#[derive(Debug, Default)]
pub struct CommitTracker {
    /// The journal's durable end here: (last seq, its epoch), one value so
    /// that a heartbeat never reads half of an update.
    durable: (u64, u64),
    /// Within a term as primary: the commit point only counts then.
    primary: bool,
    commit_seq: u64,
    /// Secondaries every commit waits for (the coordinator's in-sync set).
    required: BTreeSet<u32>,
    /// Secondaries being added to the in-sync set. Commits wait for them too.
    expanding: BTreeMap<u32, Expanding>,
    peers: HashMap<u32, PeerAck>,
    /// When this server last changed the in-sync set; heartbeat replies
    /// sent before that are not used to overwrite it.
    changed_at: Option<Instant>,
    /// Timeline lines above the commit point, in seq order.
    pending: VecDeque<Wake>,
    /// Wake-ups the commit point reached, not yet taken by the owner.
    released: Vec<Wake>,
}

impl CommitTracker {
    pub fn new(last_seq: u64, last_epoch: u64) -> CommitTracker {
        CommitTracker {
            durable: (last_seq, last_epoch),
            ..CommitTracker::default()
        }
    }

    /// The secondaries every commit waits for now (the in-sync set, and
    /// those being added), each with the last seq it acknowledged (0: none
    /// yet this term).
    /// A secondary being added may already be in the set: each is named
    /// once.
    pub fn waited_acks(&self) -> Vec<(u32, u64)> {
        let peers: BTreeSet<u32> = self.waited_for().collect();
        peers
            .into_iter()
            .map(|peer| (peer, self.peers.get(&peer).map_or(0, |a| a.acked_seq)))
            .collect()
    }

    /// (last durable seq, its epoch).
    pub fn durable(&self) -> (u64, u64) {
        self.durable
    }

    pub fn commit_seq(&self) -> u64 {
        self.commit_seq
    }

    /// The journal is durable up to `last_seq` (after an append, or a
    /// truncation while not primary).
    pub fn set_durable(&mut self, last_seq: u64, last_epoch: u64) {
        self.durable = (last_seq, last_epoch);
        self.recompute();
    }

    /// Starts a term as primary with the coordinator's in-sync set: the
    /// commit point is computed anew (it may be lower than what an earlier
    /// term left), with no secondary's progress known yet.
    pub fn start_term(&mut self, in_sync: &[u32]) {
        self.primary = true;
        self.commit_seq = 0;
        self.required = in_sync.iter().copied().collect();
        self.peers.clear();
        self.expanding.clear();
        self.changed_at = None;
        self.pending.clear();
        self.released.clear();
        self.recompute();
    }

    /// Ends a term as primary: what was not announced belongs to a term
    /// that ended (or to a suffix that will be cut).
    pub fn end_term(&mut self) {
        self.primary = false;
        self.pending.clear();
        self.released.clear();
    }

    /// The coordinator's in-sync set, from a heartbeat reply whose request
    /// was sent at `sent_at`. A reply older than this server's own last
    /// change of the set may not show that change yet, and is not used.
    pub fn heard_in_sync(&mut self, in_sync: &[u32], sent_at: Instant) {
        if self.changed_at.is_none_or(|t| sent_at > t) {
            self.required = in_sync.iter().copied().collect();
        }
        self.recompute();
    }

    /// A secondary acknowledged everything up to `acked_seq` in a request
    /// sent at `sent_at`.
    pub fn peer_acked(&mut self, peer: u32, acked_seq: u64, sent_at: Instant) {
        let p = self.peers.entry(peer).or_default();
        p.acked_seq = acked_seq;
        p.ack_sent_at = Some(sent_at);
        self.recompute();
    }

    /// As [`CommitTracker::peer_acked`], but the acknowledgement does not
    /// renew the lease: the secondary hears the coordinator, which alone
    /// may confirm this primary then.
    pub fn peer_acked_without_lease(&mut self, peer: u32, acked_seq: u64) {
        let p = self.peers.entry(peer).or_default();
        p.acked_seq = acked_seq;
        self.recompute();
    }

    /// Adds a caught-up secondary to the in-sync set, in two steps. Once it
    /// is within `slack_entries` of the durable end, every later commit
    /// waits for it; once it has everything that may have been committed
    /// before that, the coordinator is asked (which makes it eligible for
    /// promotion). Waiting for an exact tie with the journal's end would
    /// never happen under steady load.
    pub fn offer_expand(&mut self, peer: u32, acked_seq: u64, slack_entries: u64) -> ExpandStep {
        if self.required.contains(&peer) {
            return ExpandStep::Wait;
        }
        let last = self.durable.0;
        match self.expanding.get_mut(&peer) {
            None => {
                // `acked_seq` is the secondary's word: it may be anything.
                if acked_seq.saturating_add(slack_entries) >= last {
                    self.expanding.insert(
                        peer,
                        Expanding {
                            target_seq: last,
                            asking: false,
                        },
                    );
                }
                ExpandStep::Wait
            }
            Some(x) if x.asking || acked_seq < x.target_seq => ExpandStep::Wait,
            Some(x) => {
                x.asking = true;
                ExpandStep::Ask
            }
        }
    }

    /// What the coordinator answered to adding `peer`, at `now`.
    pub fn expand_answered(&mut self, peer: u32, answer: ExpandAnswer, now: Instant) {
        match answer {
            ExpandAnswer::Added(in_sync) => {
                self.required = in_sync.into_iter().collect();
                self.expanding.remove(&peer);
                self.changed_at = Some(now);
            }
            ExpandAnswer::Refused => {
                self.expanding.remove(&peer);
            }
            ExpandAnswer::Failed => {
                if let Some(x) = self.expanding.get_mut(&peer) {
                    x.asking = false;
                }
            }
        }
        self.recompute();
    }

    /// A secondary stopped answering: commits stop waiting for it as one
    /// being added. Returns whether it is in the in-sync set, in which case
    /// commits go on waiting for it until the coordinator dropped it
    /// ([`CommitTracker::dropped`]), so that it can no longer be promoted.
    pub fn peer_failed(&mut self, peer: u32) -> bool {
        self.expanding.remove(&peer);
        self.recompute();
        self.required.contains(&peer)
    }

    /// The coordinator dropped a secondary: the in-sync set is now this.
    pub fn dropped(&mut self, in_sync: Vec<u32>, now: Instant) {
        self.required = in_sync.into_iter().collect();
        self.changed_at = Some(now);
        self.recompute();
    }

    /// Whether every secondary that commits wait for confirmed this
    /// server's epoch less than `lease` before `now`: only those could be
    /// promoted in its place, and a promoted one refuses this epoch.
    pub fn secondaries_confirm(&self, now: Instant, lease: Duration) -> bool {
        self.waited_for().all(|id| {
            self.peers
                .get(&id)
                .and_then(|p| p.ack_sent_at)
                .is_some_and(|t| now < t + lease)
        })
    }

    /// `owner`'s timeline got line `seq` (durable here, maybe not yet
    /// committed). Handed out at once when the commit point already
    /// covers it.
    pub fn note_line(&mut self, seq: u64, owner: u32) {
        if self.primary && seq <= self.commit_seq {
            self.released.push((seq, owner));
            return;
        }
        if self.pending.len() >= NOTIFY_QUEUE_MAX_ENTRIES {
            self.pending.pop_front();
        }
        self.pending.push_back((seq, owner));
    }

    /// The wake-ups released since the last call, in seq order: the
    /// owner of the tracker announces them to the streams.
    pub fn take_released(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.released)
    }

    fn waited_for(&self) -> impl Iterator<Item = u32> + '_ {
        self.required.iter().chain(self.expanding.keys()).copied()
    }

    /// Moves the commit point to the highest seq durable here and on every
    /// secondary that commits wait for, releasing the wake-ups it reached.
    fn recompute(&mut self) {
        if !self.primary {
            return;
        }
        let commit = self.waited_for().fold(self.durable.0, |c, id| {
            c.min(self.peers.get(&id).map_or(0, |p| p.acked_seq))
        });
        if commit <= self.commit_seq {
            return;
        }
        self.commit_seq = commit;
        while self.pending.front().is_some_and(|&(s, _)| s <= commit) {
            self.released.extend(self.pending.pop_front());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary_with(in_sync: &[u32]) -> CommitTracker {
        let mut c = CommitTracker::new(0, 1);
        c.start_term(in_sync);
        c
    }

    #[test]
    fn commit_waits_for_every_in_sync_secondary() {
        let t0 = Instant::now();
        let mut c = primary_with(&[2, 3]);
        c.set_durable(10, 1);
        assert_eq!(c.commit_seq(), 0);
        c.peer_acked(2, 10, t0);
        assert_eq!(c.commit_seq(), 0, "secondary 3 has not acked");
        c.peer_acked(3, 7, t0);
        assert_eq!(c.commit_seq(), 7);
        c.peer_acked(3, 12, t0);
        assert_eq!(c.commit_seq(), 10, "never past the durable end here");
    }

    #[test]
    fn commit_never_goes_back_within_a_term() {
        let t0 = Instant::now();
        let mut c = primary_with(&[]);
        c.set_durable(5, 1);
        assert_eq!(c.commit_seq(), 5);
        // A secondary joins the in-sync set knowing less: commits wait for
        // it from now on, but what was committed stays committed.
        c.heard_in_sync(&[2], t0 + Duration::from_millis(1));
        c.set_durable(6, 1);
        assert_eq!(c.commit_seq(), 5);
        c.peer_acked(2, 6, t0);
        assert_eq!(c.commit_seq(), 6);
    }

    #[test]
    fn only_a_primary_commits_and_a_new_term_starts_from_zero() {
        let mut c = CommitTracker::new(4, 1);
        c.set_durable(5, 1);
        assert_eq!(c.commit_seq(), 0, "not primary");
        c.start_term(&[]);
        assert_eq!(c.commit_seq(), 5);
        c.end_term();
        c.set_durable(9, 1);
        assert_eq!(c.commit_seq(), 5, "no commit outside a term");
    }

    /// The interleaving that lost a stream's wake-up: the durable end
    /// moves past a line, a secondary acks it (the commit point passes it),
    /// and only then is the line noted. Its wake-up must come at once,
    /// not with the next commit on the cluster.
    #[test]
    fn a_line_noted_after_its_commit_wakes_at_once() {
        let t0 = Instant::now();
        let mut c = primary_with(&[2]);
        c.set_durable(8, 1);
        c.peer_acked(2, 8, t0);
        assert_eq!(c.commit_seq(), 8);
        assert!(c.take_released().is_empty());
        c.note_line(8, 42);
        assert_eq!(c.take_released(), vec![(8, 42)]);
        c.note_line(9, 43);
        assert!(
            c.take_released().is_empty(),
            "above the commit point: waits"
        );
        c.set_durable(9, 1);
        c.peer_acked(2, 9, t0);
        assert_eq!(c.take_released(), vec![(9, 43)]);
    }

    #[test]
    fn lines_wake_in_order_as_the_commit_point_passes_them() {
        let t0 = Instant::now();
        let mut c = primary_with(&[2]);
        c.set_durable(3, 1);
        for (seq, owner) in [(1, 10), (2, 11), (3, 12)] {
            c.note_line(seq, owner);
        }
        assert!(c.take_released().is_empty());
        c.peer_acked(2, 2, t0);
        assert_eq!(c.take_released(), vec![(1, 10), (2, 11)]);
        c.peer_acked(2, 3, t0);
        assert_eq!(c.take_released(), vec![(3, 12)]);
    }

    #[test]
    fn a_new_term_drops_wake_ups_of_the_old_one() {
        let mut c = primary_with(&[2]);
        c.set_durable(3, 1);
        c.note_line(3, 10);
        c.end_term();
        c.start_term(&[2]);
        c.peer_acked(2, 3, Instant::now());
        assert!(c.take_released().is_empty());
    }

    #[test]
    fn adding_a_secondary_waits_for_it_then_asks() {
        let t0 = Instant::now();
        let mut c = primary_with(&[]);
        c.set_durable(1_000, 1);
        assert_eq!(c.offer_expand(2, 100, 512), ExpandStep::Wait);
        assert_eq!(c.commit_seq(), 1_000, "too far behind: not waited for");
        assert_eq!(c.offer_expand(2, 600, 512), ExpandStep::Wait);
        c.set_durable(1_010, 1);
        assert_eq!(c.commit_seq(), 1_000, "now commits wait for it");
        assert_eq!(c.offer_expand(2, 999, 512), ExpandStep::Wait);
        assert_eq!(c.offer_expand(2, 1_000, 512), ExpandStep::Ask);
        assert_eq!(c.offer_expand(2, 1_000, 512), ExpandStep::Wait, "asking");
        c.peer_acked(2, 1_005, t0);
        assert_eq!(c.commit_seq(), 1_005);
        // The coordinator's set may name it before its answer arrives:
        // still one secondary waited for.
        c.heard_in_sync(&[2], t0);
        assert_eq!(c.waited_acks(), vec![(2, 1_005)], "waited for once");
        // Added: the commit point is recomputed inside, with no caller
        // having to remember it.
        c.peer_acked(2, 1_010, t0);
        c.expand_answered(2, ExpandAnswer::Added(vec![2]), t0);
        assert_eq!(c.commit_seq(), 1_010);
        assert_eq!(c.offer_expand(2, 1_010, 512), ExpandStep::Wait, "in sync");
    }

    #[test]
    fn a_failed_ask_is_asked_again_and_a_refusal_stops_waiting() {
        let t0 = Instant::now();
        let mut c = primary_with(&[]);
        c.set_durable(10, 1);
        c.offer_expand(2, 10, 512);
        assert_eq!(c.offer_expand(2, 10, 512), ExpandStep::Ask);
        c.expand_answered(2, ExpandAnswer::Failed, t0);
        assert_eq!(c.offer_expand(2, 10, 512), ExpandStep::Ask);
        c.set_durable(11, 1);
        assert_eq!(c.commit_seq(), 10, "waits for the one being added");
        c.expand_answered(2, ExpandAnswer::Refused, t0);
        assert_eq!(c.commit_seq(), 11);
    }

    #[test]
    fn a_failed_in_sync_secondary_holds_commits_until_dropped() {
        let t0 = Instant::now();
        let mut c = primary_with(&[2]);
        c.peer_acked(2, 4, t0);
        c.set_durable(6, 1);
        assert!(c.peer_failed(2), "in sync: held until dropped");
        assert_eq!(c.commit_seq(), 4);
        c.dropped(vec![], t0 + Duration::from_millis(5));
        assert_eq!(c.commit_seq(), 6);
        // A heartbeat reply sent before the drop still names it: ignored.
        c.heard_in_sync(&[2], t0 + Duration::from_millis(1));
        c.set_durable(7, 1);
        assert_eq!(c.commit_seq(), 7);
        // One sent after the drop is the coordinator's word.
        c.heard_in_sync(&[2], t0 + Duration::from_millis(9));
        c.set_durable(8, 1);
        assert_eq!(c.commit_seq(), 7);
    }

    #[test]
    fn the_secondaries_confirm_the_lease_only_while_all_acked_recently() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(400);
        let mut c = primary_with(&[2, 3]);
        assert!(!c.secondaries_confirm(t0, lease), "no ack yet");
        c.peer_acked(2, 0, t0);
        c.peer_acked(3, 0, t0 + Duration::from_millis(100));
        assert!(c.secondaries_confirm(t0 + Duration::from_millis(399), lease));
        assert!(!c.secondaries_confirm(t0 + Duration::from_millis(400), lease));
        let none = primary_with(&[]);
        assert!(none.secondaries_confirm(t0, lease), "no secondary to ask");
    }

    #[test]
    fn an_ack_of_a_secondary_that_hears_the_coordinator_commits_but_does_not_renew() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(400);
        let mut c = primary_with(&[2]);
        c.set_durable(3, 1);
        c.peer_acked_without_lease(2, 3);
        assert_eq!(c.commit_seq(), 3, "it counts for the commit point");
        assert!(!c.secondaries_confirm(t0, lease), "but not for the lease");
        c.peer_acked(2, 3, t0);
        c.peer_acked_without_lease(2, 3);
        assert!(c.secondaries_confirm(t0 + Duration::from_millis(399), lease));
        assert!(!c.secondaries_confirm(t0 + Duration::from_millis(400), lease));
    }
}
