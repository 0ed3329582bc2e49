//! The Redis baseline, measured in the same run as tsn: the same follow
//! graph, the same closed loop of posters drawing the same authors, the
//! same watched followers, on a Redis primary and replica as durable per
//! write as Redis can be made (`pair.rs`), a post being one script and a
//! wait for the replica (`posts.rs`), deliveries timed on pub/sub
//! subscribers (`watch.rs`). The report compares tsn with it.

pub mod pair;
pub mod posts;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu::Tracked;
use crate::delivery::{analyze, DeliveryFigures};
use crate::figures::Span;
use crate::limits::DELIVERY_DRAIN_EXTRA_MS;
use crate::poster::{Via, REDIS_CLUSTER};
use crate::record::Ack;
use crate::report::PhaseReport;

use self::pair::{version_of, RedisPair, MIN_REPLICAS_MAX_LAG_S};
use self::posts::{load_graph, RedisPosts, ReplicaWait, TIMELINE_KEEP_LINES};
use self::watch::Subscribers;

/// How often the delivery drain re-checks what arrived.
const DELIVERY_CHECK_INTERVAL_MS: u64 = 100;

/// What the report says of the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct RedisReport {
    /// `redis_version` of the primary.
    pub version: String,
    /// How each post waited for the replica.
    pub replica_wait: ReplicaWait,
    /// The durability settings of both servers, in words.
    pub durability: String,
    pub phase: PhaseReport,
    /// Pub/sub arrivals not recorded because the store was full.
    pub arrivals_dropped: u64,
}

/// tsn's figure ÷ Redis's, for each compared figure (posts/s: higher is
/// better; latencies: lower is better).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VsRedis {
    pub posts_per_s: Option<f64>,
    pub ack_p50: Option<f64>,
    pub ack_p99: Option<f64>,
    /// tsn's same-cluster delivery (written in the post's own entry, like
    /// the script's fan-out) against Redis's pub/sub delivery.
    pub delivery_p50: Option<f64>,
    pub delivery_p99: Option<f64>,
}

impl VsRedis {
    /// The ratios of tsn's max-load phase `tsn` to the baseline's phase.
    pub fn of(tsn: &PhaseReport, redis: &PhaseReport) -> VsRedis {
        let ratio = |a: f64, b: f64| (b > 0.0 && a.is_finite()).then(|| a / b);
        let delivery = |p: &PhaseReport| {
            p.delivery
                .as_ref()
                .filter(|d| d.same_cluster.arrived > 0)
                .map(|d| (d.same_cluster.latency.p50_ms, d.same_cluster.latency.p99_ms))
        };
        let (td, rd) = (delivery(tsn), delivery(redis));
        let both = td.zip(rd);
        VsRedis {
            posts_per_s: ratio(tsn.figures.throughput_per_s, redis.figures.throughput_per_s),
            ack_p50: ratio(
                tsn.figures.ack_latency.p50_ms,
                redis.figures.ack_latency.p50_ms,
            ),
            ack_p99: ratio(
                tsn.figures.ack_latency.p99_ms,
                redis.figures.ack_latency.p99_ms,
            ),
            delivery_p50: both.and_then(|(t, r)| ratio(t.0, r.0)),
            delivery_p99: both.and_then(|(t, r)| ratio(t.1, r.1)),
        }
    }
}

/// What the baseline's phase needs of the run.
pub struct BaselineCtx<'a> {
    pub followers_of: &'a BTreeMap<u32, BTreeSet<u32>>,
    pub watched: &'a BTreeSet<u32>,
    pub run_id: &'a str,
    pub clock: crate::record::Clock,
    /// Posters of the closed loop, as in tsn's phase.
    pub clients: u32,
}

/// The pieces of the baseline that run while its load phase runs.
pub struct Baseline {
    pub pair: RedisPair,
    pub posts: Arc<RedisPosts>,
    pub subscribers: Subscribers,
    pub version: String,
}

impl Baseline {
    /// Starts the pair, loads the follow graph and the script, and
    /// subscribes the watched followers.
    pub async fn start(bin: &std::path::Path, ctx: &BaselineCtx<'_>) -> anyhow::Result<Baseline> {
        eprintln!("tsn_bench: starting a Redis primary and replica");
        let pair = RedisPair::start(bin).await?;
        let client = redis::Client::open(pair.primary_url())?;
        let mut con = posts::connect(&client).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let wait = ReplicaWait::for_version(version_of(&info).unwrap_or((0, 0)));
        load_graph(&mut con, ctx.followers_of).await?;
        let posts = Arc::new(RedisPosts::open(&client, ctx.clients as usize, wait).await?);
        let watched: Vec<u32> = ctx.watched.iter().copied().collect();
        let subscribers = Subscribers::start(&client, &watched, ctx.run_id, ctx.clock).await?;
        Ok(Baseline {
            pair,
            posts,
            subscribers,
            version,
        })
    }

    pub fn via(&self) -> Via {
        Via::Redis(self.posts.clone())
    }

    /// This process and the two servers, for CPU per post.
    pub fn tracked(&self) -> Vec<Tracked> {
        let mut t = vec![Tracked {
            kind: "tsn_bench (client)".into(),
            pid: std::process::id(),
        }];
        for (kind, p) in [
            ("redis primary", &self.pair.primary),
            ("redis replica", &self.pair.replica),
        ] {
            if let Some(pid) = p.pid() {
                t.push(Tracked {
                    kind: kind.into(),
                    pid,
                });
            }
        }
        t
    }

    /// Waits until every expected pub/sub delivery of `acks` arrived (or
    /// the drain time passed), then returns the figures; every delivery
    /// counts as same-cluster (the baseline is one cluster).
    pub async fn deliveries(
        &self,
        ctx: &BaselineCtx<'_>,
        acks: &[Ack],
        span: Span,
    ) -> DeliveryFigures {
        let acks: Vec<Ack> = acks
            .iter()
            .copied()
            .filter(|a| span.contains(a.acked_us))
            .collect();
        let start = Instant::now();
        loop {
            let (f, _) = analyze(
                &acks,
                &self.subscribers.arrivals(),
                ctx.followers_of,
                ctx.watched,
                REDIS_CLUSTER,
            );
            let missing = f.same_cluster.missing + f.cross_cluster.missing;
            if missing == 0 || start.elapsed() >= Duration::from_millis(DELIVERY_DRAIN_EXTRA_MS) {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(DELIVERY_CHECK_INTERVAL_MS)).await;
        }
    }

    /// Closes the subscriptions and stops both servers.
    pub async fn stop(self, phase: PhaseReport) -> RedisReport {
        let arrivals_dropped = self.subscribers.dropped();
        self.subscribers.stop().await;
        let Baseline {
            mut pair,
            posts,
            version,
            ..
        } = self;
        let replica_wait = posts.wait();
        drop(posts);
        pair.primary.stop().await;
        pair.replica.stop().await;
        RedisReport {
            version,
            replica_wait,
            durability: durability(replica_wait),
            phase,
            arrivals_dropped,
        }
    }
}

fn durability(wait: ReplicaWait) -> String {
    let wait = match wait {
        ReplicaWait::WaitAof => "WAITAOF 1 1 (fsynced on the primary and the replica)",
        ReplicaWait::Wait => "WAIT 1 (the replica, fsyncing always, acknowledged the offset)",
    };
    format!(
        "appendonly yes, appendfsync always on both; min-replicas-to-write 1, \
         min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_S} s; no RDB snapshots; lists trimmed to \
         {TIMELINE_KEEP_LINES} lines; each post then {wait}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Load;
    use crate::cpu::CpuFigures;
    use crate::delivery::Class;
    use crate::figures::phase_figures;
    use crate::stats::Summary;

    fn phase(throughput_per_s: f64, ack_p99_ms: f64, delivery_p99_ms: Option<f64>) -> PhaseReport {
        let span = Span {
            from_us: 0,
            to_us: 1_000_000,
        };
        let mut figures = phase_figures("x", Load::Closed { clients: 1 }, &[], &[], 0, span, None);
        figures.throughput_per_s = throughput_per_s;
        figures.ack_latency = Summary {
            p50_ms: ack_p99_ms / 2.0,
            p99_ms: ack_p99_ms,
            ..Summary::default()
        };
        let delivery = delivery_p99_ms.map(|p| DeliveryFigures {
            same_cluster: Class {
                arrived: 1,
                latency: Summary {
                    p50_ms: p,
                    p99_ms: p,
                    ..Summary::default()
                },
                ..Class::default()
            },
            ..DeliveryFigures::default()
        });
        PhaseReport {
            figures,
            delivery,
            delivery_windows: None,
            cpu: CpuFigures::default(),
        }
    }

    #[test]
    fn ratios_are_tsn_over_redis() {
        let v = VsRedis::of(
            &phase(2_000.0, 40.0, Some(4.0)),
            &phase(1_000.0, 20.0, Some(2.0)),
        );
        assert_eq!(v.posts_per_s, Some(2.0));
        assert_eq!((v.ack_p50, v.ack_p99), (Some(2.0), Some(2.0)));
        assert_eq!((v.delivery_p50, v.delivery_p99), (Some(2.0), Some(2.0)));
    }

    #[test]
    fn a_ratio_without_a_divisor_or_a_delivery_is_not_made() {
        let v = VsRedis::of(
            &phase(2_000.0, 40.0, Some(4.0)),
            &phase(0.0, 0.0, Some(0.0)),
        );
        assert_eq!(v, VsRedis::default());
        let v = VsRedis::of(
            &phase(2_000.0, 40.0, None),
            &phase(1_000.0, 20.0, Some(2.0)),
        );
        assert_eq!((v.delivery_p50, v.delivery_p99), (None, None));
        assert_eq!(v.posts_per_s, Some(2.0));
    }
}
