//! Every decision of the coordinator, as plain functions of its state and
//! the time.
//!
//! Nothing here does network I/O or reads the clock: callers pass `now`, so
//! the tests replay any timing exactly. Changes to what is persisted (epoch,
//! primary, in-sync set, assignments) follow one rule: build the new value,
//! store it durably, and only then adopt it in memory and announce it. A
//! failed write therefore changes nothing, and no reply ever names an epoch
//! or a primary that a restart could forget.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tsn_datastore::limits::USER_ID_MAX;
use tsn_proto::csce438::ServerInfo;
use tsn_proto::tsn::{
    ClusterView, HeartbeatReply, HeartbeatRequest, InSyncChange, InSyncReply, Peer, ProcessKind,
    ProcessView, Role,
};

use crate::config::{
    ADDRESS_MAX_BYTES, ASSIGNED_USERS_MAX, ASSIGN_USERS_PER_CALL_MAX, CLUSTERS_MAX, EPOCH_MAX,
    SERVERS_PER_CLUSTER_MAX, SERVER_ID_MAX,
};
use crate::persist::{self, Assignment, ClusterRecord, Files, StoredClusters};

/// Why a request was refused. Each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot store the coordinator state: {0}")]
    Storage(#[from] persist::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// (cluster id, kind, server id); a sync service has server id 0.
type ProcessKey = (u32, ProcessKind, u32);

/// What the coordinator knows of one registered process. Not persisted: a
/// restarted coordinator learns it again from the next heartbeats.
#[derive(Clone, Debug)]
struct Process {
    address: String,
    /// host:port of its MP3 variant listener (empty: none).
    mp3_address: String,
    last_heartbeat: Instant,
    last_seq: u64,
    last_epoch: u64,
    requested_role: Role,
    /// Whether its last logged transition was to alive, so each transition
    /// is logged once.
    reported_alive: bool,
}

pub struct State {
    /// Every cluster ever stored; always holds 1..=cluster_count.
    clusters: BTreeMap<u32, ClusterRecord>,
    cluster_count: u32,
    processes: BTreeMap<ProcessKey, Process>,
    assignments: HashMap<u32, u32>,
    failure_timeout: Duration,
    started_at: Instant,
    /// Since when the coordinator has been listening without a stall of its
    /// own: nobody is judged dead before a failure timeout has passed since.
    listening_since: Instant,
    /// When the failure detector last looked.
    last_tick: Option<Instant>,
    /// Clusters whose "no in-sync secondary" wait is already logged.
    waiting_logged: BTreeSet<u32>,
    files: Files,
}

impl State {
    /// Loads the stored state from `files` for `cluster_count` clusters.
    /// `now` starts the grace period during which nobody is declared dead.
    pub fn open(
        files: Files,
        cluster_count: u32,
        failure_timeout: Duration,
        now: Instant,
    ) -> persist::Result<State> {
        assert!((1..=CLUSTERS_MAX).contains(&cluster_count));
        let stored = files.load_clusters()?;
        let stored_count = stored.as_ref().map(|s| s.cluster_count);
        let mut clusters: BTreeMap<u32, ClusterRecord> = stored
            .map(|s| s.clusters.into_iter().map(|r| (r.cluster_id, r)).collect())
            .unwrap_or_default();
        for c in 1..=cluster_count {
            clusters.entry(c).or_insert_with(|| ClusterRecord::fresh(c));
        }

        let mut assignments = HashMap::new();
        for a in files.load_assignments()? {
            if let Some(&first) = assignments.get(&a.user) {
                if first != a.cluster {
                    tracing::warn!(
                        user = a.user,
                        kept = first,
                        ignored = a.cluster,
                        "user assigned twice; keeping the first assignment"
                    );
                }
                continue;
            }
            assignments.insert(a.user, a.cluster);
        }
        let beyond = assignments.values().filter(|&&c| c > cluster_count).count();

        let state = State {
            clusters,
            cluster_count,
            processes: BTreeMap::new(),
            assignments,
            failure_timeout,
            started_at: now,
            listening_since: now,
            last_tick: None,
            waiting_logged: BTreeSet::new(),
            files,
        };
        match stored_count {
            Some(n) if n == cluster_count => {}
            Some(n) => tracing::warn!(
                stored = n,
                now = cluster_count,
                "the cluster count changed: users assigned before keep their cluster, new users are spread over {cluster_count} clusters"
            ),
            None => tracing::info!(clusters = cluster_count, "no stored state: starting fresh"),
        }
        if beyond > 0 {
            tracing::warn!(
                users = beyond,
                clusters = cluster_count,
                "some users are assigned to a cluster beyond --clusters and cannot be served until it comes back"
            );
        }
        if stored_count != Some(cluster_count) {
            state.files.save_clusters(&state.stored(&state.clusters))?;
        }
        for r in state.clusters.values().filter(|r| r.epoch > 0) {
            tracing::info!(
                cluster = r.cluster_id,
                epoch = r.epoch,
                primary = r.primary_id,
                in_sync = ?r.in_sync,
                "loaded cluster"
            );
        }
        tracing::info!(users = state.assignments.len(), "loaded client assignments");
        Ok(state)
    }

    pub fn cluster_count(&self) -> u32 {
        self.cluster_count
    }

    // ------------------------------------------------------------ heartbeats

    /// Registers or refreshes the sender, decides a server's role, and tells
    /// it the cluster's current view.
    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now: Instant) -> Result<HeartbeatReply> {
        let kind = self.check_heartbeat(req)?;
        let c = req.cluster_id;
        self.register((c, kind, req.server_id), req, now)?;
        let role = match kind {
            ProcessKind::Server => self.decide_role(req)?,
            _ => Role::Unspecified,
        };
        Ok(self.reply(c, role, now))
    }

    /// Refuses a malformed heartbeat before anything changes; returns its kind.
    fn check_heartbeat(&self, req: &HeartbeatRequest) -> Result<ProcessKind> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        self.check_cluster(req.cluster_id)?;
        let kind = match ProcessKind::try_from(req.kind) {
            Ok(ProcessKind::Server) => ProcessKind::Server,
            Ok(ProcessKind::SyncService) => ProcessKind::SyncService,
            _ => {
                return invalid(format!(
                    "process kind {} is not SERVER or SYNC_SERVICE",
                    req.kind
                ))
            }
        };
        match kind {
            ProcessKind::Server if req.server_id == 0 || req.server_id > SERVER_ID_MAX => {
                return invalid(format!(
                    "server ids are 1..={SERVER_ID_MAX}, got {}",
                    req.server_id
                ))
            }
            ProcessKind::SyncService if req.server_id != 0 => {
                return invalid(format!(
                    "a sync service heartbeats with server id 0, got {}",
                    req.server_id
                ))
            }
            _ => {}
        }
        check_address(&req.address)?;
        if !req.mp3_address.is_empty() {
            check_address(&req.mp3_address)?;
        }
        if req.epoch > EPOCH_MAX || req.last_epoch > EPOCH_MAX {
            return invalid(format!("epochs are at most {EPOCH_MAX}"));
        }
        Ok(kind)
    }

    fn register(&mut self, key: ProcessKey, req: &HeartbeatRequest, now: Instant) -> Result<()> {
        let (c, kind, s) = key;
        let requested_role = Role::try_from(req.requested_role).unwrap_or(Role::Unspecified);
        if let Some(p) = self.processes.get(&key) {
            if p.address != req.address && self.is_alive(p, now) {
                return Err(Error::AlreadyExists(match kind {
                    ProcessKind::Server => format!(
                        "server id {s} of cluster {c} is already registered at {}",
                        p.address
                    ),
                    _ => format!(
                        "the sync service of cluster {c} is already registered at {}",
                        p.address
                    ),
                }));
            }
        } else if kind == ProcessKind::Server {
            self.make_room(c, now)?;
        }

        let name = process_name(key);
        match self.processes.get_mut(&key) {
            Some(p) => {
                if p.address != req.address {
                    tracing::info!(
                        cluster = c,
                        "{name} moved from {} to {}",
                        p.address,
                        req.address
                    );
                    p.address = req.address.clone();
                }
                if !p.reported_alive {
                    tracing::info!(cluster = c, address = %p.address, "{name} is alive again");
                    p.reported_alive = true;
                }
                p.last_heartbeat = p.last_heartbeat.max(now);
                p.mp3_address.clone_from(&req.mp3_address);
                p.last_seq = req.last_seq;
                p.last_epoch = req.last_epoch;
                p.requested_role = requested_role;
            }
            None => {
                tracing::info!(cluster = c, address = %req.address, "{name} registered");
                self.processes.insert(
                    key,
                    Process {
                        address: req.address.clone(),
                        mp3_address: req.mp3_address.clone(),
                        last_heartbeat: now,
                        last_seq: req.last_seq,
                        last_epoch: req.last_epoch,
                        requested_role,
                        reported_alive: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Before a new server of cluster `c` registers: forgets dead secondaries
    /// if the cluster is full, and refuses if it is still full.
    fn make_room(&mut self, c: u32, now: Instant) -> Result<()> {
        if self.servers(c).count() < SERVERS_PER_CLUSTER_MAX {
            return Ok(());
        }
        let primary = self.record(c).primary_id;
        let dead: Vec<ProcessKey> = self
            .servers(c)
            .filter(|(k, p)| k.2 != primary && !self.is_alive(p, now))
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            tracing::info!(cluster = c, "forgot dead {} to make room", process_name(k));
            self.processes.remove(&k);
        }
        if self.servers(c).count() >= SERVERS_PER_CLUSTER_MAX {
            return Err(Error::ResourceExhausted(format!(
                "cluster {c} already has {SERVERS_PER_CLUSTER_MAX} live servers"
            )));
        }
        Ok(())
    }

    /// The role of the server that sent `req`, raising the epoch to what it
    /// has seen and electing it if it is the first to ask for PRIMARY in a
    /// fresh cluster.
    fn decide_role(&mut self, req: &HeartbeatRequest) -> Result<Role> {
        let (c, s) = (req.cluster_id, req.server_id);
        let mut rec = self.record(c).clone();
        let seen = rec.epoch.max(req.epoch).max(req.last_epoch);
        let raised = seen > rec.epoch;
        rec.epoch = seen;

        let requested = Role::try_from(req.requested_role).unwrap_or(Role::Unspecified);
        let (role, elected) = if rec.primary_id == s {
            (Role::Primary, false)
        } else if rec.primary_id == 0 && requested == Role::Primary {
            rec.epoch = next_epoch(rec.epoch)?;
            rec.primary_id = s;
            rec.in_sync.clear();
            (Role::Primary, true)
        } else {
            (Role::Secondary, false)
        };

        if raised || elected {
            self.store_cluster(rec.clone())?;
        }
        if raised {
            tracing::info!(
                cluster = c,
                "epoch raised to {seen} by the heartbeat of server {s}"
            );
        }
        if elected {
            tracing::info!(
                cluster = c,
                "server {s} is the first primary of the cluster (epoch {})",
                rec.epoch
            );
        }
        Ok(role)
    }

    fn reply(&self, c: u32, role: Role, now: Instant) -> HeartbeatReply {
        let rec = self.record(c);
        let primary_address = self
            .processes
            .get(&(c, ProcessKind::Server, rec.primary_id))
            .filter(|_| rec.primary_id != 0)
            .map(|p| p.address.clone())
            .unwrap_or_default();
        let secondaries = self
            .servers(c)
            .filter(|(k, p)| k.2 != rec.primary_id && self.is_alive(p, now))
            .map(|(k, p)| Peer {
                server_id: k.2,
                address: p.address.clone(),
            })
            .collect();
        HeartbeatReply {
            epoch: rec.epoch,
            role: role as i32,
            primary_id: rec.primary_id,
            primary_address,
            in_sync: rec.in_sync.iter().copied().collect(),
            secondaries,
            failure_timeout_ms: u32::try_from(self.failure_timeout.as_millis()).unwrap_or(u32::MAX),
            cluster_count: self.cluster_count,
        }
    }

    // ------------------------------------------------------------ failure detector

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
    /// (last_epoch, last_seq)); ties go to the lowest server id.
    fn promotion_candidate(&self, rec: &ClusterRecord, now: Instant) -> Option<u32> {
        self.servers(rec.cluster_id)
            .filter(|(k, p)| {
                k.2 != rec.primary_id && rec.in_sync.contains(&k.2) && self.is_alive(p, now)
            })
            .max_by_key(|(k, p)| (p.last_epoch, p.last_seq, Reverse(k.2)))
            .map(|(k, _)| k.2)
    }

    // ------------------------------------------------------------ in-sync set

    /// Adds or removes a secondary from the in-sync set, if the caller is the
    /// primary of the current epoch.
    pub fn change_in_sync(&mut self, change: &InSyncChange) -> Result<InSyncReply> {
        let c = change.cluster_id;
        self.check_cluster(c)?;
        if change.server_id == 0 {
            return Err(Error::InvalidArgument(
                "server ids are positive integers".into(),
            ));
        }
        let mut rec = self.record(c).clone();
        if change.primary_id == 0
            || change.primary_id != rec.primary_id
            || change.epoch != rec.epoch
        {
            tracing::info!(
                cluster = c,
                "refused an in-sync change from server {} of epoch {}: the primary is {} of epoch {}",
                change.primary_id,
                change.epoch,
                rec.primary_id,
                rec.epoch
            );
            return Ok(InSyncReply {
                ok: false,
                in_sync: rec.in_sync.into_iter().collect(),
            });
        }
        let s = change.server_id;
        if s == rec.primary_id {
            return Err(Error::InvalidArgument(format!(
                "server {s} is the primary of cluster {c}; it is not in its own in-sync set"
            )));
        }
        let changed = if change.in_sync {
            if !rec.in_sync.contains(&s) && rec.in_sync.len() >= SERVERS_PER_CLUSTER_MAX {
                return Err(Error::ResourceExhausted(format!(
                    "cluster {c} already has {SERVERS_PER_CLUSTER_MAX} in-sync servers"
                )));
            }
            rec.in_sync.insert(s)
        } else {
            rec.in_sync.remove(&s)
        };
        if changed {
            self.store_cluster(rec.clone())?;
            tracing::info!(
                cluster = c,
                epoch = rec.epoch,
                in_sync = ?rec.in_sync,
                "server {s} {} the in-sync set",
                if change.in_sync { "joined" } else { "left" }
            );
        }
        Ok(InSyncReply {
            ok: true,
            in_sync: rec.in_sync.into_iter().collect(),
        })
    }

    // ------------------------------------------------------------ clients

    /// The cluster of each user: the remembered one, else its home cluster
    /// among the current clusters, remembered durably before replying.
    pub fn assign(&mut self, users: &[u32]) -> Result<Vec<u32>> {
        if users.len() > ASSIGN_USERS_PER_CALL_MAX {
            return Err(Error::InvalidArgument(format!(
                "at most {ASSIGN_USERS_PER_CALL_MAX} users per call, got {}",
                users.len()
            )));
        }
        if let Some(bad) = users.iter().find(|&&u| u == 0 || u > USER_ID_MAX) {
            return Err(Error::InvalidArgument(format!(
                "user ids are 1..={USER_ID_MAX}, got {bad}"
            )));
        }
        let mut fresh: HashMap<u32, u32> = HashMap::new();
        let mut new = Vec::new();
        let mut clusters = Vec::with_capacity(users.len());
        for &u in users {
            let c = match self.assignments.get(&u).or_else(|| fresh.get(&u)) {
                Some(&c) => c,
                None => {
                    let c = tsn_cluster::home_cluster(u, self.cluster_count);
                    fresh.insert(u, c);
                    new.push(Assignment {
                        user: u,
                        cluster: c,
                    });
                    c
                }
            };
            clusters.push(c);
        }
        if self.assignments.len() + new.len() > ASSIGNED_USERS_MAX {
            return Err(Error::ResourceExhausted(format!(
                "the coordinator already serves {ASSIGNED_USERS_MAX} users"
            )));
        }
        self.files.append_assignments(&new)?;
        self.assignments.extend(fresh);
        assert_eq!(clusters.len(), users.len());
        Ok(clusters)
    }

    /// The classic lookup: the live primary of client `id`'s cluster.
    pub fn get_server(&mut self, id: i32, now: Instant) -> Result<ServerInfo> {
        let Some(user) = u32::try_from(id).ok().filter(|&u| u > 0) else {
            return Err(Error::InvalidArgument(
                "client ids are positive integers".into(),
            ));
        };
        let c = self.assign(&[user])?.first().copied().unwrap_or(0);
        let rec = self.record(c);
        let primary = self
            .processes
            .get(&(c, ProcessKind::Server, rec.primary_id))
            .filter(|p| rec.primary_id != 0 && self.is_alive(p, now));
        let Some(p) = primary else {
            return Err(Error::Unavailable(format!(
                "cluster {c} has no live primary"
            )));
        };
        let (hostname, port) = split_address(&p.address);
        Ok(ServerInfo {
            server_id: i32::try_from(rec.primary_id).unwrap_or(i32::MAX),
            hostname: hostname.to_string(),
            port: port.to_string(),
            r#type: "server".to_string(),
            cluster_id: i32::try_from(c).unwrap_or(0),
            is_master: true,
        })
    }

    /// The MP3 lookup: client `user`'s cluster and the MP3 listener of its
    /// live primary (`None` for the address when there is none, or when
    /// it has no MP3 listener).
    pub fn mp3_primary(&mut self, user: u32, now: Instant) -> Result<(u32, Option<String>)> {
        let c = self.assign(&[user])?.first().copied().unwrap_or(0);
        let rec = self.record(c);
        let address = self
            .processes
            .get(&(c, ProcessKind::Server, rec.primary_id))
            .filter(|p| rec.primary_id != 0 && self.is_alive(p, now) && !p.mp3_address.is_empty())
            .map(|p| p.mp3_address.clone());
        Ok((c, address))
    }

    /// (cluster, server id, MP3 listener, alive) of every server that has one.
    pub fn mp3_listeners(&self, now: Instant) -> Vec<(u32, u32, String, bool)> {
        self.processes
            .iter()
            .filter(|((_, kind, _), p)| *kind == ProcessKind::Server && !p.mp3_address.is_empty())
            .map(|(&(c, _, s), p)| (c, s, p.mp3_address.clone(), self.is_alive(p, now)))
            .collect()
    }

    /// Every cluster 1..=N with its registered processes.
    pub fn clusters(&self, now: Instant) -> Vec<ClusterView> {
        (1..=self.cluster_count)
            .map(|c| {
                let rec = self.record(c);
                let processes = self
                    .processes
                    .range(
                        (c, ProcessKind::Unspecified, 0)..=(c, ProcessKind::SyncService, u32::MAX),
                    )
                    .map(|(&(_, kind, s), p)| ProcessView {
                        server_id: s,
                        kind: kind as i32,
                        address: p.address.clone(),
                        role: match kind {
                            ProcessKind::Server if s == rec.primary_id => Role::Primary,
                            ProcessKind::Server => Role::Secondary,
                            _ => Role::Unspecified,
                        } as i32,
                        alive: self.is_alive(p, now),
                        last_seq: p.last_seq,
                        since_heartbeat_ms: u64::try_from(
                            now.saturating_duration_since(p.last_heartbeat).as_millis(),
                        )
                        .unwrap_or(u64::MAX),
                    })
                    .collect();
                ClusterView {
                    cluster_id: c,
                    epoch: rec.epoch,
                    primary_id: rec.primary_id,
                    processes,
                    in_sync: rec.in_sync.iter().copied().collect(),
                }
            })
            .collect()
    }

    // ------------------------------------------------------------ helpers

    fn check_cluster(&self, c: u32) -> Result<()> {
        if (1..=self.cluster_count).contains(&c) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "cluster id {c} is not in 1..={}",
                self.cluster_count
            )))
        }
    }

    fn in_grace(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.listening_since) <= self.failure_timeout
    }

    /// A gap between two looks of the failure detector longer than this is
    /// a stall of the coordinator (it looks every tenth of the timeout).
    fn stall_limit(&self) -> Duration {
        (self.failure_timeout / 4).max(Duration::from_millis(20))
    }

    /// Alive: heard from within the failure timeout, or still in the grace
    /// period after start (no heartbeat history yet to judge by).
    fn is_alive(&self, p: &Process, now: Instant) -> bool {
        self.in_grace(now)
            || now.saturating_duration_since(p.last_heartbeat) <= self.failure_timeout
    }

    fn servers(&self, c: u32) -> impl Iterator<Item = (&ProcessKey, &Process)> {
        self.processes
            .range((c, ProcessKind::Server, 0)..=(c, ProcessKind::Server, u32::MAX))
    }

    /// The record of cluster `c`; a cluster never stored is fresh.
    fn record(&self, c: u32) -> &ClusterRecord {
        static NONE: ClusterRecord = ClusterRecord {
            cluster_id: 0,
            epoch: 0,
            primary_id: 0,
            in_sync: BTreeSet::new(),
        };
        self.clusters.get(&c).unwrap_or(&NONE)
    }

    /// Stores `rec` durably, then adopts it. Epochs never go back.
    fn store_cluster(&mut self, rec: ClusterRecord) -> Result<()> {
        let old = self.record(rec.cluster_id);
        assert!(rec.epoch >= old.epoch, "epoch going back");
        assert!(!rec.in_sync.contains(&rec.primary_id) || rec.primary_id == 0);
        let mut next = self.clusters.clone();
        next.insert(rec.cluster_id, rec);
        self.files.save_clusters(&self.stored(&next))?;
        self.clusters = next;
        Ok(())
    }

    fn stored(&self, clusters: &BTreeMap<u32, ClusterRecord>) -> StoredClusters {
        StoredClusters {
            cluster_count: self.cluster_count,
            clusters: clusters.values().cloned().collect(),
        }
    }
}

fn next_epoch(epoch: u64) -> Result<u64> {
    epoch
        .checked_add(1)
        .ok_or_else(|| Error::ResourceExhausted(format!("epoch {epoch} cannot grow")))
}

/// Checks that `address` looks like `host:port`.
fn check_address(address: &str) -> Result<()> {
    if address.is_empty() {
        return Err(Error::InvalidArgument("the address is empty".into()));
    }
    if address.len() > ADDRESS_MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the address is longer than {ADDRESS_MAX_BYTES} bytes"
        )));
    }
    let (host, port) = split_address(address);
    if host.is_empty() || port.parse::<u16>().is_err() || address.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "address {address:?} is not host:port"
        )));
    }
    Ok(())
}

/// Splits `host:port` at the last ':' (an IPv6 host has colons of its own).
pub fn split_address(address: &str) -> (&str, &str) {
    address.rsplit_once(':').unwrap_or((address, ""))
}

fn process_name(key: ProcessKey) -> String {
    match key.1 {
        ProcessKind::SyncService => "sync service".to_string(),
        _ => format!("server {}", key.2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(500);

    struct Fixture {
        dir: tempfile::TempDir,
        t0: Instant,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn open(&self, clusters: u32, start_ms: u64) -> State {
            self.open_with(clusters, start_ms, false)
        }

        fn open_with(&self, clusters: u32, start_ms: u64, clear: bool) -> State {
            let files = Files::open(self.dir.path(), clear).unwrap();
            State::open(files, clusters, TIMEOUT, self.at(start_ms)).unwrap()
        }
    }

    fn server(c: u32, s: u32, role: Role) -> HeartbeatRequest {
        HeartbeatRequest {
            cluster_id: c,
            server_id: s,
            kind: ProcessKind::Server as i32,
            address: format!("127.0.0.1:{}", 10_000 + s),
            requested_role: role as i32,
            epoch: 0,
            last_seq: 0,
            last_epoch: 0,
            mp3_address: format!("127.0.0.1:{}", 20_000 + s),
        }
    }

    fn with_progress(
        mut req: HeartbeatRequest,
        last_epoch: u64,
        last_seq: u64,
    ) -> HeartbeatRequest {
        req.last_epoch = last_epoch;
        req.last_seq = last_seq;
        req
    }

    fn in_sync(st: &mut State, c: u32, s: u32) {
        let rec = st.record(c).clone();
        let reply = st
            .change_in_sync(&InSyncChange {
                cluster_id: c,
                primary_id: rec.primary_id,
                epoch: rec.epoch,
                server_id: s,
                in_sync: true,
            })
            .unwrap();
        assert!(reply.ok);
    }

    fn role(reply: &HeartbeatReply) -> Role {
        Role::try_from(reply.role).unwrap()
    }

    #[test]
    fn fresh_cluster_elects_first_primary_requester() {
        let f = Fixture::new();
        let mut st = f.open(3, 0);
        let r = st.heartbeat(&server(1, 1, Role::Primary), f.at(1)).unwrap();
        assert_eq!(role(&r), Role::Primary);
        assert_eq!((r.epoch, r.primary_id), (1, 1));
        assert_eq!(r.primary_address, "127.0.0.1:10001");
        assert_eq!(r.cluster_count, 3);
        assert_eq!(r.failure_timeout_ms, 500);
        // A second PRIMARY requester is a secondary.
        let r = st.heartbeat(&server(1, 2, Role::Primary), f.at(2)).unwrap();
        assert_eq!(role(&r), Role::Secondary);
        assert_eq!((r.epoch, r.primary_id), (1, 1));
        // The primary sees it among the secondaries.
        let r = st.heartbeat(&server(1, 1, Role::Primary), f.at(3)).unwrap();
        assert_eq!(
            r.secondaries,
            vec![Peer {
                server_id: 2,
                address: "127.0.0.1:10002".into()
            }]
        );
    }

    #[test]
    fn secondary_requester_never_becomes_primary_of_fresh_cluster() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        for t in 0..10 {
            let r = st
                .heartbeat(&server(1, 2, Role::Secondary), f.at(t * 100))
                .unwrap();
            assert_eq!(role(&r), Role::Secondary);
            assert_eq!((r.epoch, r.primary_id), (0, 0));
            assert_eq!(r.primary_address, "");
            st.tick(f.at(t * 100 + 1));
        }
        assert_eq!(st.record(1).epoch, 0);
    }

    #[test]
    fn sync_service_gets_primary_address() {
        let f = Fixture::new();
        let mut st = f.open(2, 0);
        st.heartbeat(&server(2, 7, Role::Primary), f.at(1)).unwrap();
        let mut req = server(2, 0, Role::Unspecified);
        req.kind = ProcessKind::SyncService as i32;
        req.address = "127.0.0.1:9000".into();
        let r = st.heartbeat(&req, f.at(2)).unwrap();
        assert_eq!(role(&r), Role::Unspecified);
        assert_eq!(r.primary_address, "127.0.0.1:10007");
        assert_eq!(r.cluster_count, 2);
        let view = st.clusters(f.at(3));
        assert_eq!(view.len(), 2);
        assert_eq!(view[1].processes.len(), 2);
        assert_eq!(view[1].processes[0].role, Role::Primary as i32);
        assert_eq!(view[1].processes[1].kind, ProcessKind::SyncService as i32);
    }

    /// Server 1 primary, 2 and 3 in sync, 4 alive but not in sync with the
    /// longest journal; 1 goes silent.
    fn three_secondaries(f: &Fixture, st: &mut State) {
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        for s in 2..=4 {
            st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
                .unwrap();
        }
        in_sync(st, 1, 2);
        in_sync(st, 1, 3);
        for t in (100..=1000).step_by(100) {
            st.heartbeat(&with_progress(server(1, 2, Role::Secondary), 1, 5), f.at(t))
                .unwrap();
            st.heartbeat(&with_progress(server(1, 3, Role::Secondary), 1, 9), f.at(t))
                .unwrap();
            st.heartbeat(
                &with_progress(server(1, 4, Role::Secondary), 1, 100),
                f.at(t),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_stalled_coordinator_declares_nobody_dead_for_a_timeout() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
            .unwrap();
        in_sync(&mut st, 1, 2);
        for t in (0..=1000).step_by(50) {
            st.heartbeat(&server(1, 1, Role::Primary), f.at(t)).unwrap();
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
        }
        // The coordinator does not run from 1000 to 1400; the primary's
        // heartbeats stop at 1000 (it died), the secondary's go on.
        for t in (1400..=1850).step_by(50) {
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
            assert_eq!(
                st.record(1).primary_id,
                1,
                "no promotion at {t} ms: still in the grace after the stall"
            );
        }
        for t in (1900..=2000).step_by(50) {
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
        }
        assert_eq!(
            st.record(1).primary_id,
            2,
            "promoted once the coordinator listened a full timeout"
        );
    }

    #[test]
    fn promotion_picks_alive_in_sync_secondary_with_most_entries() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        three_secondaries(&f, &mut st);
        st.tick(f.at(1000));
        let rec = st.record(1).clone();
        assert_eq!((rec.epoch, rec.primary_id), (2, 3));
        assert!(rec.in_sync.is_empty());
        let r = st
            .heartbeat(&server(1, 3, Role::Secondary), f.at(1001))
            .unwrap();
        assert_eq!(role(&r), Role::Primary);
        assert_eq!(r.epoch, 2);
        // The old primary comes back as a secondary.
        let r = st
            .heartbeat(&server(1, 1, Role::Primary), f.at(1002))
            .unwrap();
        assert_eq!(role(&r), Role::Secondary);
        assert_eq!(r.primary_address, "127.0.0.1:10003");
    }

    #[test]
    fn promotion_ties_go_to_lowest_id_and_skip_dead() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        for s in [5, 3, 4] {
            st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
                .unwrap();
            in_sync(&mut st, 1, s);
        }
        for t in (100..=1000).step_by(100) {
            st.heartbeat(&with_progress(server(1, 5, Role::Secondary), 1, 7), f.at(t))
                .unwrap();
            st.heartbeat(&with_progress(server(1, 4, Role::Secondary), 1, 7), f.at(t))
                .unwrap();
        }
        // 3 has the most but is dead since 0.
        st.heartbeat(
            &with_progress(server(1, 3, Role::Secondary), 1, 50),
            f.at(1),
        )
        .unwrap();
        st.tick(f.at(1000));
        assert_eq!(st.record(1).primary_id, 4);
    }

    #[test]
    fn no_promotion_without_in_sync_candidate() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        for t in (100..=2000).step_by(100) {
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
        }
        assert_eq!((st.record(1).epoch, st.record(1).primary_id), (1, 1));
        let e = st.get_server(1, f.at(2000)).unwrap_err();
        assert!(matches!(e, Error::Unavailable(ref m) if m == "cluster 1 has no live primary"));
        // The primary returns and keeps its place.
        st.heartbeat(&server(1, 1, Role::Primary), f.at(2001))
            .unwrap();
        assert_eq!(st.get_server(1, f.at(2002)).unwrap().server_id, 1);
    }

    #[test]
    fn no_promotion_during_grace_period() {
        let f = Fixture::new();
        {
            let mut st = f.open(1, 0);
            st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
                .unwrap();
            in_sync(&mut st, 1, 2);
        }
        // Restarted at 10 s: only server 2 heartbeats.
        let mut st = f.open(1, 10_000);
        for t in (10_000..=10_500).step_by(50) {
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
            assert_eq!(st.record(1).primary_id, 1, "promoted at {t}");
        }
        // The primary never came back: after the grace period, 2 takes over.
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(10_550))
            .unwrap();
        st.tick(f.at(10_600));
        assert_eq!((st.record(1).epoch, st.record(1).primary_id), (2, 2));
    }

    #[test]
    fn restarted_coordinator_keeps_primary_that_heartbeats() {
        let f = Fixture::new();
        {
            let mut st = f.open(1, 0);
            st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
                .unwrap();
            in_sync(&mut st, 1, 2);
        }
        let mut st = f.open(1, 10_000);
        for t in (10_000..=12_000).step_by(100) {
            st.heartbeat(&server(1, 1, Role::Primary), f.at(t)).unwrap();
            st.heartbeat(&server(1, 2, Role::Secondary), f.at(t))
                .unwrap();
            st.tick(f.at(t));
        }
        assert_eq!((st.record(1).epoch, st.record(1).primary_id), (1, 1));
        assert_eq!(st.record(1).in_sync, BTreeSet::from([2]));
    }

    #[test]
    fn epoch_grows_across_promotions_and_reloads() {
        let f = Fixture::new();
        let mut last_epoch = 0;
        let mut t = 0;
        for round in 0..4u32 {
            let mut st = f.open(1, t);
            assert_eq!(st.record(1).epoch, last_epoch, "reload kept the epoch");
            // Whoever is primary now; a fresh server joins and catches up.
            let primary = st.record(1).primary_id.max(1);
            let next = 10 + round;
            st.heartbeat(&server(1, primary, Role::Primary), f.at(t))
                .unwrap();
            st.heartbeat(&server(1, next, Role::Secondary), f.at(t))
                .unwrap();
            in_sync(&mut st, 1, next);
            let start = st.record(1).epoch;
            assert!(start >= last_epoch.max(1));
            // The primary dies; `next` keeps beating until promoted.
            for step in 1..=20 {
                st.heartbeat(&server(1, next, Role::Secondary), f.at(t + step * 100))
                    .unwrap();
                st.tick(f.at(t + step * 100));
            }
            assert_eq!(st.record(1).primary_id, next);
            assert_eq!(st.record(1).epoch, start + 1);
            last_epoch = start + 1;
            t += 10_000;
        }
        let st = f.open(1, t);
        assert_eq!((st.record(1).epoch, st.record(1).primary_id), (5, 13));
    }

    #[test]
    fn stale_change_in_sync_is_refused() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        st.heartbeat(&server(1, 2, Role::Secondary), f.at(0))
            .unwrap();
        let change = |primary_id, epoch, server_id, in_sync| InSyncChange {
            cluster_id: 1,
            primary_id,
            epoch,
            server_id,
            in_sync,
        };
        for stale in [
            change(1, 0, 2, true),
            change(2, 1, 2, true),
            change(0, 0, 2, true),
        ] {
            let r = st.change_in_sync(&stale).unwrap();
            assert!(!r.ok);
            assert!(st.record(1).in_sync.is_empty());
        }
        let r = st.change_in_sync(&change(1, 1, 2, true)).unwrap();
        assert!(r.ok);
        assert_eq!(r.in_sync, vec![2]);
        assert!(matches!(
            st.change_in_sync(&change(1, 1, 1, true)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            st.change_in_sync(&InSyncChange {
                cluster_id: 9,
                ..change(1, 1, 2, true)
            }),
            Err(Error::InvalidArgument(_))
        ));
        let r = st.change_in_sync(&change(1, 1, 2, false)).unwrap();
        assert!(r.ok && r.in_sync.is_empty());
        // It was stored.
        drop(st);
        assert!(f.open(1, 0).record(1).in_sync.is_empty());
    }

    #[test]
    fn epoch_raised_from_heartbeats_after_cleared_state() {
        let f = Fixture::new();
        {
            let mut st = f.open(1, 0);
            st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        }
        let mut st = f.open_with(1, 0, true);
        assert_eq!(st.record(1).epoch, 0);
        // A secondary that saw epoch 6 raises it without being elected.
        let r = st
            .heartbeat(
                &with_progress(server(1, 2, Role::Secondary), 6, 40),
                f.at(1),
            )
            .unwrap();
        assert_eq!((r.epoch, r.primary_id, role(&r)), (6, 0, Role::Secondary));
        // The old primary asks again: elected with a newer epoch than any seen.
        let mut req = with_progress(server(1, 1, Role::Primary), 5, 41);
        req.epoch = 7;
        let r = st.heartbeat(&req, f.at(2)).unwrap();
        assert_eq!((r.epoch, r.primary_id, role(&r)), (8, 1, Role::Primary));
        drop(st);
        assert_eq!(f.open(1, 0).record(1).epoch, 8);
    }

    #[test]
    fn assignments_remembered_across_reload() {
        let f = Fixture::new();
        {
            let mut st = f.open(3, 0);
            assert_eq!(st.assign(&[1, 2, 3, 4, 4]).unwrap(), vec![1, 2, 3, 1, 1]);
        }
        // Fewer clusters now: known users keep theirs, new ones use the new N.
        let mut st = f.open(2, 0);
        assert_eq!(st.assign(&[3, 4, 5, 6]).unwrap(), vec![3, 1, 1, 2]);
        assert!(matches!(st.assign(&[0]), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            st.assign(&[5, 1 << 31]),
            Err(Error::InvalidArgument(_))
        ));
        let many = vec![1; ASSIGN_USERS_PER_CALL_MAX + 1];
        assert!(matches!(st.assign(&many), Err(Error::InvalidArgument(_))));
        drop(st);
        let mut st = f.open(3, 0);
        assert_eq!(
            st.assign(&[1, 2, 3, 4, 5, 6]).unwrap(),
            vec![1, 2, 3, 1, 1, 2]
        );
        assert!(matches!(
            st.get_server(0, f.at(0)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            st.get_server(-3, f.at(0)),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn get_server_names_live_primary() {
        let f = Fixture::new();
        let mut st = f.open(3, 0);
        let mut req = server(2, 4, Role::Primary);
        req.address = "[::1]:5002".into();
        st.heartbeat(&req, f.at(0)).unwrap();
        let info = st.get_server(5, f.at(1)).unwrap();
        assert_eq!(info.server_id, 4);
        assert_eq!(
            (info.hostname.as_str(), info.port.as_str()),
            ("[::1]", "5002")
        );
        assert_eq!(
            (info.r#type.as_str(), info.cluster_id, info.is_master),
            ("server", 2, true)
        );
        assert!(matches!(
            st.get_server(1, f.at(1)),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn duplicate_server_id_at_another_address_refused() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        st.heartbeat(&server(1, 1, Role::Primary), f.at(0)).unwrap();
        let mut twin = server(1, 1, Role::Primary);
        twin.address = "127.0.0.1:20001".into();
        let e = st.heartbeat(&twin, f.at(100)).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)));
        assert_eq!(
            e.to_string(),
            "server id 1 of cluster 1 is already registered at 127.0.0.1:10001"
        );
        // Nothing changed: the registration keeps its address.
        assert_eq!(st.get_server(1, f.at(101)).unwrap().port, "10001");
        // Once the first is dead, the id may move (after the grace period).
        let r = st.heartbeat(&twin, f.at(1000)).unwrap();
        assert_eq!(r.primary_address, "127.0.0.1:20001");
    }

    #[test]
    fn bad_heartbeats_are_refused() {
        let f = Fixture::new();
        let mut st = f.open(2, 0);
        let p = || server(1, 1, Role::Primary);
        let bad = vec![
            HeartbeatRequest {
                cluster_id: 0,
                ..p()
            },
            HeartbeatRequest {
                cluster_id: 3,
                ..p()
            },
            HeartbeatRequest { kind: 0, ..p() },
            HeartbeatRequest { kind: 9, ..p() },
            server(1, 0, Role::Primary),
            HeartbeatRequest {
                address: String::new(),
                ..p()
            },
            HeartbeatRequest {
                address: "nohost".into(),
                ..p()
            },
            HeartbeatRequest {
                address: "h:99999".into(),
                ..p()
            },
            HeartbeatRequest {
                epoch: u64::MAX,
                ..p()
            },
            HeartbeatRequest {
                kind: ProcessKind::SyncService as i32,
                ..server(1, 3, Role::Unspecified)
            },
        ];
        for req in bad {
            let e = st.heartbeat(&req, f.at(0)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{req:?}: {e}");
        }
        assert!(st
            .clusters(f.at(0))
            .iter()
            .all(|c| c.processes.is_empty() && c.epoch == 0));
    }

    #[test]
    fn servers_per_cluster_are_limited() {
        let f = Fixture::new();
        let mut st = f.open(1, 0);
        for s in 1..=SERVERS_PER_CLUSTER_MAX as u32 {
            st.heartbeat(&server(1, s, Role::Secondary), f.at(0))
                .unwrap();
        }
        let extra = server(1, 1000, Role::Secondary);
        assert!(matches!(
            st.heartbeat(&extra, f.at(1)),
            Err(Error::ResourceExhausted(_))
        ));
        // Once the others are dead, they make room.
        st.heartbeat(&server(1, 1, Role::Secondary), f.at(2000))
            .unwrap();
        st.heartbeat(&extra, f.at(2000)).unwrap();
        assert_eq!(st.clusters(f.at(2000))[0].processes.len(), 2);
    }
}
