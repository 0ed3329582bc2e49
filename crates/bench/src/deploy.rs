//! The deployment under test: started here through `tsn_harness` (the same
//! launcher as the end-to-end tests, with the product's failure timeout),
//! or a running one given by its coordinator.
//!
//! The harness reports a deployment that does not come up by panicking
//! (a test has nothing better to do); here that panic is caught at the
//! task boundary and becomes an error, so the tool exits with a message.

use std::future::Future;
use std::time::{Duration, Instant};

use tsn_harness::{Api, Config, Deployment};
use tsn_proto::tsn::{ClusterView, ProcessKind};

use crate::limits::POLL_INTERVAL_MS;

/// Secondaries per cluster of a local deployment.
pub const SECONDARIES_PER_CLUSTER: u32 = 1;

/// Runs `fut` as its own task and turns a panic into an error.
pub async fn catching<T: Send + 'static>(
    what: &str,
    fut: impl Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::spawn(fut).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no message".into());
            anyhow::bail!("{what} failed: {msg}")
        }
        Err(e) => anyhow::bail!("{what} was cancelled: {e}"),
    }
}

/// Starts `clusters` clusters (primary, secondary, sync service polling
/// every `q_ms`) with the product's failure timeout.
pub async fn start_local(clusters: u32, q_ms: u64) -> anyhow::Result<Deployment> {
    let mut config = Config::new(clusters, SECONDARIES_PER_CLUSTER, q_ms);
    config.failure_timeout_ms = tsn_cluster::limits::FAILURE_TIMEOUT_MS;
    catching(
        "starting the local deployment",
        Deployment::start_with(config),
    )
    .await
}

/// Kills (SIGKILL) the current primary of `cluster`; returns its server id,
/// its address, and the moment just before the signal was sent (outages
/// are counted from there, so the time to reap the process is in them).
pub async fn kill_primary(
    d: &mut Deployment,
    api: &Api,
    cluster: u32,
) -> anyhow::Result<(u32, String, Instant)> {
    let (id, addr) = api
        .primary_of(cluster)
        .await
        .map_err(|s| anyhow::anyhow!("asking the coordinator for the primary: {s}"))?
        .ok_or_else(|| anyhow::anyhow!("cluster {cluster} has no primary to kill"))?;
    if !d.server_ids(cluster).contains(&id) {
        anyhow::bail!(
            "the primary of cluster {cluster} is server {id}, which this run did not start"
        );
    }
    let at = Instant::now();
    d.server(cluster, id).kill9();
    Ok((id, addr, at))
}

/// Starts server `id` of `cluster` again (it rejoins as a secondary).
pub async fn restart(d: &mut Deployment, cluster: u32, id: u32) -> anyhow::Result<()> {
    if !d.server_ids(cluster).contains(&id) {
        anyhow::bail!("cluster {cluster} has no server {id}");
    }
    d.server(cluster, id).restart().await
}

/// What is missing for `cluster` to be whole: a live primary, and every
/// other server of it alive and in the in-sync set. `None`: nothing.
pub fn not_whole(views: &[ClusterView], cluster: u32, servers: usize) -> Option<String> {
    let Some(v) = views.iter().find(|v| v.cluster_id == cluster) else {
        return Some(format!(
            "cluster {cluster} is not in the coordinator's view"
        ));
    };
    let alive: Vec<u32> = v
        .processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Server as i32 && p.alive)
        .map(|p| p.server_id)
        .collect();
    if v.primary_id == 0 || !alive.contains(&v.primary_id) {
        return Some(format!("cluster {cluster} has no live primary"));
    }
    if alive.len() < servers {
        return Some(format!("{} of {servers} servers alive", alive.len()));
    }
    let lagging: Vec<u32> = alive
        .iter()
        .copied()
        .filter(|id| *id != v.primary_id && !v.in_sync.contains(id))
        .collect();
    if !lagging.is_empty() {
        return Some(format!("servers {lagging:?} are not in sync yet"));
    }
    None
}

/// Waits until `cluster` is whole (see [`not_whole`]).
pub async fn wait_whole(
    api: &Api,
    cluster: u32,
    servers: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::from("never checked");
    while start.elapsed() < deadline {
        match api.coord().clusters().await {
            Ok(views) => match not_whole(&views, cluster, servers) {
                None => return Ok(()),
                Some(why) => last = why,
            },
            Err(s) => last = format!("Clusters failed: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
    anyhow::bail!(
        "cluster {cluster} was not whole again within {} ms: {last}",
        deadline.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_proto::tsn::ProcessView;

    fn view(primary: u32, alive: &[(u32, bool)], in_sync: &[u32]) -> Vec<ClusterView> {
        vec![ClusterView {
            cluster_id: 1,
            epoch: 2,
            primary_id: primary,
            processes: alive
                .iter()
                .map(|&(id, alive)| ProcessView {
                    server_id: id,
                    kind: ProcessKind::Server as i32,
                    alive,
                    ..Default::default()
                })
                .collect(),
            in_sync: in_sync.to_vec(),
        }]
    }

    #[test]
    fn whole_means_primary_and_in_sync_secondaries() {
        assert_eq!(
            not_whole(&view(1, &[(1, true), (2, true)], &[2]), 1, 2),
            None
        );
        assert!(not_whole(&view(1, &[(1, true), (2, true)], &[]), 1, 2)
            .unwrap()
            .contains("not in sync"));
        assert!(not_whole(&view(1, &[(1, true), (2, false)], &[2]), 1, 2)
            .unwrap()
            .contains("1 of 2"));
        assert!(not_whole(&view(0, &[(2, true)], &[]), 1, 1)
            .unwrap()
            .contains("no live primary"));
        assert!(not_whole(&view(1, &[(1, false), (2, true)], &[2]), 1, 2).is_some());
        assert!(not_whole(&[], 1, 2).is_some());
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error() {
        let e = catching("the thing", async { panic!("boom") }).await;
        let msg = format!("{:#}", e.err().unwrap());
        assert!(msg.contains("the thing failed: boom"), "{msg}");
        assert_eq!(catching("x", async { 7 }).await.unwrap(), 7);
    }
}
