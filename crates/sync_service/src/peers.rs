//! Whom the sync service talks to: its own cluster's primary, the sync
//! services of the other clusters, and the coordinator for users' home
//! clusters.
//!
//! Everything here is learned from the coordinator and cached: the primary
//! from every heartbeat reply (it changes on failover), the other sync
//! services from `Coordinator.Clusters` (refreshed when a call to one
//! fails), and home clusters from `Coordinator.Assign` (kept: an assignment
//! never changes). Channels connect lazily and reconnect by themselves.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;
use tsn_cluster::auth::{AuthChannel, ClusterAuth};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::heartbeat::Heard;
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_cluster::sync::lock;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::sync_client::SyncClient;
use tsn_proto::tsn::{ClusterView, ProcessKind};

use crate::limits::{
    APPLY_CALL_TIMEOUT_MS, ASSIGN_BATCH_MAX_USERS, CLUSTERS_MAX, HOME_CACHE_MAX_USERS,
    LOOKUP_CALL_TIMEOUT_MS, READ_CALL_SLACK_MS,
};

pub struct Peers {
    own_cluster: u32,
    coord: CoordClient,
    /// The cluster secret every call to a primary or sync service carries.
    auth: ClusterAuth,
    heard: watch::Receiver<Heard>,
    /// The time limit of the channels: the longest of any call made on
    /// them. Each call also has its own, shorter or equal, limit.
    channel_timeout_ms: u64,
    /// The primary last used, by address.
    primary: Mutex<Option<(String, ReplicaClient<AuthChannel>)>>,
    /// Sync service of each other cluster, by cluster.
    syncs: Mutex<HashMap<u32, (String, SyncClient<AuthChannel>)>>,
    /// Home cluster of each user asked about so far.
    homes: Mutex<HashMap<u32, u32>>,
}

/// Runs `call`, failing it with UNAVAILABLE after `timeout_ms`: a peer that
/// does not answer in time is treated like one that cannot be reached.
pub async fn call_within<T>(
    timeout_ms: u64,
    what: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Ok(result) => result,
        Err(_) => Err(Status::unavailable(format!(
            "{what} did not answer within {timeout_ms} ms"
        ))),
    }
}

/// The address of cluster `cluster_id`'s sync service in the coordinator's
/// view: a live one if any, else the last one known (it may be back).
pub fn sync_address(clusters: &[ClusterView], cluster_id: u32) -> Option<String> {
    let view = clusters.iter().find(|c| c.cluster_id == cluster_id)?;
    let all: Vec<_> = view
        .processes
        .iter()
        .filter(|p| p.kind == ProcessKind::SyncService as i32 && !p.address.is_empty())
        .collect();
    all.iter()
        .find(|p| p.alive)
        .or_else(|| all.first())
        .map(|p| p.address.clone())
}

impl Peers {
    pub fn new(
        own_cluster: u32,
        coord: CoordClient,
        auth: ClusterAuth,
        heard: watch::Receiver<Heard>,
        poll_interval_ms: u64,
    ) -> Peers {
        let channel_timeout_ms = (poll_interval_ms + READ_CALL_SLACK_MS)
            .max(APPLY_CALL_TIMEOUT_MS)
            .max(LOOKUP_CALL_TIMEOUT_MS);
        Peers {
            own_cluster,
            coord,
            auth,
            heard,
            channel_timeout_ms,
            primary: Mutex::new(None),
            syncs: Mutex::new(HashMap::new()),
            homes: Mutex::new(HashMap::new()),
        }
    }

    pub fn own_cluster(&self) -> u32 {
        self.own_cluster
    }

    /// The number of clusters, once the coordinator has said it.
    pub fn cluster_count(&self) -> Option<u32> {
        let heard = self.heard.borrow();
        let n = heard.reply.as_ref()?.cluster_count;
        (1..=CLUSTERS_MAX).contains(&n).then_some(n)
    }

    /// A client of the own cluster's current primary, and its address.
    pub fn primary(&self) -> Result<(String, ReplicaClient<AuthChannel>), Status> {
        let addr = {
            let heard = self.heard.borrow();
            match heard.reply.as_ref() {
                None => {
                    return Err(Status::unavailable(
                        "the coordinator has not answered a heartbeat yet",
                    ))
                }
                Some(reply) if reply.primary_address.is_empty() => {
                    return Err(Status::unavailable(format!(
                        "cluster {} has no primary now",
                        self.own_cluster
                    )))
                }
                Some(reply) => reply.primary_address.clone(),
            }
        };
        let mut cached = lock(&self.primary);
        if let Some((cached_addr, client)) = cached.as_ref() {
            if *cached_addr == addr {
                return Ok((addr, client.clone()));
            }
        }
        let client = ReplicaClient::new(self.channel(&addr)?)
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        *cached = Some((addr.clone(), client.clone()));
        Ok((addr, client))
    }

    /// A client of cluster `dest`'s sync service, and its address.
    pub async fn sync_service(
        &self,
        dest: u32,
    ) -> Result<(String, SyncClient<AuthChannel>), Status> {
        assert_ne!(
            dest, self.own_cluster,
            "the own cluster is fed through its primary"
        );
        if let Some((addr, client)) = lock(&self.syncs).get(&dest) {
            return Ok((addr.clone(), client.clone()));
        }
        let clusters = self.coord.clusters().await?;
        let addr = sync_address(&clusters, dest).ok_or_else(|| {
            Status::unavailable(format!("cluster {dest} has no sync service registered"))
        })?;
        let client = SyncClient::new(self.channel(&addr)?)
            .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
        lock(&self.syncs).insert(dest, (addr.clone(), client.clone()));
        Ok((addr, client))
    }

    /// Drops the cached sync service of `dest`, so that the next call asks
    /// the coordinator again (it may have moved).
    pub fn forget_sync_service(&self, dest: u32) {
        lock(&self.syncs).remove(&dest);
    }

    /// The home cluster of each of `users`, from the cache or the
    /// coordinator. Fails if any is unknown: none is ever guessed.
    pub async fn homes(&self, users: &BTreeSet<u32>) -> Result<HashMap<u32, u32>, Status> {
        let clusters = self
            .cluster_count()
            .ok_or_else(|| Status::unavailable("the number of clusters is not known yet"))?;
        let mut found = HashMap::with_capacity(users.len());
        let mut missing = Vec::new();
        {
            let cache = lock(&self.homes);
            for user in users {
                match cache.get(user) {
                    Some(cluster) => {
                        found.insert(*user, *cluster);
                    }
                    None => missing.push(*user),
                }
            }
        }
        for chunk in missing.chunks(ASSIGN_BATCH_MAX_USERS) {
            let assigned = self.coord.assign(chunk).await?;
            // Checked by `CoordClient::assign`; an error, never a panic.
            if assigned.len() != chunk.len() {
                return Err(Status::internal(format!(
                    "the coordinator assigned {} clusters to {} users",
                    assigned.len(),
                    chunk.len()
                )));
            }
            let mut cache = lock(&self.homes);
            for (user, cluster) in chunk.iter().zip(assigned) {
                if !(1..=clusters).contains(&cluster) {
                    return Err(Status::internal(format!(
                        "the coordinator assigned user {user} to cluster {cluster} \
                         of {clusters}"
                    )));
                }
                if cache.len() >= HOME_CACHE_MAX_USERS {
                    cache.clear();
                }
                cache.insert(*user, cluster);
                found.insert(*user, cluster);
            }
        }
        debug_assert_eq!(found.len(), users.len());
        Ok(found)
    }

    fn channel(&self, addr: &str) -> Result<AuthChannel, Status> {
        self.auth
            .channel(addr, self.channel_timeout_ms)
            .map_err(|e| Status::unavailable(format!("cannot reach {addr}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_proto::tsn::ProcessView;

    fn process(kind: ProcessKind, address: &str, alive: bool) -> ProcessView {
        ProcessView {
            kind: kind as i32,
            address: address.to_string(),
            alive,
            ..Default::default()
        }
    }

    #[test]
    fn sync_address_prefers_a_live_sync_service() {
        let clusters = vec![
            ClusterView {
                cluster_id: 1,
                processes: vec![process(ProcessKind::SyncService, "a:1", true)],
                ..Default::default()
            },
            ClusterView {
                cluster_id: 2,
                processes: vec![
                    process(ProcessKind::Server, "s:1", true),
                    process(ProcessKind::SyncService, "old:2", false),
                    process(ProcessKind::SyncService, "new:2", true),
                ],
                ..Default::default()
            },
            ClusterView {
                cluster_id: 3,
                processes: vec![
                    process(ProcessKind::SyncService, "", true),
                    process(ProcessKind::SyncService, "down:3", false),
                ],
                ..Default::default()
            },
            ClusterView {
                cluster_id: 4,
                processes: vec![process(ProcessKind::Server, "s:4", true)],
                ..Default::default()
            },
        ];
        assert_eq!(sync_address(&clusters, 1).as_deref(), Some("a:1"));
        assert_eq!(sync_address(&clusters, 2).as_deref(), Some("new:2"));
        assert_eq!(sync_address(&clusters, 3).as_deref(), Some("down:3"));
        assert_eq!(sync_address(&clusters, 4), None);
        assert_eq!(sync_address(&clusters, 5), None);
    }

    #[tokio::test]
    async fn call_within_fails_a_slow_call_as_unavailable() {
        let slow = std::future::pending::<Result<(), Status>>();
        let err = call_within(10, "the primary", slow).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        let fast = async { Ok::<_, Status>(7) };
        assert_eq!(call_within(10, "x", fast).await.unwrap(), 7);
    }
}
