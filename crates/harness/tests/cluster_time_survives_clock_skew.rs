//! Who receives a post is decided by comparing the follow's `since_ms`
//! with the post's `ts_ms`, given by two clusters. Here the machines'
//! clocks disagree, through libfaketime: cluster 2's servers and sync
//! service run 30 s ahead and then step to 20 s behind in the middle of
//! the run, and cluster 1's secondary runs 30 s behind and is promoted.
//! Every follower still gets exactly the posts made after its follow was
//! acknowledged and none acknowledged before it was sent (checked record
//! by record), because every deciding timestamp is cluster time, estimated
//! from the coordinator's clock, not the machine's.
//!
//! Follows here happen while the authors post, which no other test does:
//! the posts between a cross-cluster follow and the moment its follower
//! edge reaches the author's cluster arrive by backfill, after the posts
//! delivered live since, so they can stand out of their author's order in
//! the follower's timeline. That is the sync service's delivery order, not
//! a clock's doing: this test prints such lines and asserts every other
//! rule of the checker.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use tsn_cluster::clock::{CLOCK_SAMPLE_MAX_AGE_MS, MAX_CLOCK_OFFSET_MS};
use tsn_harness::direct::{post_request, posts_client};
use tsn_harness::fault_check::{Expectation, FollowRecord, Reader};
use tsn_harness::load::Load;
use tsn_harness::views::Failover;
use tsn_harness::{wait_for, Api, Config, Deployment, Member};

use common::{
    await_failover, ms, ready_for_failover, CONVERGE_DEADLINE_MS, FAILURE_TIMEOUT_MS, Q_MS,
};

/// Where Debian puts libfaketime (the thread-safe variant).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Cluster 2's clocks at the start, and after the step.
const CLUSTER_2_AHEAD: &str = "+30s";
const CLUSTER_2_STEPPED: &str = "-20s";
/// Cluster 1's secondary, promoted in the middle of the run.
const CLUSTER_1_SECONDARY_BEHIND: &str = "-30s";
/// How often libfaketime re-reads cluster 2's offset file, in seconds.
const FAKETIME_CACHE_S: &str = "1";
/// How long the authors go on posting after the step, so that every
/// faked process has re-read the offset file (its cache lasts 1 s).
const AFTER_STEP_MS: u64 = 2_000;
/// How far off the probe's clock may be from the offset asked for, in
/// seconds (the probe and this test read the clock a moment apart).
const PROBE_SLACK_S: i64 = 5;
/// Posts every author makes between two steps of the scenario.
const STEP_POSTS: u64 = 8;
/// How long every author has to make them.
const STEP_DEADLINE_MS: u64 = 20_000;

/// Authors: 1 on cluster 1, 2 on cluster 2. Followers: 3 and 5 on cluster
/// 1, 4 and 6 on cluster 2; each follows both authors, 3 and 4 early, 5
/// and 6 after the step and the failover.
const USERS: [u32; 6] = [1, 2, 3, 4, 5, 6];
const EARLY_FOLLOWS: [(u32, u32); 4] = [(3, 2), (4, 1), (3, 1), (4, 2)];
const LATE_FOLLOWS: [(u32, u32); 4] = [(5, 2), (6, 1), (5, 1), (6, 2)];

fn faked(config: &mut Config, member: Member, vars: &[(&str, &str)]) {
    let mut all = vec![
        ("LD_PRELOAD", FAKETIME_LIB),
        // A wall-clock step does not move the monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    all.extend_from_slice(vars);
    for (k, v) in all {
        config.env.push((member, k.to_string(), v.to_string()));
    }
}

/// Whether libfaketime moves a program's clock on this machine: `date`
/// run under it with `FAKETIME=+30s` must read 30 s ahead.
fn faketime_works() -> Result<(), String> {
    let out = std::process::Command::new("/usr/bin/env")
        .args([
            &format!("LD_PRELOAD={FAKETIME_LIB}"),
            "FAKETIME=+30s",
            "date",
            "+%s",
        ])
        .output()
        .map_err(|e| format!("cannot run date under libfaketime: {e}"))?;
    let faked: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("date under libfaketime printed no time: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    if (faked - now - 30).abs() > PROBE_SLACK_S {
        return Err(format!(
            "date under libfaketime read {faked}, now is {now}: no effect"
        ));
    }
    Ok(())
}

fn set_offset(file: &Path, offset: &str) {
    if let Err(e) = std::fs::write(file, format!("{offset}\n")) {
        panic!("cannot write {}: {e}", file.display());
    }
}

/// Each follow in turn, retried through failovers by the client library;
/// records when it was sent and acknowledged.
async fn follow_all(api: &Api, pairs: &[(u32, u32)]) -> Vec<FollowRecord> {
    let mut out = Vec::new();
    for &(follower, followee) in pairs {
        let sent_at = Instant::now();
        match api.follow(follower, &followee.to_string()).await {
            Ok(msg) if msg == "SUCCESS" => out.push(FollowRecord {
                follower,
                followee,
                sent_at,
                acked_at: Instant::now(),
            }),
            other => panic!("user {follower} FOLLOW {followee}: {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_exactly_the_posts_after_their_follow_whatever_the_clocks() {
    if !PathBuf::from(FAKETIME_LIB).exists() {
        eprintln!("skipped: no libfaketime at {FAKETIME_LIB} (apt-get install libfaketime)");
        return;
    }
    if let Err(why) = faketime_works() {
        eprintln!("skipped: {why}");
        return;
    }
    let clocks = tempfile::tempdir().expect("a temp dir");
    let cluster_2_offset = clocks.path().join("cluster-2.faketime");
    set_offset(&cluster_2_offset, CLUSTER_2_AHEAD);
    let offset_file = cluster_2_offset.display().to_string();

    let mut config = Config::new(2, 1, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    for member in [
        Member::Server {
            cluster: 2,
            server_id: 1,
        },
        Member::Server {
            cluster: 2,
            server_id: 2,
        },
        Member::Sync { cluster: 2 },
    ] {
        faked(
            &mut config,
            member,
            &[
                ("FAKETIME_TIMESTAMP_FILE", &offset_file),
                ("FAKETIME_CACHE_DURATION", FAKETIME_CACHE_S),
            ],
        );
    }
    faked(
        &mut config,
        Member::Server {
            cluster: 1,
            server_id: 2,
        },
        &[("FAKETIME", CLUSTER_1_SECONDARY_BEHIND)],
    );
    let mut d = Deployment::start_with(config).await;
    let api = d.api();
    d.login_all(&USERS).await;
    let (old, _, epoch) = ready_for_failover(&d, 1).await;

    let load = Load::start(&d.coord_addr(), &[1, 2]);
    let step = ms(STEP_DEADLINE_MS);
    load.wait_each_acked_more(STEP_POSTS, step).await;
    let mut follows = follow_all(&api, &EARLY_FOLLOWS).await;
    load.wait_each_acked_more(STEP_POSTS, step).await;

    // Cluster 2's machines step 50 s back; cluster 1 fails over to the
    // machine 30 s behind.
    set_offset(&cluster_2_offset, CLUSTER_2_STEPPED);
    d.kill9(Member::Server {
        cluster: 1,
        server_id: old,
    });
    match await_failover(&api, 1, old, epoch).await {
        Failover::Promoted(s) => eprintln!("cluster 1 failed over to server {s}"),
        Failover::NoCandidate => {
            eprintln!("no in-sync secondary at the kill: the old primary comes back instead");
            d.restart(Member::Server {
                cluster: 1,
                server_id: old,
            })
            .await;
        }
    }
    // Every faked process has read the new offset by now.
    let stepped_at = Instant::now();
    while stepped_at.elapsed() < ms(AFTER_STEP_MS) {
        load.wait_each_acked_more(1, step).await;
    }
    follows.extend(follow_all(&api, &LATE_FOLLOWS).await);
    load.wait_each_acked_more(STEP_POSTS, step).await;

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert!(
        report.failures().is_empty(),
        "writers failed: {:?}",
        report.failures()
    );
    let expect = Expectation {
        users: USERS.to_vec(),
        follows,
        posts: report.posts(),
        // Each cluster's time is within its bound of the coordinator's.
        follow_time: Some(ms(2 * MAX_CLOCK_OFFSET_MS)),
    };
    let reader = Reader::new(api.coord().clone(), &d.datastore_root());
    let r = reader
        .assert_clean(&expect, ms(CONVERGE_DEADLINE_MS), || d.log_tails())
        .await;
    assert!(r.placements > 0, "nothing was checked: {r}");
    eprint!("checked: {r}");
}

/// How long past [`CLOCK_SAMPLE_MAX_AGE_MS`] a primary may still take a
/// write on a loaded machine before the test calls it a failure.
const UNKNOWN_TIME_SLACK_MS: u64 = 20_000;
/// How long before the kill the primary's last heartbeat reply may have
/// arrived (its time becomes unknown that long before the full age).
const LAST_REPLY_BEFORE_KILL_MS: u64 = 500;

/// With the coordinator gone, a primary whose in-sync secondary still
/// confirms its lease keeps acknowledging — until its cluster time is
/// unknown (no heartbeat answered for [`CLOCK_SAMPLE_MAX_AGE_MS`]); then it
/// refuses writes, saying why, and takes them again once the coordinator
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_cannot_tell_the_time_stops_acknowledging() {
    let mut config = Config::new(1, 1, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    let mut d = Deployment::start_with(config).await;
    d.login_all(&[1]).await;
    let (_, primary_addr, _) = ready_for_failover(&d, 1).await;
    let mut posts = posts_client(&primary_addr);
    let mut n = 0u32;
    let mut post = move || {
        n += 1;
        post_request(1, &format!("1-t{n}"), &format!("t{n}"))
    };
    posts
        .post(post())
        .await
        .expect("a post before the coordinator stops");

    d.kill9(Member::Coordinator);
    let killed_at = Instant::now();
    let refused = wait_for(
        ms(CLOCK_SAMPLE_MAX_AGE_MS + UNKNOWN_TIME_SLACK_MS),
        "the primary to refuse a write for want of the cluster time",
        || {
            let mut posts = posts.clone();
            let req = post();
            async move {
                match posts.post(req).await {
                    Err(s) if s.message().contains("cluster time") => Ok(s),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let after = killed_at.elapsed();
    eprintln!(
        "refused {after:?} after the coordinator stopped: {}",
        refused.message()
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        after >= ms(CLOCK_SAMPLE_MAX_AGE_MS - LAST_REPLY_BEFORE_KILL_MS),
        "refused after {after:?}: the secondaries' confirmations should have kept it going"
    );

    d.restart(Member::Coordinator).await;
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        "the primary to take writes again",
        || {
            let mut posts = posts.clone();
            let req = post();
            async move { posts.post(req).await.map(drop).map_err(|s| s.to_string()) }
        },
    )
    .await;
}
