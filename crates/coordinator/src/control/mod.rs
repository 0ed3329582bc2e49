//! Every decision of the coordinator, as plain functions of its state and
//! the time, one concern per file:
//!
//! * `registry`: heartbeats register processes; replies and views.
//! * `election`: a server's role, epochs and the first primary.
//! * `failure`: the failure detector's look at every process, promotion.
//! * `in_sync`: the primary's changes to its in-sync set.
//! * `assignment`: which cluster serves a client, `GetServer`.
//! * `accounts`: the handle registry, sign-ups.
//!
//! Nothing here does network I/O or reads the clock: callers pass `now`, so
//! the tests replay any timing exactly. Nor does it know files: what must
//! be durable goes through the [`Persistence`] it is given. Changes to what
//! is persisted (epoch, primary, in-sync set, assignments) follow one rule:
//! build the new value, store it durably, and only then adopt it in memory
//! and announce it. A failed write therefore changes nothing, and no reply
//! ever names an epoch or a primary that a restart could forget.

mod accounts;
mod assignment;
mod election;
mod failure;
mod in_sync;
#[cfg(test)]
mod proptests;
pub mod rate;
mod registry;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::config::{ASSIGNED_USERS_MAX, CLUSTERS_MAX};
use crate::persist::{self, AccountRecord, ClusterRecord, Loaded, Persistence, StoredClusters};
use crate::replicated::Command;

pub use self::registry::split_address;
use self::registry::{Process, ProcessKey};

/// Why a request was refused. Each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot store the coordinator state: {0}")]
    Storage(#[from] persist::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub struct ControlPlane {
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
    /// Where decisions are made durable before they are adopted.
    persistence: Box<dyn Persistence>,
    /// Most users assigned (`--users-max`).
    users_max: usize,
    /// New users per caller per second.
    new_users: rate::Buckets,
    /// The handle registry: handle (lower case) -> account.
    accounts: BTreeMap<String, AccountRecord>,
    /// The handle of each account's id.
    account_handles: HashMap<u32, String>,
    /// Sign-ups per caller per second.
    signups: rate::Buckets,
    /// Where the search for a fresh id of a new account starts: past every
    /// id ever assigned, so an account's id is the next one after every id
    /// in use, never a gap between them.
    next_user: u32,
}

impl ControlPlane {
    /// Starts from what was `loaded` for `cluster_count` clusters; later
    /// changes are made durable through `persistence` before they are
    /// adopted. `now` starts the grace period during which nobody is
    /// declared dead.
    pub fn open(
        loaded: Loaded,
        persistence: Box<dyn Persistence>,
        cluster_count: u32,
        failure_timeout: Duration,
        now: Instant,
    ) -> persist::Result<ControlPlane> {
        if !(1..=CLUSTERS_MAX).contains(&cluster_count) {
            return Err(persist::Error::Invalid(format!(
                "{cluster_count} clusters; 1..={CLUSTERS_MAX} are possible"
            )));
        }
        let stored = loaded.clusters;
        let stored_count = stored.as_ref().map(|s| s.cluster_count);
        let mut clusters: BTreeMap<u32, ClusterRecord> = stored
            .map(|s| s.clusters.into_iter().map(|r| (r.cluster_id, r)).collect())
            .unwrap_or_default();
        for c in 1..=cluster_count {
            clusters.entry(c).or_insert_with(|| ClusterRecord::fresh(c));
        }

        let mut assignments = HashMap::new();
        for a in loaded.assignments {
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
        let mut accounts = BTreeMap::new();
        for a in loaded.accounts {
            if accounts.contains_key(&a.handle) {
                tracing::warn!(handle = %a.handle, user = a.user, "handle signed up twice; keeping the first account");
                continue;
            }
            // A crash between the two appends of a sign-up cannot leave
            // this (the id is stored first), but a hand edit can.
            assignments.entry(a.user).or_insert(a.cluster);
            accounts.insert(a.handle.clone(), a);
        }
        let next_user = assignments.keys().max().map_or(1, |&u| u.saturating_add(1));

        let mut state = ControlPlane {
            clusters,
            cluster_count,
            processes: BTreeMap::new(),
            assignments,
            failure_timeout,
            started_at: now,
            listening_since: now,
            last_tick: None,
            waiting_logged: BTreeSet::new(),
            persistence,
            users_max: ASSIGNED_USERS_MAX,
            new_users: rate::Buckets::default(),
            account_handles: accounts
                .values()
                .map(|a: &AccountRecord| (a.user, a.handle.clone()))
                .collect(),
            accounts,
            signups: rate::Buckets::signups(),
            next_user,
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
            let stored = state.stored(&state.clusters);
            state.persistence.commit(&Command::Clusters(stored))?;
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
        tracing::info!(
            users = state.assignments.len(),
            accounts = state.accounts.len(),
            "loaded client assignments and accounts"
        );
        Ok(state)
    }

    /// Sets the most users the coordinator assigns (`--users-max`).
    pub fn set_users_max(&mut self, users_max: usize) {
        self.users_max = users_max;
    }

    pub(super) fn check_cluster(&self, c: u32) -> Result<()> {
        if (1..=self.cluster_count).contains(&c) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "cluster id {c} is not in 1..={}",
                self.cluster_count
            )))
        }
    }

    /// The record of cluster `c`; a cluster never stored is fresh.
    pub(super) fn record(&self, c: u32) -> &ClusterRecord {
        static NONE: ClusterRecord = ClusterRecord {
            cluster_id: 0,
            epoch: 0,
            primary_id: 0,
            in_sync: BTreeSet::new(),
        };
        self.clusters.get(&c).unwrap_or(&NONE)
    }

    /// Stores `rec` durably, then adopts it. Epochs never go back.
    pub(super) fn store_cluster(&mut self, rec: ClusterRecord) -> Result<()> {
        let old = self.record(rec.cluster_id);
        // Refused, never a panic: the failure detector calls this too, and
        // must outlive any input.
        if rec.epoch < old.epoch {
            return Err(Error::InvalidArgument(format!(
                "cluster {}: epoch {} would go back from {}",
                rec.cluster_id, rec.epoch, old.epoch
            )));
        }
        if rec.primary_id != 0 && rec.in_sync.contains(&rec.primary_id) {
            return Err(Error::InvalidArgument(format!(
                "cluster {}: the primary would be in its own in-sync set",
                rec.cluster_id
            )));
        }
        let mut next = self.clusters.clone();
        next.insert(rec.cluster_id, rec);
        let stored = self.stored(&next);
        self.persistence.commit(&Command::Clusters(stored))?;
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
