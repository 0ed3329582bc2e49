//! Whether a deployment is whole, as its coordinator sees it.
//!
//! A test starts doing things only once every cluster has a live primary
//! and every process it started is alive; after a kill and restart it waits
//! for the same again. The coordinator's view is the judge, because that is
//! what clients and servers act on.

use std::time::{Duration, Instant};

use tsn_proto::tsn::ProcessKind;

use super::{Deployment, FIRST_SERVER_ID};
use crate::api::primary_in;
use crate::limits::{HEALTHY_DEADLINE_MS, POLL_INTERVAL_MS};
use crate::wait::wait_for;

impl Deployment {
    /// What is wrong with the deployment now, as the coordinator sees it:
    /// a cluster without a live primary, a running process it does not see
    /// alive, a cluster `GetServer` cannot answer for.
    pub async fn health(&mut self) -> Result<(), String> {
        let views = self
            .api
            .coord()
            .clusters()
            .await
            .map_err(|s| format!("Clusters failed: {s}"))?;
        for cluster in 1..=self.config.clusters {
            let Some(view) = views.iter().find(|v| v.cluster_id == cluster) else {
                return Err(format!(
                    "cluster {cluster} is not in the coordinator's view"
                ));
            };
            let primary = view
                .processes
                .iter()
                .find(|p| p.kind == ProcessKind::Server as i32 && p.server_id == view.primary_id);
            match primary {
                Some(p) if view.primary_id != 0 && p.alive => {}
                _ => return Err(format!("cluster {cluster} has no live primary: {view:?}")),
            }
            for s in self.servers.iter_mut().filter(|s| s.cluster == cluster) {
                if !s.proc.is_running() || s.proc.is_paused() {
                    continue;
                }
                let seen = view.processes.iter().any(|p| {
                    p.kind == ProcessKind::Server as i32 && p.server_id == s.server_id && p.alive
                });
                if !seen {
                    return Err(format!(
                        "server {} of cluster {cluster} is not alive in {view:?}",
                        s.server_id
                    ));
                }
            }
            for s in self.syncs.iter_mut().filter(|s| s.cluster == cluster) {
                if !s.proc.is_running() || s.proc.is_paused() {
                    continue;
                }
                let seen = view
                    .processes
                    .iter()
                    .any(|p| p.kind == ProcessKind::SyncService as i32 && p.alive);
                if !seen {
                    return Err(format!(
                        "the sync service of cluster {cluster} is not alive in {view:?}"
                    ));
                }
            }
            // User `cluster` is served by cluster `cluster` (ids up to N
            // map to themselves): the classic lookup must work too.
            self.api
                .coord()
                .get_server(cluster)
                .await
                .map_err(|s| format!("GetServer({cluster}) failed: {s}"))?;
        }
        Ok(())
    }

    /// Waits (up to [`HEALTHY_DEADLINE_MS`]) until [`Deployment::health`]
    /// finds nothing wrong.
    pub async fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            let why = match self.health().await {
                Ok(()) => return,
                Err(why) => why,
            };
            if start.elapsed() >= Duration::from_millis(HEALTHY_DEADLINE_MS) {
                panic!("the deployment was not healthy within {HEALTHY_DEADLINE_MS} ms: {why}");
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    pub(super) async fn wait_primaries_are_first(&self) {
        let api = self.api();
        let clusters = self.config.clusters;
        wait_for(
            Duration::from_millis(HEALTHY_DEADLINE_MS),
            "every cluster's first server to become its primary",
            || {
                let api = api.clone();
                async move {
                    let views = api.coord().clusters().await.map_err(|s| s.to_string())?;
                    for cluster in 1..=clusters {
                        match primary_in(&views, cluster) {
                            Some((FIRST_SERVER_ID, _)) => {}
                            other => return Err(format!("cluster {cluster}: primary {other:?}")),
                        }
                    }
                    Ok(())
                }
            },
        )
        .await
    }
}
