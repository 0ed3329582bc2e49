//! Both cores saturated for ten seconds (spinning threads and a writer per
//! cluster posting as fast as it can): no epoch changes and every process
//! stays alive in the coordinator's eyes, with the product's failure
//! timeout and heartbeat interval.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tsn_harness::direct::{post_request, posts_client};
use tsn_proto::tsn::{ClusterView, ProcessKind};

use common::{epochs, ms, start, views, wait_all_in_sync};

/// How long the machine is saturated, how many spinning threads do it
/// (next to a writer per cluster), and how often the coordinator's view is
/// looked at meanwhile.
const SATURATION_FOR_MS: u64 = 10_000;
const SATURATION_BUSY_THREADS: usize = 4;
const SATURATION_SAMPLE_INTERVAL_MS: u64 = 100;
/// Most problems kept from the samples (the first ones tell the story).
const SATURATION_PROBLEMS_MAX: usize = 50;
/// How many of the samples with the longest heartbeat silence are shown.
const SATURATION_SILENCES_KEPT: usize = 5;

/// Threads that spin until dropped, to keep every core busy.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What is wrong in one coordinator view, compared with the epochs of
/// before: an epoch that moved, a cluster without primary, a process that
/// is not alive.
fn view_problems(views: &[ClusterView], epochs: &BTreeMap<u32, u64>) -> Vec<String> {
    let mut problems = Vec::new();
    for (cluster, epoch) in epochs {
        let Some(v) = views.iter().find(|v| v.cluster_id == *cluster) else {
            problems.push(format!("cluster {cluster} is missing"));
            continue;
        };
        if v.epoch != *epoch {
            problems.push(format!(
                "cluster {cluster}: epoch {} instead of {epoch} (primary {})",
                v.epoch, v.primary_id
            ));
        }
        if v.primary_id == 0 {
            problems.push(format!("cluster {cluster} has no primary"));
        }
        for p in v.processes.iter().filter(|p| !p.alive) {
            let what = if p.kind == ProcessKind::Server as i32 {
                format!("server {}", p.server_id)
            } else {
                "the sync service".to_string()
            };
            problems.push(format!(
                "cluster {cluster}: {what} is not alive ({} ms since its heartbeat)",
                p.since_heartbeat_ms
            ));
        }
    }
    problems
}

/// Both cores saturated for ten seconds (spinning threads and a writer
/// per cluster posting as fast as it can): no epoch changes and every
/// process stays alive in the coordinator's eyes, with the product's
/// failure timeout and heartbeat interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_failover_under_saturation() {
    let mut d = start(3, 1).await;
    let api = d.api();
    d.login_all(&[1, 2, 3]).await;
    wait_all_in_sync(&d).await;
    let before = epochs(&api).await;
    let problems = view_problems(&views(&api).await, &before);
    assert!(problems.is_empty(), "before the load: {problems:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for cluster in 1..=d.config().clusters {
        let (_, addr) = d.primary_of(cluster).await;
        let client = posts_client(&addr);
        let stop = stop.clone();
        // User `cluster` is served by cluster `cluster`.
        let user = cluster;
        writers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut failures = BTreeMap::<String, u64>::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = post_request(user, &format!("{user}-load-{n}"), &format!("load {n}"));
                match client.clone().post(req).await {
                    Ok(_) => ok += 1,
                    Err(status) => {
                        let reason = status.message().to_string();
                        if failures.len() < SATURATION_PROBLEMS_MAX
                            || failures.contains_key(&reason)
                        {
                            *failures.entry(reason).or_default() += 1;
                        }
                    }
                }
            }
            (user, ok, failures)
        }));
    }
    let busy = Busy::start(SATURATION_BUSY_THREADS);
    // This test lets time pass by design: it proves that nothing happens
    // under load. Meanwhile the coordinator's view is sampled.
    let load_start = Instant::now();
    let mut seen = Vec::new();
    let mut samples = 0u64;
    let mut unanswered = 0u64;
    // The samples with the longest silences, longest first: they tell a
    // stalled process from a stalled coordinator.
    let mut silences: Vec<(u64, String)> = Vec::new();
    while load_start.elapsed() < ms(SATURATION_FOR_MS) {
        let asked = Instant::now();
        match api.coord().clusters().await {
            Ok(v) => {
                samples += 1;
                let at_ms = load_start.elapsed().as_millis();
                for p in view_problems(&v, &before) {
                    if seen.len() < SATURATION_PROBLEMS_MAX {
                        seen.push(format!("at {at_ms} ms: {p}"));
                    }
                }
                if let Some((who, longest, median)) = longest_silence(&v) {
                    silences.push((
                        longest,
                        format!(
                            "at {at_ms} ms: {who} silent for {longest} ms, median {median} ms, \
                             Clusters() answered in {} ms",
                            asked.elapsed().as_millis()
                        ),
                    ));
                    silences.sort_by_key(|s| std::cmp::Reverse(s.0));
                    silences.truncate(SATURATION_SILENCES_KEPT);
                }
            }
            Err(_) => unanswered += 1,
        }
        tokio::time::sleep(ms(SATURATION_SAMPLE_INTERVAL_MS)).await;
    }
    let silences: Vec<String> = silences.into_iter().map(|(_, s)| s).collect();
    drop(busy);
    stop.store(true, Ordering::Relaxed);
    let mut posted = Vec::new();
    for w in writers {
        match w.await {
            Ok(r) => posted.push(r),
            Err(e) => panic!("a writer failed: {e}"),
        }
    }
    eprintln!(
        "under load: {samples} samples of the coordinator's view ({unanswered} unanswered); \
         posts (user, acknowledged, failures by reason): {posted:?}\nlongest silences:\n{}",
        silences.join("\n")
    );

    let after = views(&api).await;
    let mut problems = view_problems(&after, &before);
    problems.extend(seen);
    // What the coordinator said about liveness: whether it declared one
    // process dead or many at once tells a stalled process from a stalled
    // coordinator.
    let said = liveness_lines(&d.coordinator().stderr_since_start());
    assert!(
        problems.is_empty(),
        "false failure detection under load:\n{problems:#?}\nthe coordinator said:\n{}\n\
         longest silences seen in the samples:\n{}",
        said.join("\n"),
        silences.join("\n")
    );
    assert!(
        samples > 0,
        "the coordinator never answered during the load"
    );
    for (user, ok, failures) in &posted {
        assert!(
            *ok > 0,
            "user {user}'s writer got no post acknowledged: {failures:?}"
        );
    }
}

/// The longest silence in one coordinator view: who, how long since its
/// last heartbeat (ms), and the median of every process's silence. One
/// process silent among chatty ones was stalled itself; every process
/// silent at once means the coordinator did not listen.
fn longest_silence(views: &[ClusterView]) -> Option<(String, u64, u64)> {
    let mut all: Vec<(u64, String)> = views
        .iter()
        .flat_map(|v| {
            v.processes.iter().map(move |p| {
                let who = if p.kind == ProcessKind::Server as i32 {
                    format!("server {} of cluster {}", p.server_id, v.cluster_id)
                } else {
                    format!("the sync service of cluster {}", v.cluster_id)
                };
                (p.since_heartbeat_ms, who)
            })
        })
        .collect();
    all.sort();
    let median = all.get(all.len() / 2)?.0;
    let (longest, who) = all.pop()?;
    Some((who, longest, median))
}

/// The lines of a coordinator log about liveness: deaths, returns and
/// promotions, at most [`SATURATION_PROBLEMS_MAX`] of them.
fn liveness_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" is dead") || l.contains("alive again") || l.contains("promoted"))
        .take(SATURATION_PROBLEMS_MAX)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod helper_tests {
    use super::*;
    use tsn_proto::tsn::ProcessView;

    #[test]
    fn longest_silence_names_the_process_and_the_median() {
        let p = |server_id, kind: ProcessKind, since| ProcessView {
            server_id,
            kind: kind as i32,
            since_heartbeat_ms: since,
            alive: true,
            ..Default::default()
        };
        let views = vec![ClusterView {
            cluster_id: 2,
            processes: vec![
                p(1, ProcessKind::Server, 40),
                p(2, ProcessKind::Server, 450),
                p(0, ProcessKind::SyncService, 60),
            ],
            ..Default::default()
        }];
        assert_eq!(
            longest_silence(&views),
            Some(("server 2 of cluster 2".to_string(), 450, 60))
        );
        assert_eq!(longest_silence(&[]), None);
    }

    #[test]
    fn liveness_lines_are_picked_from_a_log() {
        let log = "a INFO server 2 joined the in-sync set\n\
                   b WARN server 1 is dead: no heartbeat for 579 ms\n\
                   c WARN cluster 3: promoted server 2 (epoch 2)\n\
                   d INFO server 1 is alive again\n";
        let got = liveness_lines(log);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with('b') && got[2].starts_with('d'));
    }

    #[test]
    fn view_problems_name_moved_epochs_and_dead_processes() {
        let view = |epoch, alive| ClusterView {
            cluster_id: 1,
            epoch,
            primary_id: 1,
            processes: vec![ProcessView {
                server_id: 2,
                kind: ProcessKind::Server as i32,
                alive,
                ..Default::default()
            }],
            in_sync: vec![2],
        };
        let epochs: BTreeMap<u32, u64> = [(1, 3)].into_iter().collect();
        assert!(view_problems(&[view(3, true)], &epochs).is_empty());
        assert_eq!(view_problems(&[view(4, true)], &epochs).len(), 1);
        assert_eq!(view_problems(&[view(3, false)], &epochs).len(), 1);
        assert_eq!(view_problems(&[], &epochs).len(), 1);
    }
}
