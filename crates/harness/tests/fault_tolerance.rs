//! The fault-tolerance proof of tsn: kill any one process of a cluster at
//! any moment (kill -9), or every process at once, and no acknowledged post
//! is lost, none appears twice, and clients carry on by themselves.
//!
//! Each scenario runs writers that post continuously and retry a post with
//! the same id until it is acknowledged ([`tsn_harness::load`]), kills
//! processes under that load, waits for each recovery by polling the
//! coordinator's view, and finally holds every timeline and every replica's
//! journal to what the writers were told ([`tsn_harness::fault_check`]).
//!
//! Build the binaries first: `cargo build --bins`.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tsn_harness::api::Api;
use tsn_harness::fault_check::{journals_agree, Expectation, FollowRecord, Reader};
use tsn_harness::load::{KillMark, Load, LoadReport};
use tsn_harness::{wait_for, Config, Deployment, Member};
use tsn_proto::tsn::{ClusterView, ProcessKind};

/// The sync services' poll interval in these scenarios.
const Q_MS: u64 = 200;
/// The coordinator's failure timeout: the product default.
const FAILURE_TIMEOUT_MS: u64 = tsn_cluster::limits::FAILURE_TIMEOUT_MS;
/// How long one scenario may run once its deployment is up.
const SCENARIO_DEADLINE_MS: u64 = 90_000;
/// How long a failover may take, from the kill to the first post
/// acknowledged by the new primary. A bound on behaviour, not a speed
/// target.
const FAILOVER_DEADLINE_MS: u64 = 15_000;
/// How long a restarted server may take to be back in the in-sync set.
const REJOIN_DEADLINE_MS: u64 = 20_000;
/// How long after a kill a cluster whose killed primary is still named
/// and that has no other in-sync server counts as waiting for its primary:
/// three failure timeouts, by when the coordinator would have promoted
/// any candidate.
const STUCK_AFTER_MS: u64 = 3 * FAILURE_TIMEOUT_MS;
/// Kills of a primary tried before a failover counts as impossible (see
/// `fail_over`).
const KILL_ATTEMPTS_MAX: u32 = 3;
/// Posts every writer must have acknowledged after each step before the
/// next one: proof that clients carried on.
const STEP_POSTS: u64 = 5;
/// How long every writer has to acknowledge [`STEP_POSTS`] more posts.
const STEP_DEADLINE_MS: u64 = 20_000;
/// How long, after the writers stopped, every timeline has to hold every
/// post it must.
const CONVERGE_DEADLINE_MS: u64 = 60_000;
/// Lines per `Posts.Read` when the timelines are read a second time, to
/// check the reading of the files against `Posts.Read`.
const SMALL_READ_LIMIT: u32 = 50;
/// Failovers measured by `ten_failovers_are_measured`.
const MEASURED_FAILOVERS: usize = 10;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(clusters: u32, secondaries: u32) -> Config {
    let mut c = Config::new(clusters, secondaries, Q_MS);
    c.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    c
}

/// Runs `scenario` with the scenario deadline. On a timeout the panic
/// happens while the deployment is still alive, so its logs are printed
/// and its directory kept.
async fn bounded(scenario: impl Future<Output = ()>) {
    if tokio::time::timeout(ms(SCENARIO_DEADLINE_MS), scenario)
        .await
        .is_err()
    {
        panic!("the scenario did not finish within {SCENARIO_DEADLINE_MS} ms");
    }
}

/// The coordinator's view of `cluster`.
async fn view_of(api: &Api, cluster: u32) -> Result<ClusterView, String> {
    let views = api
        .coord()
        .clusters()
        .await
        .map_err(|s| format!("Clusters failed: {s}"))?;
    views
        .into_iter()
        .find(|v| v.cluster_id == cluster)
        .ok_or_else(|| format!("cluster {cluster} is not in the coordinator's view"))
}

fn is_alive_server(view: &ClusterView, server_id: u32) -> bool {
    view.processes
        .iter()
        .any(|p| p.kind == ProcessKind::Server as i32 && p.server_id == server_id && p.alive)
}

/// Waits until every server of `servers` is alive and either the primary
/// or in the in-sync set of `cluster`: the cluster is whole again.
async fn wait_whole(api: &Api, cluster: u32, servers: &[u32]) {
    let what = format!("servers {servers:?} of cluster {cluster} to be alive and in sync");
    wait_for(ms(REJOIN_DEADLINE_MS), &what, move || async move {
        let view = view_of(api, cluster).await?;
        let whole = view.primary_id != 0
            && servers.iter().all(|&s| {
                is_alive_server(&view, s) && (s == view.primary_id || view.in_sync.contains(&s))
            });
        if whole {
            Ok(())
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await
}

/// Waits until the restarted server `server_id` is back as a secondary of
/// `cluster`: alive, not the primary, and in the in-sync set (so it holds
/// everything committed and may be promoted).
async fn wait_rejoined(api: &Api, cluster: u32, server_id: u32) -> ClusterView {
    let what =
        format!("server {server_id} of cluster {cluster} to be back as an in-sync secondary");
    wait_for(ms(REJOIN_DEADLINE_MS), &what, move || async move {
        let view = view_of(api, cluster).await?;
        let back = view.primary_id != 0
            && view.primary_id != server_id
            && is_alive_server(&view, server_id)
            && view.in_sync.contains(&server_id);
        if back {
            Ok(view)
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await
}

/// What one failover did.
struct Failover {
    /// The primary killed.
    victim: u32,
    /// When it was killed.
    mark: KillMark,
    /// The view that showed its successor.
    promoted: ClusterView,
}

/// The servers of `cluster` whose process runs.
fn running_servers(d: &mut Deployment, cluster: u32) -> Vec<u32> {
    d.server_ids(cluster)
        .into_iter()
        .filter(|&s| d.server(cluster, s).is_running())
        .collect()
}

/// Kills the primary of `cluster` with kill -9 once every running server
/// is in sync, and waits until another server is promoted.
///
/// A primary drops a secondary from the in-sync set when mirroring to it
/// is slow (a loaded machine), and adds it back once it caught up. A kill
/// in that window leaves the cluster without a server that may be promoted:
/// it waits, by design, for its primary to return. Then the killed server
/// is restarted (it is still the primary) and the kill is tried again, up
/// to [`KILL_ATTEMPTS_MAX`] times.
async fn fail_over(d: &mut Deployment, cluster: u32) -> Failover {
    let api = d.api();
    for attempt in 1..=KILL_ATTEMPTS_MAX {
        let running = running_servers(d, cluster);
        wait_whole(&api, cluster, &running).await;
        let victim = d.kill9_primary(cluster).await;
        let mark = KillMark::now(cluster, Some(victim));
        match wait_promoted(&api, cluster, victim, mark.at).await {
            Ok(promoted) => {
                return Failover {
                    victim,
                    mark,
                    promoted,
                }
            }
            Err(view) => {
                eprintln!(
                    "kill {attempt} of server {victim} (primary of cluster {cluster}) came while \
                     no secondary was in sync; the cluster waits for it: restarting it\n{view:?}"
                );
                d.restart(Member::Server {
                    cluster,
                    server_id: victim,
                })
                .await;
            }
        }
    }
    panic!(
        "none of {KILL_ATTEMPTS_MAX} kills of the primary of cluster {cluster} found a \
         secondary in sync"
    );
}

/// Waits until `cluster` has a live primary other than `killed` (`Ok`,
/// with the view that shows it), or until it is clear that none can be
/// promoted: [`STUCK_AFTER_MS`] after the kill, `killed` is still the
/// primary and no other server is in the in-sync set (`Err`, with that
/// view). Panics after [`FAILOVER_DEADLINE_MS`].
async fn wait_promoted(
    api: &Api,
    cluster: u32,
    killed: u32,
    killed_at: Instant,
) -> Result<ClusterView, ClusterView> {
    let what = format!("a primary of cluster {cluster} other than the killed server {killed}");
    wait_for(ms(FAILOVER_DEADLINE_MS), &what, move || async move {
        let view = view_of(api, cluster).await?;
        if view.primary_id != 0
            && view.primary_id != killed
            && is_alive_server(&view, view.primary_id)
        {
            return Ok(Ok(view));
        }
        let stuck = killed_at.elapsed() >= ms(STUCK_AFTER_MS)
            && view.primary_id == killed
            && !view.in_sync.iter().any(|&s| s != killed);
        if stuck {
            return Ok(Err(view));
        }
        Err(format!("{view:?}"))
    })
    .await
}

/// Logs every user in, makes every user follow every other one, and waits
/// until every follower list is complete. Returns when each follow was
/// acknowledged.
async fn everyone_follows_everyone(d: &Deployment, users: &[u32]) -> Vec<FollowRecord> {
    let api = d.api();
    d.login_all(users).await;
    let mut follows = Vec::new();
    for &follower in users {
        for &followee in users.iter().filter(|&&u| u != follower) {
            let sent_at = Instant::now();
            match api.follow(follower, &followee.to_string()).await {
                Ok(msg) if msg == "SUCCESS" => follows.push(FollowRecord {
                    follower,
                    followee,
                    sent_at,
                    acked_at: Instant::now(),
                }),
                other => panic!("user {follower} FOLLOW {followee}: {other:?}"),
            }
        }
    }
    for &user in users {
        let others: BTreeSet<String> = users
            .iter()
            .filter(|&&u| u != user)
            .map(u32::to_string)
            .collect();
        d.wait_followers(user, others).await;
    }
    follows
}

/// Stops the writers and checks that none gave up.
async fn stop_load(load: Load) -> LoadReport {
    let report = load.stop().await;
    eprintln!("{}", report.summary());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "clients did not carry on by themselves:\n{}\nretried failures seen: {:?}",
        failures.join("\n"),
        report
            .writers
            .iter()
            .map(|w| &w.error_samples)
            .collect::<Vec<_>>()
    );
    report
}

/// Waits until every timeline holds every post it must, then checks every
/// timeline record by record. Then reads every timeline again with pages
/// of [`SMALL_READ_LIMIT`] lines, so that most lines come from the
/// primaries' files, and expects the very same timelines.
async fn converge_and_check(d: &Deployment, expect: &Expectation) {
    let reader = Reader::new(d.api().coord().clone(), &d.datastore_root());
    match reader
        .wait_converged(expect, ms(CONVERGE_DEADLINE_MS))
        .await
    {
        Ok(report) => {
            assert!(report.is_clean(), "the timelines are wrong:\n{report}");
            eprint!("checked: {report}");
        }
        Err(report) => {
            panic!("the timelines did not converge within {CONVERGE_DEADLINE_MS} ms:\n{report}")
        }
    }
    let whole = reader.timelines(&expect.users).await;
    let paged = reader
        .clone()
        .with_read_limit(SMALL_READ_LIMIT)
        .timelines(&expect.users)
        .await;
    match (whole, paged) {
        (Ok(whole), Ok(paged)) => {
            for (user, lines) in &whole {
                let other = paged.get(user).map(Vec::as_slice).unwrap_or_default();
                let differ =
                    (0..lines.len().max(other.len())).find(|&i| lines.get(i) != other.get(i));
                if let Some(i) = differ {
                    panic!(
                        "user {user}: reading the files gives another timeline than Posts.Read \
                         ({} lines against {}); first difference at line {i}: {:?} against {:?}",
                        other.len(),
                        lines.len(),
                        other.get(i),
                        lines.get(i)
                    );
                }
            }
        }
        (whole, paged) => panic!(
            "reading the timelines again failed: {:?} / {:?}",
            whole.err(),
            paged.err()
        ),
    }
}

/// Waits until every server of `cluster` is in sync, then checks that
/// their journals agree.
async fn check_replicas_agree(d: &Deployment, cluster: u32) {
    let servers = d.server_ids(cluster);
    wait_whole(&d.api(), cluster, &servers).await;
    let named = d.replica_layouts(cluster);
    match journals_agree(&named) {
        Ok(n) => {
            eprintln!("cluster {cluster}: the journals of servers {servers:?} agree on {n} entries")
        }
        Err(e) => panic!("the replicas of cluster {cluster} disagree: {e}"),
    }
}

fn expectation(users: &[u32], follows: Vec<FollowRecord>, report: &LoadReport) -> Expectation {
    Expectation {
        users: users.to_vec(),
        follows,
        posts: report.posts(),
        follow_time: None,
    }
}

/// 1. Under load on three clusters: the primary of cluster 1 is killed,
/// comes back as a secondary, the new primary is killed (fail back) and
/// comes back; then the sync service of cluster 2 and the coordinator are
/// killed and restarted. Nothing acknowledged is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_survives_kills_failback_sync_and_coordinator_restarts() {
    let mut d = Deployment::start_with(config(3, 1)).await;
    bounded(kills_failback_sync_and_coordinator(&mut d)).await;
}

async fn kills_failback_sync_and_coordinator(d: &mut Deployment) {
    let api = d.api();
    let users = [1, 2, 3, 4, 5, 6];
    let follows = everyone_follows_everyone(d, &users).await;
    let load = Load::start(&d.coord_addr(), &users);
    let step = ms(STEP_DEADLINE_MS);
    load.wait_each_acked_more(STEP_POSTS, step).await;

    let mut outages = Vec::new();
    let mut killed = Vec::new();
    for round in ["failover", "fail back"] {
        let Failover { victim, mark, .. } = fail_over(d, 1).await;
        let outage = load.wait_outage(&mark, ms(FAILOVER_DEADLINE_MS)).await;
        outages.push((round, victim, outage));
        killed.push(victim);
        load.wait_each_acked_more(STEP_POSTS, step).await;

        d.restart(Member::Server {
            cluster: 1,
            server_id: victim,
        })
        .await;
        wait_rejoined(&api, 1, victim).await;
        load.wait_each_acked_more(STEP_POSTS, step).await;
    }
    assert_ne!(killed[0], killed[1], "the fail back kills the other server");

    d.kill9(Member::Sync { cluster: 2 });
    d.restart(Member::Sync { cluster: 2 }).await;
    d.wait_healthy().await;
    load.wait_each_acked_more(STEP_POSTS, step).await;

    d.kill9(Member::Coordinator);
    d.restart(Member::Coordinator).await;
    d.wait_healthy().await;
    load.wait_each_acked_more(STEP_POSTS, step).await;

    let report = stop_load(load).await;
    for (round, victim, outage) in &outages {
        eprintln!(
            "{round}: kill -9 of server {victim} (primary of cluster 1): writes resumed after {} ms",
            outage.as_millis()
        );
    }
    converge_and_check(d, &expectation(&users, follows, &report)).await;
    for cluster in 1..=3 {
        check_replicas_agree(d, cluster).await;
    }
}

/// 2. Under load on three clusters, every process is killed at once and
/// restarted; the writers carry on by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_killed_under_load_loses_nothing() {
    let mut d = Deployment::start_with(config(3, 1)).await;
    bounded(every_process_killed(&mut d)).await;
}

async fn every_process_killed(d: &mut Deployment) {
    let users = [1, 2, 3, 4, 5, 6];
    let follows = everyone_follows_everyone(d, &users).await;
    let load = Load::start(&d.coord_addr(), &users);
    let step = ms(STEP_DEADLINE_MS);
    load.wait_each_acked_more(STEP_POSTS, step).await;

    d.kill9_all();
    let marks: Vec<KillMark> = (1..=3).map(|c| KillMark::now(c, None)).collect();
    d.restart_all().await;
    load.wait_each_acked_more(STEP_POSTS, step).await;
    for mark in &marks {
        let outage = load.wait_outage(mark, ms(FAILOVER_DEADLINE_MS)).await;
        eprintln!(
            "cluster {}: writes resumed {} ms after every process was killed",
            mark.cluster,
            outage.as_millis()
        );
    }

    let report = stop_load(load).await;
    converge_and_check(d, &expectation(&users, follows, &report)).await;
    for cluster in 1..=3 {
        check_replicas_agree(d, cluster).await;
    }
}

/// 3. A cluster of three replicas survives the loss of its primary and
/// then of the primary that replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_two_failures_in_a_row() {
    let mut d = Deployment::start_with(config(1, 2)).await;
    bounded(two_failures_in_a_row(&mut d)).await;
}

async fn two_failures_in_a_row(d: &mut Deployment) {
    let api = d.api();
    let users = [1];
    d.login_all(&users).await;
    let all = d.server_ids(1);
    assert_eq!(all.len(), 3);
    wait_whole(&api, 1, &all).await;
    let load = Load::start(&d.coord_addr(), &users);
    let step = ms(STEP_DEADLINE_MS);
    load.wait_each_acked_more(STEP_POSTS, step).await;

    let failover = fail_over(d, 1).await;
    let (first, second) = (failover.victim, failover.promoted.primary_id);
    let Some(&remaining) = all.iter().find(|&&s| s != first && s != second) else {
        panic!("no third server besides {first} and {second} in {all:?}");
    };
    let what = format!(
        "server {remaining} to be in the in-sync set of server {second}'s epoch {}",
        failover.promoted.epoch
    );
    wait_for(ms(REJOIN_DEADLINE_MS), &what, || async {
        let view = view_of(&api, 1).await?;
        if view.primary_id == second && view.in_sync.contains(&remaining) {
            Ok(())
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await;
    let outage1 = load
        .wait_outage(&failover.mark, ms(FAILOVER_DEADLINE_MS))
        .await;
    load.wait_each_acked_more(STEP_POSTS, step).await;

    let failover = fail_over(d, 1).await;
    assert_eq!(
        failover.victim, second,
        "the second kill hits the promoted server"
    );
    assert_eq!(
        failover.promoted.primary_id, remaining,
        "the last replica takes over"
    );
    let outage2 = load
        .wait_outage(&failover.mark, ms(FAILOVER_DEADLINE_MS))
        .await;
    load.wait_each_acked_more(STEP_POSTS, step).await;
    eprintln!(
        "two failures in a row: writes resumed after {} ms, then after {} ms",
        outage1.as_millis(),
        outage2.as_millis()
    );

    let report = stop_load(load).await;
    converge_and_check(d, &expectation(&users, Vec::new(), &report)).await;
    // Both killed servers come back, cut what they held beyond the
    // survivor's history, and catch up: then all three journals agree.
    for server_id in [first, second] {
        d.restart(Member::Server {
            cluster: 1,
            server_id,
        })
        .await;
    }
    check_replicas_agree(d, 1).await;
}

/// 4. Ten failovers under load, each measured from the kill to the first
/// post acknowledged by the new primary. Only behaviour is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failovers_are_measured() {
    let mut d = Deployment::start_with(config(1, 1)).await;
    bounded(ten_failovers(&mut d)).await;
}

async fn ten_failovers(d: &mut Deployment) {
    let api = d.api();
    let users = [1];
    d.login_all(&users).await;
    let all = d.server_ids(1);
    wait_whole(&api, 1, &all).await;
    let load = Load::start(&d.coord_addr(), &users);
    load.wait_each_acked_more(STEP_POSTS, ms(STEP_DEADLINE_MS))
        .await;

    let mut outages_ms = Vec::with_capacity(MEASURED_FAILOVERS);
    for _ in 0..MEASURED_FAILOVERS {
        let Failover { victim, mark, .. } = fail_over(d, 1).await;
        let outage = load.wait_outage(&mark, ms(FAILOVER_DEADLINE_MS)).await;
        outages_ms.push(outage.as_millis());
        d.restart(Member::Server {
            cluster: 1,
            server_id: victim,
        })
        .await;
        wait_rejoined(&api, 1, victim).await;
    }
    assert_eq!(outages_ms.len(), MEASURED_FAILOVERS);
    let mut sorted = outages_ms.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let median = (sorted[(n - 1) / 2] + sorted[n / 2]) / 2;
    let max = sorted[n - 1];
    let heartbeat_ms = d
        .config()
        .heartbeat_interval_ms
        .unwrap_or(tsn_cluster::limits::HEARTBEAT_INTERVAL_MS);
    eprintln!("failover outages (ms): {outages_ms:?}");
    eprintln!(
        "failover outage over {n} failovers: median {median} ms, max {max} ms (failure_timeout_ms={FAILURE_TIMEOUT_MS}, heartbeat_interval_ms={heartbeat_ms})"
    );

    let report = stop_load(load).await;
    converge_and_check(d, &expectation(&users, Vec::new(), &report)).await;
    check_replicas_agree(d, 1).await;
}
