//! Delivery latency: from a post's acknowledgement to its arrival on a
//! follower's open Timeline stream.
//!
//! A sample of followers keep their streams open for the whole run, like
//! people watching their timelines. Each stream notes when each of this
//! run's posts arrived; when a stream fails (its primary was killed) the
//! client library's [`TimelineWatch`] opens it again on the current
//! primary, resuming after the last line it got, as a client does. The pure [`analyze`] then matches arrivals with
//! acknowledgements and splits them by whether follower and author share a
//! cluster: a same-cluster delivery is written by the author's primary in
//! the post's own entry, a cross-cluster one goes through two sync services
//! and the follower's primary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tsn_client::{Event, RetryPolicy, Router, RouterConfig, TimelineWatch};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::home_cluster;
use tsn_cluster::shutdown::{Shutdown, Trigger};
use tsn_cluster::sync::lock;

use crate::ids::parse_post_id;
use crate::limits::{
    ARRIVALS_MAX_RECORDS, POLL_INTERVAL_MS, POST_CALL_TIMEOUT_MS, STREAM_RETRY_BACKOFF_MAX_MS,
    STREAM_RETRY_BACKOFF_MIN_MS,
};
use crate::record::{Ack, Clock};
use crate::stats::{summarize, Summary};

/// How a stream is opened again after it failed: for as long as the run
/// lasts.
const STREAM_POLICY: RetryPolicy = RetryPolicy {
    backoff_min_ms: STREAM_RETRY_BACKOFF_MIN_MS,
    backoff_max_ms: STREAM_RETRY_BACKOFF_MAX_MS,
    attempt_timeout_ms: POST_CALL_TIMEOUT_MS,
    retry_for: None,
};

/// One of this run's posts arriving on a follower's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub n: u64,
    pub follower: u32,
    pub at_us: u64,
}

#[derive(Default)]
struct Sink {
    arrivals: Mutex<Vec<Arrival>>,
    dropped: AtomicU64,
    /// Streams that opened at least once.
    opened: AtomicUsize,
    /// Times a stream was opened again after it failed.
    reopened: AtomicU64,
}

/// The open streams of the sampled followers.
pub struct Watchers {
    sink: Arc<Sink>,
    count: usize,
    stop: Trigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Watchers {
    /// Opens a stream for each of `followers` in the background.
    pub fn start(coord: &CoordClient, followers: &[u32], run: &str, clock: Clock) -> Watchers {
        let sink = Arc::new(Sink::default());
        let (stop, stopped) = Shutdown::new();
        let router = Router::new(coord.clone(), RouterConfig::per_user(POST_CALL_TIMEOUT_MS));
        let tasks = followers
            .iter()
            .map(|&user| {
                tokio::spawn(watch(
                    router.clone(),
                    user,
                    run.to_string(),
                    clock,
                    sink.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        Watchers {
            sink,
            count: followers.len(),
            stop,
            tasks,
        }
    }

    /// Waits until every stream opened once; the error says how many did.
    pub async fn wait_open(&self, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let opened = self.sink.opened.load(Ordering::Relaxed);
            if opened >= self.count {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(format!(
                    "{opened} of {} Timeline streams opened within {} ms",
                    self.count,
                    deadline.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.sink.arrivals).clone()
    }

    pub fn dropped(&self) -> u64 {
        self.sink.dropped.load(Ordering::Relaxed)
    }

    pub fn reopened(&self) -> u64 {
        self.sink.reopened.load(Ordering::Relaxed)
    }

    /// Closes every stream.
    pub async fn stop(self) {
        self.stop.fire();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn watch(
    router: Router,
    user: u32,
    run: String,
    clock: Clock,
    sink: Arc<Sink>,
    mut stop: Shutdown,
) {
    let mut stream = TimelineWatch::new(router, user, STREAM_POLICY);
    let mut opened_once = false;
    while !stop.is_fired() {
        let event = tokio::select! {
            _ = stop.wait() => return,
            event = stream.next() => event,
        };
        match event {
            Ok(Event::Opened { .. }) if opened_once => {
                sink.reopened.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Opened { .. }) => {
                opened_once = true;
                sink.opened.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Post(msg)) => {
                let at_us = clock.now_us();
                if let Some((_, n)) = parse_post_id(&run, &msg.post_id) {
                    let mut a = lock(&sink.arrivals);
                    if a.len() < ARRIVALS_MAX_RECORDS {
                        a.push(Arrival {
                            n,
                            follower: user,
                            at_us,
                        });
                    } else {
                        sink.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(user, %error, "the timeline stream was refused for good");
                return;
            }
        }
    }
}

/// The delivery figures of one phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeliveryFigures {
    pub same_cluster: Class,
    pub cross_cluster: Class,
    /// The same post arriving on the same stream more than once (after a
    /// stream was opened again, its first lines may repeat).
    pub repeated_arrivals: u64,
    /// Latency by route, `"<author's cluster>-><follower's cluster>"`: a
    /// slow sync service or primary shows up as the routes through it.
    pub by_route: BTreeMap<String, Summary>,
}

/// Deliveries of one kind (same cluster or cross cluster).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Class {
    /// (post, watched follower) pairs that should arrive.
    pub expected: u64,
    /// Of those, arrived: `latency` has one sample per arrival.
    pub arrived: u64,
    pub missing: u64,
    /// Arrived before the acknowledgement reached the poster (latency 0).
    pub before_ack: u64,
    pub latency: Summary,
}

/// One delivery for the plot: when its post was acknowledged, how long it
/// took, and whether it crossed clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub acked_us: u64,
    pub latency_us: u64,
    pub cross: bool,
}

/// Matches the acknowledged posts `acks` with `arrivals` on the streams of
/// `watched` followers; `followers_of` is the follow graph.
pub fn analyze(
    acks: &[Ack],
    arrivals: &[Arrival],
    followers_of: &BTreeMap<u32, BTreeSet<u32>>,
    watched: &BTreeSet<u32>,
    clusters: u32,
) -> (DeliveryFigures, Vec<Delivery>) {
    let mut first: HashMap<(u64, u32), u64> = HashMap::with_capacity(arrivals.len());
    let mut repeated = 0u64;
    for a in arrivals {
        match first.entry((a.n, a.follower)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                repeated += 1;
                if a.at_us < *o.get() {
                    o.insert(a.at_us);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(a.at_us);
            }
        }
    }
    let mut same = (Class::default(), Vec::new());
    let mut cross = (Class::default(), Vec::new());
    let mut deliveries = Vec::new();
    let mut routes: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    for ack in acks {
        let Some(followers) = followers_of.get(&ack.author) else {
            continue;
        };
        let home = home_cluster(ack.author, clusters);
        for &f in followers.intersection(watched) {
            let follower_home = home_cluster(f, clusters);
            let is_cross = follower_home != home;
            let (class, samples) = if is_cross { &mut cross } else { &mut same };
            class.expected += 1;
            match first.get(&(ack.n, f)) {
                Some(&at) => {
                    class.arrived += 1;
                    if at < ack.acked_us {
                        class.before_ack += 1;
                    }
                    let latency_us = at.saturating_sub(ack.acked_us);
                    samples.push(latency_us);
                    routes
                        .entry((home, follower_home))
                        .or_default()
                        .push(latency_us);
                    deliveries.push(Delivery {
                        acked_us: ack.acked_us,
                        latency_us,
                        cross: is_cross,
                    });
                }
                None => class.missing += 1,
            }
        }
    }
    same.0.latency = summarize(same.1);
    cross.0.latency = summarize(cross.1);
    (
        DeliveryFigures {
            same_cluster: same.0,
            cross_cluster: cross.0,
            repeated_arrivals: repeated,
            by_route: routes
                .into_iter()
                .map(|((from, to), v)| (format!("{from}->{to}"), summarize(v)))
                .collect(),
        },
        deliveries,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u64, author: u32, acked_us: u64) -> Ack {
        Ack {
            n,
            author,
            cluster: home_cluster(author, 3),
            due_us: 0,
            sent_us: 0,
            acked_us,
            server: 0,
            tries: 1,
        }
    }

    #[test]
    fn arrivals_are_matched_and_split_by_cluster() {
        // Author 1 (cluster 1) is followed by 4 (cluster 1) and 2
        // (cluster 2); 7 (cluster 1) follows too but is not watched.
        let followers_of = BTreeMap::from([(1, BTreeSet::from([2, 4, 7]))]);
        let watched = BTreeSet::from([2, 4]);
        let acks = [ack(10, 1, 1_000), ack(11, 1, 2_000)];
        let arrivals = [
            Arrival {
                n: 10,
                follower: 4,
                at_us: 1_500,
            },
            Arrival {
                n: 10,
                follower: 2,
                at_us: 41_000,
            },
            Arrival {
                n: 10,
                follower: 2,
                at_us: 90_000,
            }, // a repeat
            Arrival {
                n: 11,
                follower: 4,
                at_us: 1_900,
            }, // before the ack
            Arrival {
                n: 99,
                follower: 4,
                at_us: 5,
            }, // not acked here
        ];
        let (f, d) = analyze(&acks, &arrivals, &followers_of, &watched, 3);
        assert_eq!(f.same_cluster.expected, 2);
        assert_eq!(f.same_cluster.arrived, 2);
        assert_eq!(f.same_cluster.before_ack, 1);
        assert_eq!(f.same_cluster.latency.count, 2);
        assert_eq!(f.cross_cluster.expected, 2);
        assert_eq!(f.cross_cluster.arrived, 1);
        assert_eq!(f.cross_cluster.missing, 1);
        assert_eq!(f.cross_cluster.latency.max_ms, 40.0);
        assert_eq!(f.repeated_arrivals, 1);
        assert_eq!(f.by_route.get("1->1").map(|s| s.count), Some(2));
        assert_eq!(f.by_route.get("1->2").map(|s| s.max_ms), Some(40.0));
        assert_eq!(d.len(), 3);
        assert!(d.iter().any(|x| x.cross && x.latency_us == 40_000));
    }

    #[test]
    fn authors_nobody_watches_expect_nothing() {
        let (f, d) = analyze(&[ack(1, 5, 0)], &[], &BTreeMap::new(), &BTreeSet::new(), 3);
        assert_eq!(f, DeliveryFigures::default());
        assert!(d.is_empty());
    }
}
