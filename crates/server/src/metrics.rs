//! What a server tells its operator: the metrics at `/metrics` and the
//! status at `/admin/status` of its admin port ([`tsn_cluster::admin`]).
//!
//! Events (a write, an fsync, a refusal) are counted where they happen, by
//! the code that owns them; state (role, epoch, seqs, the in-sync set, open
//! streams, lags) is read from its owner right before each scrape
//! ([`ServerMetrics::refresh`]), so the hot paths carry no gauge updates.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::{Code, Status};
use tsn_cluster::admin::{latency_buckets_seconds, PeerLabel, Refusals};

use crate::node::{Node, Role};

/// Counted events and mirrored state of one server.
pub struct ServerMetrics {
    write_seconds: Histogram,
    fsync_seconds: Histogram,
    group_commit_entries: Histogram,
    durable_entries: Counter,
    refused: Refusals,
    primary: Gauge,
    epoch: Gauge,
    last_seq: Gauge,
    commit_seq: Gauge,
    in_sync_secondaries: Gauge,
    replication_lag_entries: Family<PeerLabel, Gauge>,
    open_streams: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> ServerMetrics {
        ServerMetrics {
            write_seconds: Histogram::new(latency_buckets_seconds()),
            fsync_seconds: Histogram::new(latency_buckets_seconds()),
            // 1 to 4096 entries by doubling: the writer's batch is bounded
            // by the write queue.
            group_commit_entries: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            durable_entries: Counter::default(),
            refused: Refusals::default(),
            primary: Gauge::default(),
            epoch: Gauge::default(),
            last_seq: Gauge::default(),
            commit_seq: Gauge::default(),
            in_sync_secondaries: Gauge::default(),
            replication_lag_entries: Family::default(),
            open_streams: Gauge::default(),
        }
    }
}

impl ServerMetrics {
    /// Adds every metric to `registry` (names get the `tsn_` prefix there).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "write_seconds",
            "A client write from its arrival to its commit (durable on the primary and every in-sync secondary)",
            self.write_seconds.clone(),
        );
        r.register(
            "fsync_seconds",
            "One fdatasync of the journal by the group-commit writer",
            self.fsync_seconds.clone(),
        );
        r.register(
            "group_commit_entries",
            "Journal entries made durable by one fsync",
            self.group_commit_entries.clone(),
        );
        r.register(
            "durable_entries",
            "Journal entries the writer made durable here",
            self.durable_entries.clone(),
        );
        self.refused
            .register(r, "Requests and connections refused, by reason");
        r.register(
            "primary",
            "1 while this server is its cluster's primary",
            self.primary.clone(),
        );
        r.register(
            "epoch",
            "The cluster's epoch as this server knows it",
            self.epoch.clone(),
        );
        r.register(
            "last_seq",
            "The journal's last durable seq",
            self.last_seq.clone(),
        );
        r.register(
            "commit_seq",
            "The commit point (primary): durable here and on every in-sync secondary",
            self.commit_seq.clone(),
        );
        r.register(
            "in_sync_secondaries",
            "Secondaries every commit waits for (primary)",
            self.in_sync_secondaries.clone(),
        );
        r.register(
            "replication_lag_entries",
            "Entries durable here that a waited-for secondary has not acknowledged (primary)",
            self.replication_lag_entries.clone(),
        );
        r.register(
            "open_streams",
            "Open timeline streams on this server",
            self.open_streams.clone(),
        );
    }

    /// Counts one client write that took `took` and ended as `result`.
    pub fn note_write<T>(&self, took: Duration, result: &Result<T, Status>) {
        match result {
            Ok(_) => self.write_seconds.observe(took.as_secs_f64()),
            Err(status) => self.note_refused(refusal_reason(status)),
        }
    }

    /// Counts one fsync of `entries` entries that took `took`.
    pub fn note_fsync(&self, took: Duration, entries: usize) {
        self.fsync_seconds.observe(took.as_secs_f64());
        self.group_commit_entries.observe(entries as f64);
        self.durable_entries.inc_by(entries as u64);
    }

    pub fn note_refused(&self, reason: &str) {
        self.refused.note(reason);
    }

    /// Brings the mirrored state up to date from `node`, right before a
    /// scrape.
    pub fn refresh(&self, node: &Node) {
        self.refused.refresh();
        let status = ServerStatus::of(node);
        self.primary.set(i64::from(status.role == Role::Primary));
        self.epoch.set(clamp(status.epoch));
        self.last_seq.set(clamp(status.last_seq));
        self.commit_seq.set(clamp(status.commit_seq));
        self.in_sync_secondaries.set(status.waited.len() as i64);
        self.replication_lag_entries.clear();
        for (peer, acked) in &status.waited {
            self.replication_lag_entries
                .get_or_create(&PeerLabel {
                    peer: format!("server{peer}"),
                })
                .set(clamp(status.last_seq.saturating_sub(*acked)));
        }
        self.open_streams.set(status.open_streams as i64);
    }
}

/// A server's state as the operator sees it.
pub struct ServerStatus {
    pub role: Role,
    pub epoch: u64,
    pub primary_id: u32,
    pub last_seq: u64,
    pub commit_seq: u64,
    /// The secondaries commits wait for, with the seq each acknowledged.
    pub waited: Vec<(u32, u64)>,
    pub open_streams: usize,
}

impl ServerStatus {
    pub fn of(node: &Node) -> ServerStatus {
        let view = node.role();
        let (last_seq, waited) = node.with_commit(|c| (c.durable().0, c.waited_acks()));
        ServerStatus {
            role: view.role,
            epoch: view.epoch,
            primary_id: view.primary_id,
            last_seq,
            commit_seq: node.commit_seq(),
            waited,
            open_streams: node.open_streams(),
        }
    }

    /// The JSON of `/admin/status`.
    pub fn to_json(&self, cluster_id: u32, server_id: u32) -> serde_json::Value {
        let lags: serde_json::Map<String, serde_json::Value> = self
            .waited
            .iter()
            .map(|(peer, acked)| {
                (
                    peer.to_string(),
                    serde_json::json!({
                        "acked_seq": acked,
                        "lag_entries": self.last_seq.saturating_sub(*acked),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "process": "server",
            "cluster_id": cluster_id,
            "server_id": server_id,
            "role": format!("{:?}", self.role).to_lowercase(),
            "epoch": self.epoch,
            "primary_id": self.primary_id,
            "last_seq": self.last_seq,
            "commit_seq": self.commit_seq,
            "in_sync": lags,
            "open_streams": self.open_streams,
        })
    }
}

/// The `reason` label of a refused write.
fn refusal_reason(status: &Status) -> &'static str {
    match status.code() {
        Code::ResourceExhausted if tsn_cluster::refusal::is_final_refusal(status) => "disk_full",
        Code::ResourceExhausted => "queue_full",
        Code::InvalidArgument => "invalid",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "commit_timeout",
        _ => "other",
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A server as its admin port sees it.
pub struct Observed(pub Arc<Node>);

impl tsn_cluster::admin::Observed for Observed {
    fn refresh(&self) {
        self.0.metrics.refresh(&self.0);
    }

    fn status(&self) -> serde_json::Value {
        ServerStatus::of(&self.0).to_json(self.0.cluster_id, self.0.server_id)
    }
}
