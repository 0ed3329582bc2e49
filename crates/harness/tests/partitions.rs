//! Partitions in real network namespaces: every process of the deployment
//! and the test's client on a host of its own ([`tsn_harness::netns`]),
//! links cut and healed by the nemesis while authors post, processes
//! paused with SIGSTOP. After each scenario every timeline is checked
//! record by record: every acknowledged post once, in order, in every
//! follower's timeline.
//!
//! Needs root (namespaces, iptables): skips, saying why, without it.
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tsn_harness::fault_check::{journals_agree, Expectation, FollowRecord, Reader};
use tsn_harness::load::{Load, LoadReport};
use tsn_harness::netns::{self, member_host, Network, CLIENT_HOST};
use tsn_harness::views::Failover;
use tsn_harness::{wait_for, Config, Deployment, Member};

use common::{
    await_failover, epochs, ms, ready_for_failover, wait_in_sync, CONVERGE_DEADLINE_MS,
    FAILURE_TIMEOUT_MS, Q_MS,
};

/// Posts each author makes between two steps of a scenario.
const STEP_POSTS: u64 = 5;
/// How long every author has to make them.
const STEP_DEADLINE_MS: u64 = 20_000;
/// How long a cut or a pause lasts: past the failure timeout and the
/// mirror time limit (1 s), so that what they trigger happens.
const FAULT_MS: u64 = 1_500;

/// A network for the deployment and the client, or why not.
fn network(clusters: u32, secondaries: u32) -> Option<Arc<Network>> {
    if let Some(why) = netns::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    match Network::for_deployment(clusters, secondaries) {
        Ok(n) => Some(Arc::new(n)),
        Err(e) => panic!("cannot build the test network: {e:#}"),
    }
}

async fn start(net: &Arc<Network>, clusters: u32, secondaries: u32) -> Deployment {
    let mut config = Config::new(clusters, secondaries, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    config.network = Some(net.clone());
    Deployment::start_with(config).await
}

fn server(cluster: u32, server_id: u32) -> String {
    member_host(Member::Server { cluster, server_id })
}

fn sync(cluster: u32) -> String {
    member_host(Member::Sync { cluster })
}

/// Every process of `cluster` (its servers and its sync service).
fn cluster_hosts(d: &Deployment, cluster: u32) -> Vec<String> {
    let mut hosts: Vec<String> = d
        .server_ids(cluster)
        .into_iter()
        .map(|s| server(cluster, s))
        .collect();
    hosts.push(sync(cluster));
    hosts
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Logs `users` in and makes each follow every other; records the follows.
async fn everyone_follows_everyone(d: &Deployment, users: &[u32]) -> Vec<FollowRecord> {
    d.login_all(users).await;
    let mut follows = Vec::new();
    for &follower in users {
        for &followee in users.iter().filter(|&&u| u != follower) {
            let sent_at = Instant::now();
            d.follow_and_wait(follower, followee).await;
            follows.push(FollowRecord {
                follower,
                followee,
                sent_at,
                acked_at: Instant::now(),
            });
        }
    }
    follows
}

/// Lets every author go on posting for at least `how_long` (each waits
/// for its own posts, within the step's deadline).
async fn keep_posting(load: &Load, how_long: Duration) {
    let since = Instant::now();
    while since.elapsed() < how_long {
        load.wait_each_acked_more(1, ms(STEP_DEADLINE_MS)).await;
    }
}

/// Stops the load and holds every timeline to what the writers were told.
async fn stop_and_check(d: &Deployment, users: &[u32], follows: Vec<FollowRecord>, load: Load) {
    let report: LoadReport = load.stop().await;
    eprintln!("{}", report.summary());
    assert!(
        report.failures().is_empty(),
        "writers failed: {:?}",
        report.failures()
    );
    let expect = Expectation {
        users: users.to_vec(),
        follows,
        posts: report.posts(),
        follow_time: None,
    };
    let reader = Reader::new(d.api().coord().clone(), &d.datastore_root());
    let r = reader
        .assert_clean(&expect, ms(CONVERGE_DEADLINE_MS), || d.log_tails())
        .await;
    eprint!("checked: {r}");
}

/// Waits until every server of `cluster` has the same journal, and
/// compares them.
async fn journals_of_cluster_agree(d: &Deployment, cluster: u32) {
    let servers = d.server_ids(cluster);
    let (primary, _) = d.primary_of(cluster).await;
    for &s in &servers {
        if s != primary {
            wait_in_sync(d, cluster, s).await;
        }
    }
    let want = d.journal_lines(cluster, primary);
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "every replica to hold the primary's journal",
        || async {
            let lens: Vec<usize> = servers
                .iter()
                .map(|&s| d.journal_lines(cluster, s))
                .collect();
            if lens.iter().all(|&n| n >= want) {
                Ok(())
            } else {
                Err(format!("{lens:?}, want {want}"))
            }
        },
    )
    .await;
    let named = d.replica_layouts(cluster);
    match journals_agree(&named) {
        Ok(n) => eprintln!("cluster {cluster}: the journals of {servers:?} agree on {n} entries"),
        Err(e) => panic!("the replicas of cluster {cluster} disagree: {e}"),
    }
}

/// (1) Cluster 1 and cluster 2 cannot reach each other for a while: each
/// keeps serving its own users, and once the link heals every post of
/// the other cluster arrives, none lost or twice.
#[test]
fn a_cut_between_clusters_delays_deliveries_and_loses_nothing() {
    let Some(net) = network(2, 0) else { return };
    let n = net.clone();
    net.run_in(CLIENT_HOST, || async move {
        let d = start(&n, 2, 0).await;
        let users = [1, 2];
        let follows = everyone_follows_everyone(&d, &users).await;
        let load = Load::start(&d.coord_addr(), &users);
        let step = ms(STEP_DEADLINE_MS);
        load.wait_each_acked_more(STEP_POSTS, step).await;

        let (c1, c2) = (cluster_hosts(&d, 1), cluster_hosts(&d, 2));
        n.cut(&strs(&c1), &strs(&c2)).expect("cut");
        // Each cluster keeps acknowledging its own users' posts.
        let before = load.acked();
        keep_posting(&load, ms(FAULT_MS)).await;
        eprintln!(
            "acknowledged while the clusters were apart: {:?} -> {:?}",
            before,
            load.acked()
        );
        n.heal_all().expect("heal");
        load.wait_each_acked_more(STEP_POSTS, step).await;
        stop_and_check(&d, &users, follows, load).await;
    });
}

/// (2) The primary and its secondary cannot reach each other (both ways,
/// then only the secondary's answers lost): the primary drops the
/// secondary from the in-sync set and goes on; the secondary catches up
/// after the heal; then the primary is killed and the secondary takes
/// over with every acknowledged post.
#[test]
fn primary_secondary_cuts_lose_no_acknowledged_post() {
    let Some(net) = network(1, 1) else { return };
    let n = net.clone();
    net.run_in(CLIENT_HOST, || async move {
        let mut d = start(&n, 1, 1).await;
        let users = [1, 2];
        let follows = everyone_follows_everyone(&d, &users).await;
        let (primary, _, _) = ready_for_failover(&d, 1).await;
        let secondary = d
            .server_ids(1)
            .into_iter()
            .find(|&s| s != primary)
            .expect("a secondary");
        let (p, s) = (server(1, primary), server(1, secondary));
        let load = Load::start(&d.coord_addr(), &users);
        let step = ms(STEP_DEADLINE_MS);
        load.wait_each_acked_more(STEP_POSTS, step).await;

        n.cut(&[&p], &[&s]).expect("cut");
        load.wait_each_acked_more(STEP_POSTS, step).await;
        n.heal_all().expect("heal");
        wait_in_sync(&d, 1, secondary).await;
        load.wait_each_acked_more(STEP_POSTS, step).await;

        // The secondary's packets to the primary are lost: its
        // acknowledgements never arrive.
        n.cut_one_way(&s, &p).expect("one-way cut");
        load.wait_each_acked_more(STEP_POSTS, step).await;
        n.heal_all().expect("heal");
        let (primary_now, _, epoch) = ready_for_failover(&d, 1).await;
        load.wait_each_acked_more(STEP_POSTS, step).await;

        d.kill9(Member::Server {
            cluster: 1,
            server_id: primary_now,
        });
        match await_failover(&d.api(), 1, primary_now, epoch).await {
            Failover::Promoted(id) => eprintln!("server {id} took over"),
            Failover::NoCandidate => panic!("no in-sync secondary after the heal"),
        }
        load.wait_each_acked_more(STEP_POSTS, step).await;
        stop_and_check(&d, &users, follows, load).await;
    });
}

/// (3) SIGSTOP: a primary paused past the failure timeout is replaced and,
/// resumed, refuses to act as primary; a paused sync service only delays
/// deliveries. Nothing acknowledged is lost.
#[test]
fn paused_server_and_sync_service_lose_nothing() {
    let Some(net) = network(2, 1) else { return };
    let n = net.clone();
    net.run_in(CLIENT_HOST, || async move {
        let mut d = start(&n, 2, 1).await;
        let users = [1, 2];
        let follows = everyone_follows_everyone(&d, &users).await;
        let (primary, _, epoch) = ready_for_failover(&d, 1).await;
        let load = Load::start(&d.coord_addr(), &users);
        let step = ms(STEP_DEADLINE_MS);
        load.wait_each_acked_more(STEP_POSTS, step).await;

        let frozen = Member::Server {
            cluster: 1,
            server_id: primary,
        };
        d.member(frozen).pause();
        let outcome = await_failover(&d.api(), 1, primary, epoch).await;
        load.wait_each_acked_more(STEP_POSTS, step).await;
        d.member(frozen).resume();
        eprintln!("after the pause: {outcome:?}");
        load.wait_each_acked_more(STEP_POSTS, step).await;

        let sync2 = Member::Sync { cluster: 2 };
        d.member(sync2).pause();
        keep_posting(&load, ms(FAULT_MS)).await;
        d.member(sync2).resume();
        load.wait_each_acked_more(STEP_POSTS, step).await;
        stop_and_check(&d, &users, follows, load).await;
        journals_of_cluster_agree(&d, 1).await;
    });
}

/// (4) The primary is cut off from the coordinator (both ways) but its
/// clients and its secondary still reach it. Its lease runs out (its
/// secondary hears the coordinator, so it does not confirm the lease) and
/// it stops acknowledging before the promotion is seen; the coordinator
/// promotes the secondary; on heal the old primary rejoins as a
/// secondary, having lost nothing acknowledged, and the replicas'
/// journals agree.
#[test]
fn a_primary_cut_from_the_coordinator_steps_down_and_rejoins() {
    let Some(net) = network(1, 1) else { return };
    let n = net.clone();
    net.run_in(CLIENT_HOST, || async move {
        let d = start(&n, 1, 1).await;
        let users = [1, 2];
        let follows = everyone_follows_everyone(&d, &users).await;
        let (old, _, epoch) = ready_for_failover(&d, 1).await;
        let load = Load::start(&d.coord_addr(), &users);
        let step = ms(STEP_DEADLINE_MS);
        load.wait_each_acked_more(STEP_POSTS, step).await;

        let coordinator = member_host(Member::Coordinator);
        n.cut(&[&server(1, old)], &[&coordinator]).expect("cut");
        let cut_at = Instant::now();
        let outcome = await_failover(&d.api(), 1, old, epoch).await;
        let promoted_seen_at = Instant::now();
        assert!(
            matches!(outcome, Failover::Promoted(_)),
            "no promotion: {outcome:?}"
        );
        load.wait_each_acked_more(STEP_POSTS, step).await;
        // The last post the old primary acknowledged after the cut.
        let last_old_ack = load
            .posts()
            .iter()
            .filter_map(|p| p.acked.as_ref())
            .filter(|a| a.server_id == old && a.at > cut_at)
            .map(|a| a.at)
            .max();
        eprintln!(
            "promotion seen {:?} after the cut; old primary's last acknowledgement after the cut: {:?}",
            promoted_seen_at - cut_at,
            last_old_ack.map(|t| t - cut_at)
        );
        assert!(
            last_old_ack.is_none_or(|t| t < promoted_seen_at),
            "the old primary acknowledged a post after the promotion was seen"
        );
        n.heal_all().expect("heal");
        // It rejoins as an in-sync secondary of the new epoch.
        wait_in_sync(&d, 1, old).await;
        assert!(epochs(&d.api()).await[&1] > epoch);
        load.wait_each_acked_more(STEP_POSTS, step).await;
        stop_and_check(&d, &users, follows, load).await;
        journals_of_cluster_agree(&d, 1).await;
    });
}

/// The network's own promise: namespaces are gone once it is dropped.
#[test]
fn a_network_leaves_no_namespace_behind() {
    let Some(net) = network(1, 0) else { return };
    let names: Vec<String> = net.hosts().iter().map(|h| h.ns.clone()).collect();
    let a = net.hosts()[0].name.clone();
    let b = net.hosts()[1].name.clone();
    net.cut_one_way(&a, &b).expect("cut");
    assert_eq!(net.cuts(), vec![(a, b)]);
    drop(net);
    let left = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| names.contains(n))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
