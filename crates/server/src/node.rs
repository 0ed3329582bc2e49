//! The state one server shares between its tasks, each piece with one
//! owner that keeps its invariants inside:
//!
//! - the store (the writer thread appends; the rest read), behind `store`;
//! - the role and epoch, a watch channel set by [`crate::role`];
//! - the [`CommitTracker`]: durable position, commit point, in-sync set,
//!   each secondary's progress and the wake-ups waiting for the commit
//!   point, behind `commit` — every change goes through
//!   [`Node::with_commit`], which publishes the commit point and announces
//!   the wake-ups the change released;
//! - the [`Lease`] from the coordinator;
//! - the cluster time ([`SharedClock`], sampled by the heartbeat loop),
//!   the one source of every deciding timestamp;
//! - the watchers of open timeline streams, and their [`Feeds`].
//!
//! Lock order (a thread holding one may take only those after it):
//! `store` → `commit` → `watchers`, and `store` → `feeds` (then one
//! feed's own lock). `lease`, `coordinator_heard_at`, `recent` and
//! `reconciled` are taken alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Status;
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::clock::SharedClock;
use tsn_cluster::coord::CoordClient;
pub use tsn_cluster::sync::lock;
use tsn_datastore::journal::{Line, RecentLines};
use tsn_datastore::{validate, Layout, Op, Store};

use crate::commit::CommitTracker;
use crate::feed::{Feed, Feeds};
use crate::lease::Lease;
use crate::metrics::ServerMetrics;
use crate::write_queue::{WriteOutcome, WriteQueue, Written};

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

pub struct Node {
    pub cluster_id: u32,
    pub server_id: u32,
    pub layout: Layout,
    pub store: Mutex<Store>,
    /// The store's in-memory journal tail, readable without the store lock
    /// (which the writer holds through each fsync).
    recent: Mutex<Arc<Mutex<RecentLines>>>,
    pub coord: CoordClient,
    /// The cluster secret: carried by every call to another server.
    pub auth: ClusterAuth,
    pub mirror_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    role: watch::Sender<RoleView>,
    commit: Mutex<CommitTracker>,
    /// The commit point as last published by [`Node::with_commit`].
    commit_seq: watch::Sender<u64>,
    /// The open timeline streams' wake-up channels, by timeline owner.
    watchers: Mutex<HashMap<u32, watch::Sender<u64>>>,
    /// The open timeline streams' new lines, handed over by the writer.
    pub feeds: Feeds,
    lease: Mutex<Lease>,
    /// When the last heartbeat the coordinator answered was sent.
    coordinator_heard_at: Mutex<Option<Instant>>,
    /// Cluster time: every post's `ts_ms` and follow's `since_ms`.
    pub clock: SharedClock,
    writer: WriteQueue,
    /// The journal's last written seq, fsynced or not yet: what the mirror
    /// may send (see [`Node::note_written`]). The tracker holds the durable end.
    appended: watch::Sender<u64>,
    /// (epoch, primary) whose history this server has reconciled its
    /// journal with; a secondary accepts entries only from that primary.
    pub reconciled: Mutex<Option<(u64, u32)>>,
    /// How many clusters there are, as the coordinator's last heartbeat
    /// reply said (0: not told yet). Bounds the cluster ids ops may name.
    cluster_count: AtomicU32,
    /// Every client call needs a session token (`--require-accounts`).
    pub require_accounts: bool,
    /// What the operator's `/metrics` shows (see [`crate::metrics`]).
    pub metrics: ServerMetrics,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster_id: u32,
        server_id: u32,
        store: Store,
        coord: CoordClient,
        auth: ClusterAuth,
        mirror_timeout_ms: u64,
        heartbeat_interval_ms: u64,
        clock: SharedClock,
        writer: WriteQueue,
    ) -> Node {
        let layout = store.layout().clone();
        // No timestamp this server gives is older than its journal's.
        clock.raise_floor(store.state().last_ts_ms());
        let recent = Mutex::new(store.recent_lines());
        let (last_seq, last_epoch) = (store.last_seq(), store.last_epoch());
        Node {
            cluster_id,
            server_id,
            layout,
            recent,
            store: Mutex::new(store),
            coord,
            auth,
            mirror_timeout_ms,
            heartbeat_interval_ms,
            role: watch::channel(RoleView {
                role: Role::Unknown,
                epoch: last_epoch,
                primary_id: 0,
            })
            .0,
            commit: Mutex::new(CommitTracker::new(last_seq, last_epoch)),
            commit_seq: watch::channel(0).0,
            watchers: Mutex::new(HashMap::new()),
            feeds: Feeds::default(),
            lease: Mutex::new(Lease::default()),
            coordinator_heard_at: Mutex::new(None),
            clock,
            writer,
            appended: watch::channel(last_seq).0,
            reconciled: Mutex::new(None),
            cluster_count: AtomicU32::new(0),
            require_accounts: false,
            metrics: ServerMetrics::default(),
        }
    }

    // ------------------------------------------------------------ role

    /// The cluster count the coordinator told, if it did.
    pub fn cluster_count(&self) -> Option<u32> {
        Some(self.cluster_count.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    pub fn set_cluster_count(&self, n: u32) {
        self.cluster_count.store(n, Ordering::Relaxed);
    }

    pub fn role(&self) -> RoleView {
        self.role.borrow().clone()
    }

    pub fn subscribe_role(&self) -> watch::Receiver<RoleView> {
        self.role.subscribe()
    }

    pub fn set_role(&self, view: RoleView) {
        self.role.send_replace(view);
    }

    /// The coordinator answered a heartbeat sent at `sent_at`.
    pub fn heard_coordinator(&self, sent_at: Instant) {
        let mut at = lock(&self.coordinator_heard_at);
        *at = (*at).max(Some(sent_at));
    }

    /// Whether this server hears the coordinator now: then, as a
    /// secondary, its acknowledgements do not renew the primary's lease
    /// ([`crate::lease::hears_coordinator`]).
    pub fn hears_coordinator(&self) -> bool {
        let heard_at = *lock(&self.coordinator_heard_at);
        crate::lease::hears_coordinator(
            heard_at,
            Instant::now(),
            Duration::from_millis(self.heartbeat_interval_ms),
        )
    }

    pub fn confirm_lease(&self, sent_at: Instant, failure_timeout_ms: u64) {
        lock(&self.lease).confirm(sent_at, failure_timeout_ms);
    }

    /// Whether this server may accept a write now: it is the primary, and
    /// its lease holds — confirmed recently by the coordinator, or by every
    /// in-sync secondary (only those could be promoted in its place, and a
    /// promoted one refuses this epoch). This is what keeps a primary that
    /// was frozen or cut off from taking writes after a failover.
    ///
    /// And its cluster time is known and within `--max-clock-offset-ms` of
    /// the coordinator's clock: a primary that has heard no heartbeat
    /// reply for [`tsn_cluster::clock::CLOCK_SAMPLE_MAX_AGE_MS`] stops
    /// acknowledging even while its secondaries confirm it.
    pub fn may_write(&self) -> Result<u64, Status> {
        let view = self.role();
        if view.role != Role::Primary {
            return Err(not_primary(&view, self.cluster_id));
        }
        if !self.clock.within_bound() {
            return Err(self.clock_unbounded());
        }
        let now = Instant::now();
        let lease = *lock(&self.lease);
        if lease.holds(now) || lock(&self.commit).secondaries_confirm(now, lease.length()) {
            Ok(view.epoch)
        } else {
            Err(Status::unavailable(format!(
                "server {} of cluster {} lost its lease as primary; ask the coordinator",
                self.server_id, self.cluster_id
            )))
        }
    }

    /// The cluster time now, for a timestamp that decides something (a
    /// post's `ts_ms`, a follow's `since_ms`, how far ahead an arriving
    /// post may be); unavailable while it is unknown.
    pub fn cluster_now_ms(&self) -> Result<i64, Status> {
        self.clock.now_ms().ok_or_else(|| self.clock_unbounded())
    }

    /// A new term starts: its timestamps start no earlier than the
    /// journal's newest (the old primary's clock may have been ahead).
    pub fn start_clock_term(&self) {
        let last_ts_ms = lock(&self.store).state().last_ts_ms();
        self.clock.raise_floor(last_ts_ms);
    }

    fn clock_unbounded(&self) -> Status {
        Status::unavailable(format!(
            "server {} of cluster {} does not know the cluster time within {} ms (error {}); ask the coordinator",
            self.server_id,
            self.cluster_id,
            self.clock.max_offset_ms(),
            match self.clock.error_ms() {
                Some(ms) => format!("{ms} ms"),
                None => "unknown".to_string(),
            }
        ))
    }

    // ------------------------------------------------------------ journal position

    pub fn last_seq(&self) -> u64 {
        self.position().0
    }

    /// (last durable seq, its epoch), read as one value.
    pub fn position(&self) -> (u64, u64) {
        lock(&self.commit).durable()
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
        self.with_commit(|c| c.set_durable(last_seq, last_epoch));
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

    /// Reloads `store` (this node's, locked by the caller) from the disk
    /// after an append failed (a full disk): the torn line it may have left
    /// is cut and the in-memory state is the journal's again. On error the
    /// old store stays; the caller refuses writes until a reload succeeds.
    pub fn reload_store(&self, store: &mut Store) -> tsn_datastore::Result<()> {
        *store = Store::open(self.layout.clone(), self.cluster_id)?;
        self.store_rebuilt(store);
        Ok(())
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
        *self.commit_seq.borrow()
    }

    pub fn subscribe_commit(&self) -> watch::Receiver<u64> {
        self.commit_seq.subscribe()
    }

    /// Changes the commit tracker through `change`, then publishes the
    /// commit point and wakes the streams whose lines it released — both
    /// under the tracker's lock, so that what is published only grows
    /// within a term and no released wake-up is lost or reordered.
    pub fn with_commit<R>(&self, change: impl FnOnce(&mut CommitTracker) -> R) -> R {
        let mut tracker = lock(&self.commit);
        let result = change(&mut tracker);
        let commit = tracker.commit_seq();
        self.commit_seq.send_if_modified(|c| {
            let moved = *c != commit;
            *c = commit;
            moved
        });
        let wakes = tracker.take_released();
        if !wakes.is_empty() {
            let mut watchers = lock(&self.watchers);
            for (seq, owner) in wakes {
                let gone = match watchers.get(&owner) {
                    Some(tx) => {
                        tx.send_replace(seq);
                        tx.receiver_count() == 0
                    }
                    None => false,
                };
                if gone {
                    watchers.remove(&owner);
                }
            }
        }
        result
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
    ///
    /// Every op must have the shape every replica accepts and a journal
    /// line within the limit ([`tsn_datastore::validate`]): a line a
    /// secondary would refuse is never committed here.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<WriteOutcome>, Status> {
        let started = Instant::now();
        let result = self.write_unmetered(ops).await;
        self.metrics.note_write(started.elapsed(), &result);
        result
    }

    async fn write_unmetered(&self, ops: Vec<Op>) -> Result<Vec<WriteOutcome>, Status> {
        for (i, op) in ops.iter().enumerate() {
            validate::shape(op)
                .and_then(|()| validate::line_fits(op))
                .map_err(|m| Status::invalid_argument(format!("op {i}: {m}")))?;
        }
        let Written {
            outcomes,
            epoch,
            wait_for_seq,
        } = self.writer.submit(ops).await?;
        if wait_for_seq > 0 {
            let timeout = Duration::from_millis(self.mirror_timeout_ms * 4 + 2_000);
            self.wait_committed(wait_for_seq, epoch, timeout).await?;
        }
        Ok(outcomes)
    }

    // ------------------------------------------------------------ timeline notifications

    /// Records that each `(seq, owner)`'s timeline got line `seq` (durable
    /// here); its streams wake once the commit point reaches it — at once
    /// if it has. One lock for a whole batch of lines.
    pub fn note_timeline_lines(&self, lines: impl IntoIterator<Item = (u64, u32)>) {
        self.with_commit(|c| {
            for (seq, owner) in lines {
                c.note_line(seq, owner);
            }
        });
    }

    /// How many timeline streams are open on this server.
    pub fn open_streams(&self) -> usize {
        lock(&self.watchers)
            .values()
            .map(|w| w.receiver_count())
            .sum()
    }

    /// A feed of `user`'s new lines for one stream, complete after the
    /// journal's end now.
    pub fn register_feed(&self, user: u32) -> Arc<Feed> {
        let durable = lock(&self.store).last_seq();
        self.feeds.register(user, durable)
    }

    /// A receiver that changes whenever `user`'s timeline gets a committed line.
    pub fn watch_timeline(&self, user: u32) -> watch::Receiver<u64> {
        lock(&self.watchers)
            .entry(user)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

pub fn not_primary(view: &RoleView, cluster_id: u32) -> Status {
    Status::unavailable(format!(
        "not the primary of cluster {cluster_id} (epoch {}); ask the coordinator for the current one",
        view.epoch
    ))
}
