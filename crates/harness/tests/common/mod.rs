//! What the fault scenarios share: a deployment with the product's failure
//! timeout, and the waits on the coordinator's view that a failover needs.
//!
//! Each test file is its own crate and uses a part of this module, so the
//! parts another file uses are dead code in it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use tsn_harness::views::{epochs_of, failover_in, is_alive_server, Failover};
use tsn_harness::{wait_for, Api, Config, Deployment};
use tsn_proto::tsn::ClusterView;

/// The coordinator's failure timeout in these tests: the product default.
pub const FAILURE_TIMEOUT_MS: u64 = tsn_cluster::limits::FAILURE_TIMEOUT_MS;
/// The sync services' poll interval in these tests.
pub const Q_MS: u64 = 500;
/// How long a failover may take on a loaded machine before a test gives up:
/// it bounds how long a broken build takes to fail, it is no target.
pub const FAILOVER_DEADLINE_MS: u64 = 20_000;
/// How long a test waits for replicated state it knows is coming.
pub const CONVERGE_DEADLINE_MS: u64 = 30_000;
/// Most times a test stops a primary to get a failover: a loaded machine
/// may drop the secondary from the in-sync set just before, and then no
/// failover may happen (see [`Failover::NoCandidate`]).
pub const FAILOVER_ATTEMPTS_MAX: u32 = 3;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deployment of `clusters` clusters, each a primary, `secondaries`
/// secondaries and a sync service, with the product's failure timeout.
pub async fn start(clusters: u32, secondaries: u32) -> Deployment {
    let mut config = Config::new(clusters, secondaries, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    Deployment::start_with(config).await
}

pub async fn views(api: &Api) -> Vec<ClusterView> {
    match api.clusters().await {
        Ok(v) => v,
        Err(status) => panic!("Clusters(): {status}"),
    }
}

/// The epoch of every cluster, as the coordinator says now.
pub async fn epochs(api: &Api) -> BTreeMap<u32, u64> {
    epochs_of(&views(api).await)
}

/// The coordinator's view of `cluster`.
async fn view_of(api: &Api, cluster: u32) -> Result<ClusterView, String> {
    let views = api.coord().clusters().await.map_err(|s| s.to_string())?;
    let found = views.iter().find(|v| v.cluster_id == cluster).cloned();
    found.ok_or_else(|| format!("no cluster {cluster} in {views:?}"))
}

/// Waits until `server_id` is alive, a secondary, and in the in-sync set of
/// `cluster`: only then may it be promoted, and only then does every
/// acknowledged write wait for it.
pub async fn wait_in_sync(d: &Deployment, cluster: u32, server_id: u32) {
    let api = d.api();
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        &format!("server {server_id} to be an in-sync secondary of cluster {cluster}"),
        || {
            let api = api.clone();
            async move {
                let view = view_of(&api, cluster).await?;
                if is_alive_server(&view, server_id)
                    && view.primary_id != server_id
                    && view.in_sync.contains(&server_id)
                {
                    Ok(())
                } else {
                    Err(format!("{view:?}"))
                }
            }
        },
    )
    .await
}

/// Waits until every secondary of every cluster is in sync.
pub async fn wait_all_in_sync(d: &Deployment) {
    for cluster in 1..=d.config().clusters {
        let (primary, _) = d.primary_of(cluster).await;
        for server_id in d.server_ids(cluster) {
            if server_id != primary {
                wait_in_sync(d, cluster, server_id).await;
            }
        }
    }
}

/// Waits until the coordinator either promoted a secondary of `cluster`
/// in place of `old` or shows that it cannot.
pub async fn await_failover(api: &Api, cluster: u32, old: u32, epoch_before: u64) -> Failover {
    wait_for(
        ms(FAILOVER_DEADLINE_MS),
        &format!("the coordinator to replace server {old}, the primary of cluster {cluster}"),
        || {
            let api = api.clone();
            async move {
                let view = view_of(&api, cluster).await?;
                failover_in(&view, old, epoch_before).ok_or_else(|| format!("{view:?}"))
            }
        },
    )
    .await
}

/// Waits until every secondary of `cluster` is in sync; returns the
/// primary's id and address and the cluster's epoch.
pub async fn ready_for_failover(d: &Deployment, cluster: u32) -> (u32, String, u64) {
    let (primary, addr) = d.primary_of(cluster).await;
    for id in d.server_ids(cluster) {
        if id != primary {
            wait_in_sync(d, cluster, id).await;
        }
    }
    let epoch = epochs(&d.api()).await[&cluster];
    (primary, addr, epoch)
}

/// Posts as `user`, expecting an acknowledgement.
pub async fn post(api: &Api, user: u32, post_id: &str, text: &str) {
    if let Err(status) = api.post(user, post_id, text).await {
        panic!("user {user} post {post_id:?}: {status}");
    }
}
