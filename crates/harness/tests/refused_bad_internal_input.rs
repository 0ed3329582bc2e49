//! A compromised peer that holds the cluster secret still cannot break a
//! deployment: each attack below is sent, with the secret, from a raw
//! tonic client against a deployment of two clusters (a primary and a
//! secondary each) while every user posts. Each bad call is refused with a
//! clear error and changes nothing; afterwards every acknowledged post is
//! present once and the replicas' journals are identical
//! ([`tsn_harness::attack::under_load`]).
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use tonic::{Code, Status};
use tsn_cluster::auth::AuthChannel;
use tsn_harness::attack::{addresses, cluster_views, files_holding, under_load};
use tsn_harness::fault_check::FollowRecord;
use tsn_harness::views::Failover;
use tsn_harness::{Deployment, Member};
use tsn_proto::tsn::coordinator_client::CoordinatorClient;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::sync_client::SyncClient;
use tsn_proto::tsn::*;

use common::{
    await_failover, ms, post, ready_for_failover, start, wait_all_in_sync, CONVERGE_DEADLINE_MS,
    FAILOVER_ATTEMPTS_MAX,
};

/// The writers, one per user: users 1 and 3 on cluster 1, 2 and 4 on 2.
const USERS: [u32; 4] = [1, 2, 3, 4];
/// Posts each writer gets acknowledged before and after the attack.
const ACKED_AROUND_ATTACK: u64 = 5;
/// Text no process may ever store: the attacker's.
const MARKER: &str = "tsn-insider-was-here";
/// Time limit of one attacking call.
const CALL_TIMEOUT_MS: u64 = 5_000;
/// How long the attacker keeps asking for new users.
const ASSIGN_ATTACK_MS: u64 = 3_000;
/// Ids per `Assign` call of the attacker.
const ASSIGN_IDS_PER_CALL: u32 = 10_000;
/// 2^53: the largest epoch the coordinator stores at all.
const EPOCH_2_53: u64 = 1 << 53;
/// 2100-01-01T00:00:00Z, far in the future of every clock.
const FUTURE_TS_MS: i64 = 4_102_444_800_000;

/// A channel to `addr` that carries the deployment's secret.
fn insider(d: &Deployment, addr: &str) -> AuthChannel {
    match d.auth().channel(addr, CALL_TIMEOUT_MS) {
        Ok(c) => c,
        Err(e) => panic!("{addr}: {e:#}"),
    }
}

/// Asserts that `result` is refused with `code`, and that its message
/// says why (holds `why`).
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    code: Code,
    why: &str,
    result: Result<T, Status>,
) {
    match result {
        Err(s) if s.code() == code => {
            assert!(
                s.message().contains(why),
                "{what}: an unclear refusal (expected {why:?}): {s:?}"
            );
        }
        other => panic!("{what}: not refused with {code:?}: {other:?}"),
    }
}

/// A deployment with every user logged in and every secondary in sync.
async fn ready() -> Deployment {
    let d = start(2, 1).await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;
    d
}

/// Kills the primary of `cluster` with SIGKILL until a secondary is
/// promoted in its place, then restarts the killed server so that it
/// rejoins (and its journal can be compared).
async fn fail_over(mut d: Deployment, cluster: u32) -> Deployment {
    let api = d.api();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (old, _, epoch_before) = ready_for_failover(&d, cluster).await;
        let member = Member::Server {
            cluster,
            server_id: old,
        };
        d.kill9(member);
        let outcome = await_failover(&api, cluster, old, epoch_before).await;
        d.restart(member).await;
        match outcome {
            Failover::Promoted(_) => break,
            Failover::NoCandidate => {
                assert!(
                    attempt < FAILOVER_ATTEMPTS_MAX,
                    "{attempt} times no secondary of cluster {cluster} was in sync when its primary died"
                );
                eprintln!("no secondary was in sync when the primary died; once more");
            }
        }
    }
    wait_all_in_sync(&d).await;
    d
}

fn op(op: operation::Op) -> Operation {
    Operation { op: Some(op) }
}

fn deliver(to: Vec<u32>, author: u32, text: String, ts_ms: i64) -> Operation {
    op(operation::Op::Deliver(DeliverOp {
        to,
        post: Some(PostRecord {
            id: format!("{author}-insider"),
            author,
            text,
            ts_ms,
        }),
    }))
}

/// Sends `apply` to cluster 1 both ways an op enters it from another
/// cluster: through its sync service and straight to its primary.
async fn apply_both_ways(d: &Deployment, what: &str, why: &str, apply: ApplyRequest) {
    let (primary, _, sync) = addresses(d, 1).await;
    let mut sync = SyncClient::new(insider(d, &sync));
    assert_refused(
        &format!("Sync.Apply of {what}"),
        Code::InvalidArgument,
        why,
        sync.apply(apply.clone()).await,
    );
    let mut replica = ReplicaClient::new(insider(d, &primary));
    assert_refused(
        &format!("Replica.Apply of {what}"),
        Code::InvalidArgument,
        why,
        replica.apply(apply).await,
    );
}

async fn in_sync_sets(d: &Deployment) -> Vec<(u32, Vec<u32>)> {
    cluster_views(d)
        .await
        .into_iter()
        .map(|v| (v.cluster_id, v.in_sync))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_claiming_epoch_2_53_changes_nothing_and_failover_still_works() {
    let d = ready().await;
    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let views = cluster_views(&d).await;
            let mut coord = CoordinatorClient::new(insider(&d, &d.coord_addr()));
            for v in &views {
                // As a new server, and as each real one at its own address.
                let mut claims = vec![(77, "127.0.0.1:1".to_string())];
                claims.extend(
                    v.processes
                        .iter()
                        .filter(|p| p.kind == ProcessKind::Server as i32)
                        .map(|p| (p.server_id, p.address.clone())),
                );
                for (server_id, address) in claims {
                    let beat = HeartbeatRequest {
                        cluster_id: v.cluster_id,
                        server_id,
                        kind: ProcessKind::Server as i32,
                        address,
                        requested_role: Role::Primary as i32,
                        epoch: EPOCH_2_53,
                        last_seq: 1,
                        last_epoch: EPOCH_2_53,
                        mp3_address: String::new(),
                        clock_unbounded: false,
                    };
                    assert_refused(
                        &format!(
                            "Heartbeat as server {server_id} of cluster {}",
                            v.cluster_id
                        ),
                        Code::InvalidArgument,
                        "epoch",
                        coord.heartbeat(beat).await,
                    );
                }
            }
            let after = cluster_views(&d).await;
            for (b, a) in views.iter().zip(&after) {
                assert_eq!(
                    (b.epoch, b.primary_id),
                    (a.epoch, a.primary_id),
                    "cluster {} changed",
                    b.cluster_id
                );
            }
            // The coordinator still decides: a dead primary is replaced.
            fail_over(d, 1).await
        },
    )
    .await;
    assert!(
        cluster_views(&d)
            .await
            .iter()
            .all(|v| v.epoch < EPOCH_2_53 / 2),
        "an epoch was believed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_ten_thousand_users_per_call_is_limited_and_real_users_still_log_in() {
    let d = ready().await;
    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let mut coord = CoordinatorClient::new(insider(&d, &d.coord_addr()));
            let began = Instant::now();
            let (mut granted, mut limited) = (0u64, 0u64);
            let mut next = 1_000_000u32;
            while began.elapsed() < ms(ASSIGN_ATTACK_MS) {
                let users: Vec<u32> = (next..next + ASSIGN_IDS_PER_CALL).collect();
                next += ASSIGN_IDS_PER_CALL;
                match coord.assign(AssignRequest { users }).await {
                    Ok(_) => granted += u64::from(ASSIGN_IDS_PER_CALL),
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        assert!(s.message().contains("per second"), "unclear: {s:?}");
                        limited += 1;
                    }
                    Err(s) => panic!("Assign: {s:?}"),
                }
            }
            let elapsed_s = began.elapsed().as_secs_f64();
            assert!(limited > 0, "never limited; {granted} users granted");
            // The burst, what the rate refills meanwhile, and one call.
            let bound = 20_000.0 + 200.0 * elapsed_s + f64::from(ASSIGN_IDS_PER_CALL);
            assert!(
                (granted as f64) <= bound,
                "{granted} users granted in {elapsed_s} s"
            );
            // One call of more than the per-call limit is refused outright.
            let users: Vec<u32> = (1..=10_001).map(|i| 2_000_000 + i).collect();
            assert_refused(
                "Assign of 10,001 users",
                Code::InvalidArgument,
                "per call",
                coord.assign(AssignRequest { users }).await,
            );
            // A new real user still logs in, and is seen by the others.
            d.login_all(&[5, 1]).await;
            d
        },
    )
    .await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_operations_from_another_cluster_are_refused_and_change_nothing() {
    let d = ready().await;
    // A real cross-cluster follow, which must keep working.
    let sent_at = Instant::now();
    d.follow_and_wait(1, 2).await;
    let follows = [FollowRecord {
        follower: 1,
        followee: 2,
        sent_at,
        acked_at: Instant::now(),
    }];
    let (d, _) = under_load(
        d,
        &USERS,
        &follows,
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let attacks: Vec<(&str, &str, Operation)> = vec![
                (
                    "a delivery of a post by a user who is not cluster 2's",
                    "is not a user of cluster 2",
                    deliver(vec![1, 3], 99_997, MARKER.into(), 1),
                ),
                (
                    "a delivery of a post from the future",
                    "after this cluster's clock",
                    deliver(vec![1, 3], 2, MARKER.into(), FUTURE_TS_MS),
                ),
                (
                    "a follower removal of version 2^64-1",
                    "version",
                    op(operation::Op::RemoveFollower(RemoveFollowerOp {
                        user: 1,
                        follower: 2,
                        version: u64::MAX,
                    })),
                ),
                (
                    "user 99999 of cluster 777",
                    "cluster 777",
                    op(operation::Op::User(UserOp {
                        user: 99_999,
                        cluster: 777,
                    })),
                ),
            ];
            for (what, why, op) in attacks {
                let apply = ApplyRequest {
                    from_cluster: 2,
                    ops: vec![op],
                };
                apply_both_ways(&d, what, why, apply).await;
            }
            d
        },
    )
    .await;
    for user in USERS {
        match d.api().list(user).await {
            Ok(l) => assert!(
                !l.all_users.contains("99999"),
                "user {user}'s LIST shows user 99999: {:?}",
                l.all_users
            ),
            Err(e) => panic!("LIST of {user}: {e}"),
        }
    }
    match d.api().list(2).await {
        Ok(l) => assert!(
            l.followers.contains("1"),
            "user 2's followers: {:?}",
            l.followers
        ),
        Err(e) => panic!("LIST of 2: {e}"),
    }
    // The real follow still delivers.
    post(&d.api(), 2, "2-after-the-attack", "after the attack").await;
    d.wait_timeline_has(1, "after the attack").await;
    let holding = files_holding(d.root(), MARKER);
    assert!(holding.is_empty(), "{holding:?} hold the attacker's text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_of_one_megabyte_is_refused_before_commit() {
    let d = ready().await;
    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let in_sync_before = in_sync_sets(&d).await;
            let text = format!("{MARKER}{}", "x".repeat(1 << 20));
            let apply = ApplyRequest {
                from_cluster: 2,
                ops: vec![deliver(vec![1, 3], 2, text, 1)],
            };
            apply_both_ways(&d, "a delivery of 1 MB", "bytes", apply).await;
            assert_eq!(
                in_sync_sets(&d).await,
                in_sync_before,
                "the in-sync sets changed"
            );
            let holding = files_holding(d.root(), MARKER);
            assert!(holding.is_empty(), "{holding:?} hold the attacker's text");
            // A failover still works: the secondary holds everything.
            fail_over(d, 1).await
        },
    )
    .await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_server_40_to_an_in_sync_set_is_refused() {
    let d = ready().await;
    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ATTACK,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let views = cluster_views(&d).await;
            let mut coord = CoordinatorClient::new(insider(&d, &d.coord_addr()));
            for v in &views {
                let change = InSyncChange {
                    cluster_id: v.cluster_id,
                    primary_id: v.primary_id,
                    epoch: v.epoch,
                    server_id: 40,
                    in_sync: true,
                };
                assert_refused(
                    &format!("ChangeInSync adding server 40 to cluster {}", v.cluster_id),
                    Code::InvalidArgument,
                    "server 40 is not a live, registered server",
                    coord.change_in_sync(change).await,
                );
            }
            d
        },
    )
    .await;
    for v in cluster_views(&d).await {
        let real: BTreeSet<u32> = d.server_ids(v.cluster_id).into_iter().collect();
        assert!(
            v.in_sync.iter().all(|s| real.contains(s)),
            "in-sync set of cluster {}: {:?}",
            v.cluster_id,
            v.in_sync
        );
    }
}
