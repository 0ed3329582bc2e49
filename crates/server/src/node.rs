//! The state one server shares between its tasks: the store, its role and
//! epoch, the commit point, the replication progress of each secondary,
//! the lease, and the subscriptions of open timeline streams.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use tsn_cluster::coord::CoordClient;
use tsn_datastore::journal::{Line, RecentLines};
use tsn_datastore::{Layout, Op, Store};

use crate::writer::{Outcome, WriteRequest, Written};

/// Most requests waiting for the writer; past this, clients are told the
/// server is busy instead of queueing without bound.
pub const WRITE_QUEUE_MAX_REQUESTS: usize = 4096;
/// Most timeline lines waiting to be announced to open streams.
const NOTIFY_QUEUE_MAX_ENTRIES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not yet told by the coordinator: serves nobody.
    Unknown,
    Primary,
    Secondary,
}

/// What this server knows of its cluster, from the coordinator.
#[derive(Clone, Debug)]
pub struct RoleView {
    pub role: Role,
    pub epoch: u64,
    pub primary_id: u32,
}

/// How far one secondary is.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerAck {
    /// Its last durable seq, as it last told us.
    pub acked_seq: u64,
    /// When the request it last acknowledged was sent: it renews the lease.
    pub ack_sent_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
pub struct Expanding {
    pub target_seq: u64,
    pub asking: bool,
}

#[derive(Default)]
pub struct Replication {
    /// Secondaries every commit waits for (the coordinator's in-sync set).
    pub required: BTreeSet<u32>,
    /// Secondaries being added to the in-sync set, with the seq each must
    /// reach before the coordinator is asked (everything that may have been
    /// committed without it). Commits wait for them too.
    pub expanding: BTreeMap<u32, Expanding>,
    pub peers: HashMap<u32, PeerAck>,
    /// When the in-sync set was last changed by this server; heartbeat
    /// replies from before that are not used to overwrite it.
    pub changed_at: Option<Instant>,
}

#[derive(Default)]
struct Notifications {
    /// (seq, timeline owner) of committed-soon timeline lines, in seq order.
    pending: VecDeque<(u64, u32)>,
    watchers: HashMap<u32, watch::Sender<u64>>,
}

pub struct Node {
    pub cluster_id: u32,
    pub server_id: u32,
    pub layout: Layout,
    pub store: Mutex<Store>,
    /// The store's in-memory journal tail, readable without the store lock
    /// (which the writer holds through each fsync).
    recent: Mutex<Arc<Mutex<RecentLines>>>,
    pub coord: CoordClient,
    pub mirror_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    last_seq: AtomicU64,
    last_epoch: AtomicU64,
    role: watch::Sender<RoleView>,
    commit: watch::Sender<u64>,
    pub repl: Mutex<Replication>,
    notify: Mutex<Notifications>,
    /// When the last heartbeat that confirmed this server as primary was sent.
    coordinator_confirmed_at: Mutex<Option<Instant>>,
    lease_ms: AtomicU64,
    writer: mpsc::Sender<WriteRequest>,
    /// The journal's last written seq, fsynced or not yet: what the mirror
    /// may send (see [`Node::note_written`]). `last_seq` is the durable end.
    appended: watch::Sender<u64>,
    /// (epoch, primary) whose history this server has reconciled its
    /// journal with; a secondary accepts entries only from that primary.
    pub reconciled: Mutex<Option<(u64, u32)>>,
}

/// Locks a mutex, going on with the data if a thread panicked holding it:
/// every critical section leaves the data consistent before it can panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster_id: u32,
        server_id: u32,
        store: Store,
        coord: CoordClient,
        mirror_timeout_ms: u64,
        heartbeat_interval_ms: u64,
        writer: mpsc::Sender<WriteRequest>,
    ) -> Node {
        let layout = store.layout().clone();
        let recent = Mutex::new(store.recent_lines());
        let (last_seq, last_epoch) = (store.last_seq(), store.last_epoch());
        Node {
            cluster_id,
            server_id,
            layout,
            recent,
            store: Mutex::new(store),
            coord,
            mirror_timeout_ms,
            heartbeat_interval_ms,
            last_seq: AtomicU64::new(last_seq),
            last_epoch: AtomicU64::new(last_epoch),
            role: watch::channel(RoleView {
                role: Role::Unknown,
                epoch: last_epoch,
                primary_id: 0,
            })
            .0,
            commit: watch::channel(0).0,
            repl: Mutex::new(Replication::default()),
            notify: Mutex::new(Notifications::default()),
            coordinator_confirmed_at: Mutex::new(None),
            lease_ms: AtomicU64::new(0),
            writer,
            appended: watch::channel(last_seq).0,
            reconciled: Mutex::new(None),
        }
    }

    // ------------------------------------------------------------ role

    pub fn role(&self) -> RoleView {
        self.role.borrow().clone()
    }

    pub fn subscribe_role(&self) -> watch::Receiver<RoleView> {
        self.role.subscribe()
    }

    pub fn set_role(&self, view: RoleView) {
        self.role.send_replace(view);
    }

    pub fn confirm_lease(&self, sent_at: Instant, failure_timeout_ms: u64) {
        let lease =
            failure_timeout_ms * tsn_cluster::limits::LEASE_PERCENT_OF_FAILURE_TIMEOUT / 100;
        self.lease_ms.store(lease, Ordering::Relaxed);
        *lock(&self.coordinator_confirmed_at) = Some(sent_at);
    }

    /// Whether this server may accept a write now: it is the primary, and
    /// its lease holds — confirmed recently by the coordinator, or by every
    /// in-sync secondary (only those could be promoted in its place, and a
    /// promoted one refuses this epoch). This is what keeps a primary that
    /// was frozen or cut off from taking writes after a failover.
    pub fn may_write(&self) -> Result<u64, Status> {
        let view = self.role();
        if view.role != Role::Primary {
            return Err(not_primary(&view, self.cluster_id));
        }
        let now = Instant::now();
        let lease = Duration::from_millis(self.lease_ms.load(Ordering::Relaxed));
        if lock(&self.coordinator_confirmed_at).is_some_and(|t| now < t + lease) {
            return Ok(view.epoch);
        }
        let repl = lock(&self.repl);
        let all_confirm = repl.required.iter().chain(repl.expanding.keys()).all(|id| {
            repl.peers
                .get(id)
                .and_then(|p| p.ack_sent_at)
                .is_some_and(|t| now < t + lease)
        });
        if all_confirm {
            Ok(view.epoch)
        } else {
            Err(Status::unavailable(format!(
                "server {} of cluster {} lost its lease as primary; ask the coordinator",
                self.server_id, self.cluster_id
            )))
        }
    }

    // ------------------------------------------------------------ journal position

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch.load(Ordering::Acquire)
    }

    /// The journal's last written seq: at least [`Node::last_seq`], more
    /// while the writer's fsync is under way.
    pub fn written_seq(&self) -> u64 {
        *self.appended.borrow()
    }

    /// Called by the writer once a batch is written to the journal, before
    /// its fsync: the mirror sends it to the secondaries at once, so their
    /// write and fsync overlap this one instead of following it. Nothing
    /// counts it as committed before it is durable here too (the commit
    /// point takes the lowest of `last_seq` and the secondaries' acks).
    pub fn note_written(&self, written_seq: u64) {
        debug_assert!(written_seq >= self.last_seq());
        self.appended.send_replace(written_seq);
    }

    /// Called after every append or truncation of the store, once durable.
    pub fn set_position(&self, last_seq: u64, last_epoch: u64) {
        self.last_seq.store(last_seq, Ordering::Release);
        self.last_epoch.store(last_epoch, Ordering::Release);
        // Unchanged after the writer's fsync (noted when written): no wake-up.
        self.appended.send_if_modified(|written| {
            let moved = *written != last_seq;
            *written = last_seq;
            moved
        });
    }

    /// Journal lines after `after_seq`: from memory without taking the
    /// store lock when they are held there, else from the file.
    pub fn journal_lines(&self, after_seq: u64, max_entries: usize, max_bytes: usize) -> Vec<Line> {
        let recent = lock(&self.recent).clone();
        let held = lock(&recent).after(after_seq, max_entries, max_bytes);
        match held {
            Some(lines) => lines,
            None => lock(&self.store).read_journal_lines(after_seq, max_entries, max_bytes),
        }
    }

    /// Called after the store was rebuilt (its journal tail is a new one).
    pub fn store_rebuilt(&self, store: &Store) {
        *lock(&self.recent) = store.recent_lines();
        self.set_position(store.last_seq(), store.last_epoch());
    }

    pub fn subscribe_appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    // ------------------------------------------------------------ commit point

    pub fn commit_seq(&self) -> u64 {
        *self.commit.borrow()
    }

    pub fn subscribe_commit(&self) -> watch::Receiver<u64> {
        self.commit.subscribe()
    }

    /// Moves the commit point to the highest seq durable here and on every
    /// secondary that commits wait for, and wakes the streams whose
    /// timelines it reached. Only the primary commits.
    pub fn recompute_commit(&self) {
        if self.role().role != Role::Primary {
            return;
        }
        let mut commit = self.last_seq();
        {
            let repl = lock(&self.repl);
            for id in repl.required.iter().chain(repl.expanding.keys()) {
                let acked = repl.peers.get(id).map_or(0, |p| p.acked_seq);
                commit = commit.min(acked);
            }
        }
        let moved = self.commit.send_if_modified(|c| {
            if commit > *c {
                *c = commit;
                true
            } else {
                false
            }
        });
        if moved {
            self.announce_up_to(commit);
        }
    }

    /// Starts a term as primary: the commit point is recomputed from
    /// scratch (it may be lower than what an earlier term left).
    pub fn restart_commit(&self) {
        self.clear_pending_notifications();
        self.commit.send_replace(0);
        self.recompute_commit();
    }

    /// Waits until `seq` is committed in `epoch`; fails if this server stops
    /// being that epoch's primary first or the wait exceeds `timeout`.
    pub async fn wait_committed(
        &self,
        seq: u64,
        epoch: u64,
        timeout: Duration,
    ) -> Result<(), Status> {
        let mut commit = self.subscribe_commit();
        let mut role = self.subscribe_role();
        let wait = async {
            loop {
                {
                    let r = role.borrow_and_update();
                    if r.role != Role::Primary || r.epoch != epoch {
                        return Err(Status::unavailable(
                            "the primary changed before the write was committed; retry",
                        ));
                    }
                }
                if *commit.borrow_and_update() >= seq {
                    return Ok(());
                }
                tokio::select! {
                    r = commit.changed() => if r.is_err() { return Err(Status::unavailable("shutting down")) },
                    r = role.changed() => if r.is_err() { return Err(Status::unavailable("shutting down")) },
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Status::unavailable(
                "the write is durable here but no in-sync secondary confirmed it in time; retry with the same post id",
            )),
        }
    }

    // ------------------------------------------------------------ writes

    /// Decides and commits `ops` through the group-commit writer. Returns
    /// once every applied op is committed (durable on the primary and on
    /// every in-sync secondary).
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, Status> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .try_send(WriteRequest { ops, reply: tx })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(format!(
                    "server busy: {WRITE_QUEUE_MAX_REQUESTS} writes are waiting; retry"
                )),
                mpsc::error::TrySendError::Closed(_) => Status::unavailable("shutting down"),
            })?;
        let Written {
            outcomes,
            epoch,
            wait_for_seq,
        } = rx
            .await
            .map_err(|_| Status::unavailable("shutting down"))??;
        if wait_for_seq > 0 {
            let timeout = Duration::from_millis(self.mirror_timeout_ms * 4 + 2_000);
            self.wait_committed(wait_for_seq, epoch, timeout).await?;
        }
        Ok(outcomes)
    }

    // ------------------------------------------------------------ timeline notifications

    /// Records that `owner`'s timeline got line `seq` (not yet committed).
    pub fn note_timeline_line(&self, seq: u64, owner: u32) {
        let mut n = lock(&self.notify);
        if n.pending.len() >= NOTIFY_QUEUE_MAX_ENTRIES {
            n.pending.pop_front();
        }
        n.pending.push_back((seq, owner));
    }

    fn announce_up_to(&self, commit: u64) {
        let mut n = lock(&self.notify);
        while n.pending.front().is_some_and(|&(s, _)| s <= commit) {
            let Some((seq, owner)) = n.pending.pop_front() else {
                break;
            };
            let gone = match n.watchers.get(&owner) {
                Some(tx) => {
                    tx.send_replace(seq);
                    tx.receiver_count() == 0
                }
                None => false,
            };
            if gone {
                n.watchers.remove(&owner);
            }
        }
    }

    /// A receiver that changes whenever `user`'s timeline gets a committed line.
    pub fn watch_timeline(&self, user: u32) -> watch::Receiver<u64> {
        let mut n = lock(&self.notify);
        n.watchers
            .entry(user)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Drops notifications not yet announced: they belong to a suffix that
    /// was cut off, or to a term as primary that ended.
    pub fn clear_pending_notifications(&self) {
        lock(&self.notify).pending.clear();
    }
}

pub fn not_primary(view: &RoleView, cluster_id: u32) -> Status {
    Status::unavailable(format!(
        "not the primary of cluster {cluster_id} (epoch {}); ask the coordinator for the current one",
        view.epoch
    ))
}
