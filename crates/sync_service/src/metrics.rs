//! What a sync service tells its operator at its admin port
//! ([`tsn_cluster::admin`]): how far its own cluster's journal has been
//! read, and how far each destination cluster has acknowledged it, read
//! right before each scrape.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tsn_cluster::admin::Refusals;

use crate::position::Positions;
use crate::source::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabel {
    dest: u32,
}

/// The sync service's metrics and where they are read from.
pub struct Observed {
    cluster_id: u32,
    source: Arc<Source>,
    positions: Arc<Positions>,
    read_end_seq: Gauge,
    position_seq: Family<DestLabel, Gauge>,
    lag_entries: Family<DestLabel, Gauge>,
    refused: Refusals,
}

impl Observed {
    pub fn new(
        cluster_id: u32,
        source: Arc<Source>,
        positions: Arc<Positions>,
        registry: &mut Registry,
    ) -> Observed {
        let o = Observed {
            cluster_id,
            source,
            positions,
            read_end_seq: Gauge::default(),
            position_seq: Family::default(),
            lag_entries: Family::default(),
            refused: Refusals::default(),
        };
        registry.register(
            "sync_read_end_seq",
            "The newest committed seq of the own cluster's journal read",
            o.read_end_seq.clone(),
        );
        registry.register(
            "sync_position_seq",
            "The seq up to which each destination cluster acknowledged every change",
            o.position_seq.clone(),
        );
        registry.register(
            "sync_lag_entries",
            "Journal entries read but not yet acknowledged by each destination cluster",
            o.lag_entries.clone(),
        );
        o.refused.register(
            registry,
            "Connections and internal calls refused, by reason",
        );
        o
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl tsn_cluster::admin::Observed for Observed {
    fn refresh(&self) {
        self.refused.refresh();
        let end = self.source.read_end_seq();
        self.read_end_seq.set(gauge_value(end));
        for (dest, seq) in self.positions.all() {
            let label = DestLabel { dest };
            self.position_seq
                .get_or_create(&label)
                .set(gauge_value(seq));
            self.lag_entries
                .get_or_create(&label)
                .set(gauge_value(end.saturating_sub(seq)));
        }
    }

    fn status(&self) -> serde_json::Value {
        let end = self.source.read_end_seq();
        let dests: serde_json::Map<String, serde_json::Value> = self
            .positions
            .all()
            .into_iter()
            .map(|(dest, seq)| {
                (
                    dest.to_string(),
                    serde_json::json!({
                        "position_seq": seq,
                        "lag_entries": end.saturating_sub(seq),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "process": "sync_service",
            "cluster_id": self.cluster_id,
            "read_end_seq": end,
            "destinations": dests,
        })
    }
}
