//! What a coordinator member tells its operator at its admin port
//! ([`tsn_cluster::admin`]): every cluster's epoch, primary, in-sync set
//! and live processes, read from the control state right before each
//! scrape, and the failovers counted from the epochs' growth. Only the
//! leader holds that state: another member says it does not lead and who
//! does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tsn_cluster::admin::Refusals;
use tsn_proto::tsn::{ClusterView, ProcessKind};

use crate::service::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: u32,
}

/// The coordinator's metrics and the state they are read from.
pub struct Observed {
    state: Shared,
    epoch: Family<ClusterLabel, Gauge>,
    primary: Family<ClusterLabel, Gauge>,
    in_sync_secondaries: Family<ClusterLabel, Gauge>,
    alive_servers: Family<ClusterLabel, Gauge>,
    failovers: Family<ClusterLabel, Counter>,
    leader: Gauge,
    refused: Refusals,
    /// The epoch of each cluster at the last scrape: a promotion is a new
    /// epoch, so the growth is the failovers since.
    epochs_seen: Mutex<HashMap<u32, u64>>,
}

impl Observed {
    pub fn new(state: Shared, registry: &mut Registry) -> Observed {
        let mut o = Observed {
            state,
            epoch: Family::default(),
            primary: Family::default(),
            in_sync_secondaries: Family::default(),
            alive_servers: Family::default(),
            failovers: Family::default(),
            leader: Gauge::default(),
            refused: Refusals::default(),
            epochs_seen: Mutex::new(HashMap::new()),
        };
        // Failovers are counted from now on: the epochs reached before
        // (loaded from the state files) are the baseline.
        let baseline = o
            .views()
            .unwrap_or_default()
            .iter()
            .map(|v| (v.cluster_id, v.epoch))
            .collect();
        o.epochs_seen = Mutex::new(baseline);
        registry.register("cluster_epoch", "Each cluster's epoch", o.epoch.clone());
        registry.register(
            "cluster_primary",
            "Each cluster's primary server id (0: none)",
            o.primary.clone(),
        );
        registry.register(
            "cluster_in_sync_secondaries",
            "Secondaries in each cluster's in-sync set",
            o.in_sync_secondaries.clone(),
        );
        registry.register(
            "cluster_alive_servers",
            "Servers of each cluster whose heartbeats are current",
            o.alive_servers.clone(),
        );
        registry.register(
            "failovers",
            "Promotions of a secondary, by cluster, since this coordinator started",
            o.failovers.clone(),
        );
        registry.register(
            "coordinator_leader",
            "1 while this member leads the coordinator group (and decides)",
            o.leader.clone(),
        );
        o.refused.register(
            registry,
            "Connections and internal calls refused, by reason",
        );
        o
    }

    /// Every cluster's view when this member leads (and no decision holds
    /// the control plane this instant); `None` on a member that does not.
    fn views(&self) -> Option<Vec<ClusterView>> {
        self.state.try_read(|c| c.clusters(Instant::now()))
    }
}

impl tsn_cluster::admin::Observed for Observed {
    fn refresh(&self) {
        self.refused.refresh();
        self.leader
            .set(i64::from(self.state.try_read(|_| ()).is_some()));
        let Some(views) = self.views() else {
            return;
        };
        let mut seen = self.epochs_seen.lock().unwrap_or_else(|e| e.into_inner());
        for v in &views {
            let label = ClusterLabel {
                cluster: v.cluster_id,
            };
            let epoch = i64::try_from(v.epoch).unwrap_or(i64::MAX);
            self.epoch.get_or_create(&label).set(epoch);
            self.primary
                .get_or_create(&label)
                .set(i64::from(v.primary_id));
            self.in_sync_secondaries
                .get_or_create(&label)
                .set(v.in_sync.len() as i64);
            let alive = v
                .processes
                .iter()
                .filter(|p| p.alive && p.kind == ProcessKind::Server as i32)
                .count();
            self.alive_servers.get_or_create(&label).set(alive as i64);
            let failovers = self.failovers.get_or_create(&label);
            // A cluster's first primary gets epoch 1: no failover. Each
            // epoch past the last one seen is one promotion.
            let before = seen.insert(v.cluster_id, v.epoch).unwrap_or(0).max(1);
            failovers.inc_by(v.epoch.saturating_sub(before));
        }
    }

    fn status(&self) -> serde_json::Value {
        let Some(views) = self.views() else {
            return serde_json::json!({
                "process": "coordinator",
                "leader": false,
                "leader_address": self.state.leader(),
            });
        };
        let clusters: Vec<serde_json::Value> = views
            .iter()
            .map(|v| {
                let processes: Vec<serde_json::Value> = v
                    .processes
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "server_id": p.server_id,
                            "kind": p.kind().as_str_name(),
                            "address": p.address,
                            "role": p.role().as_str_name(),
                            "alive": p.alive,
                            "last_seq": p.last_seq,
                            "since_heartbeat_ms": p.since_heartbeat_ms,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "cluster_id": v.cluster_id,
                    "epoch": v.epoch,
                    "primary_id": v.primary_id,
                    "in_sync": v.in_sync,
                    "processes": processes,
                })
            })
            .collect();
        serde_json::json!({ "process": "coordinator", "leader": true, "clusters": clusters })
    }
}
