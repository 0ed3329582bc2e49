//! The coordinator as a group of three (Raft): under writers, its leader
//! is killed with SIGKILL again and again and a new one takes over within
//! about a second (measured); a primary killed together with the leader is
//! still replaced, once; a failover is neither lost nor done twice, and
//! every acknowledged post is present once. A member cut off from the
//! others (they are frozen) decides nothing. `GetServer` and the MP3
//! `FetchAssignment` are answered on any member. A member is added and
//! another removed while the group runs. A handle signed up is still known
//! after the leader that signed it up is killed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tsn_cluster::coord::CoordClient;
use tsn_harness::attack::under_load;
use tsn_harness::bins::{bin_path, COORDINATOR};
use tsn_harness::deployment::COORDINATOR_READY_LINE;
use tsn_harness::views::Failover;
use tsn_harness::wait::wait_for;
use tsn_harness::{Config, Deployment, Member, Proc, Ready};
use tsn_proto::mp3::sns_coordinator_service_client::SnsCoordinatorServiceClient;
use tsn_proto::tsn::raft_client::RaftClient;
use tsn_proto::tsn::RaftMessage;

use common::{
    await_failover, epochs, ms, ready_for_failover, wait_all_in_sync, CONVERGE_DEADLINE_MS, Q_MS,
};

const USERS: [u32; 4] = [1, 2, 3, 4];
const MEMBERS: u32 = 3;
/// Leader kills measured.
const LEADER_KILLS: usize = 10;
/// Posts each writer gets acknowledged before and after the kills.
const ACKED_AROUND: u64 = 5;
/// Longest a test waits for a new leader.
const NEW_LEADER_DEADLINE_MS: u64 = 15_000;
/// How long a member whose peers are frozen is watched deciding nothing:
/// several failure timeouts and commit timeouts.
const ISOLATED_WATCH_MS: u64 = 4_000;

async fn start_group(clusters: u32) -> Deployment {
    let mut config = Config::new(clusters, 1, Q_MS);
    config.coordinators = MEMBERS;
    let d = Deployment::start_with(config).await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;
    d
}

fn member(id: u32) -> Member {
    if id == 1 {
        Member::Coordinator
    } else {
        Member::GroupMember { id }
    }
}

/// The members' addresses, member 1 first.
fn addresses(d: &Deployment) -> Vec<String> {
    d.coord_addr().split(',').map(str::to_string).collect()
}

/// The member that answers `Clusters` itself (the others refuse, naming
/// it), other than `not`.
async fn leader(d: &Deployment, not: Option<u32>) -> u32 {
    leader_among(d, addresses(d), not).await
}

/// [`leader`] among the members at `addrs` (member i + 1 at `addrs[i]`).
async fn leader_among(d: &Deployment, addrs: Vec<String>, not: Option<u32>) -> u32 {
    let auth = d.auth().clone();
    wait_for(
        ms(NEW_LEADER_DEADLINE_MS),
        "a member of the coordinator group to lead",
        || {
            let (addrs, auth) = (addrs.clone(), auth.clone());
            async move {
                for (i, addr) in addrs.iter().enumerate() {
                    let id = i as u32 + 1;
                    if Some(id) == not {
                        continue;
                    }
                    let Ok(one) = CoordClient::with_auth(addr, &auth) else {
                        continue;
                    };
                    if one.clusters().await.is_ok() {
                        return Ok(id);
                    }
                }
                Err("no member answers as the leader".to_string())
            }
        },
    )
    .await
}

fn median_and_max(mut took: Vec<Duration>) -> (Duration, Duration) {
    took.sort();
    (took[took.len() / 2], took[took.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_under_load_and_no_failover_is_lost_or_doubled() {
    let d = start_group(2).await;
    let before = epochs(&d.api()).await;
    let expected = before.clone();
    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND,
        ms(CONVERGE_DEADLINE_MS),
        |mut d| async move {
            let mut took = Vec::new();
            for _ in 0..LEADER_KILLS {
                let old = leader(&d, None).await;
                let killed = Instant::now();
                d.kill9(member(old));
                let new = leader(&d, Some(old)).await;
                took.push(killed.elapsed());
                assert_ne!(new, old);
                d.restart(member(old)).await;
            }
            let (median, max) = median_and_max(took);
            println!(
                "new coordinator leader after a kill -9 of the leader: median {} ms, max {} ms over {LEADER_KILLS}",
                median.as_millis(),
                max.as_millis()
            );
            // No leader change made any cluster fail over.
            assert_eq!(
                epochs(&d.api()).await,
                expected,
                "a leader change moved an epoch"
            );

            // The leader and the primary of cluster 1 at once.
            let (primary, _, epoch) = ready_for_failover(&d, 1).await;
            let old = leader(&d, None).await;
            d.kill9(member(old));
            d.kill9(Member::Server {
                cluster: 1,
                server_id: primary,
            });
            match await_failover(&d.api(), 1, primary, epoch).await {
                Failover::Promoted(s) => assert_ne!(s, primary),
                Failover::NoCandidate => {
                    panic!("the in-sync secondary of cluster 1 was not promoted")
                }
            }
            d.restart(member(old)).await;
            d.restart(Member::Server {
                cluster: 1,
                server_id: primary,
            })
            .await;
            d
        },
    )
    .await;
    // Exactly one promotion, in cluster 1 only.
    let after = epochs(&d.api()).await;
    assert_eq!(after[&1], before[&1] + 1, "{before:?} -> {after:?}");
    assert_eq!(after[&2], before[&2], "{before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_the_others_decides_nothing() {
    let mut d = start_group(1).await;
    let (primary, _, epoch) = ready_for_failover(&d, 1).await;
    let lead = leader(&d, None).await;
    let others: Vec<u32> = (1..=MEMBERS).filter(|&m| m != lead).collect();

    // The open lookups work on any member: a follower passes them on.
    let follower = addresses(&d)[others[0] as usize - 1].clone();
    let open = match CoordClient::new(&follower) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match open.get_server(1).await {
        Ok(info) => assert_eq!(info.server_id, primary as i32, "{info:?}"),
        Err(e) => panic!("GetServer on a follower: {e}"),
    }
    let channel = match tsn_cluster::coord::channel(&follower, 2_000) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mp3 = SnsCoordinatorServiceClient::new(channel)
        .fetch_assignment(tsn_proto::mp3::Request {
            username: "1".into(),
            arguments: Vec::new(),
        })
        .await;
    match mp3 {
        Ok(a) => assert_eq!(a.into_inner().sid, "1"),
        Err(e) => panic!("FetchAssignment on a follower: {e}"),
    }

    for &m in &others {
        d.member(member(m)).pause();
    }
    d.kill9(Member::Server {
        cluster: 1,
        server_id: primary,
    });
    // Watched for a while: the lone leader never names a new epoch.
    let addr = addresses(&d)[lead as usize - 1].clone();
    let alone = match CoordClient::with_auth(&addr, d.auth()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let watch_until = Instant::now() + ms(ISOLATED_WATCH_MS);
    while Instant::now() < watch_until {
        if let Ok(views) = alone.clusters().await {
            let v = &views[0];
            assert_eq!(
                (v.epoch, v.primary_id),
                (epoch, primary),
                "a member without a majority promoted a secondary"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With its peers back, the group replaces the primary.
    for &m in &others {
        d.member(member(m)).resume();
    }
    match await_failover(&d.api(), 1, primary, epoch).await {
        Failover::Promoted(s) => assert_ne!(s, primary),
        Failover::NoCandidate => panic!("the in-sync secondary was not promoted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_added_and_one_removed_while_the_group_runs() {
    let mut d = start_group(1).await;
    // Member 4 starts empty and waits to be added.
    let secret = d.secret_file().display().to_string();
    let dir = d.root().join("coordinator4").display().to_string();
    let fourth = match Proc::start_on(
        "coordinator4",
        &bin_path(COORDINATOR),
        &d.logs_dir(),
        Ready::StdoutContains(COORDINATOR_READY_LINE.to_string()),
        None,
        |port| {
            [
                "-p",
                &port.to_string(),
                "--clusters",
                "1",
                "--state-dir",
                &dir,
                "--id",
                "4",
                "--join",
                "--cluster-secret-file",
                &secret,
            ]
            .iter()
            .map(|a| a.to_string())
            .collect()
        },
    )
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("member 4 did not start: {e:#}"),
    };
    let mut addrs = addresses(&d);
    addrs.push(fourth.addr());
    // Members 2, 3 and 4: member 1 leaves, member 4 joins.
    let wanted: BTreeMap<u64, String> = (2..=4)
        .map(|id| (id, addrs[id as usize - 1].clone()))
        .collect();
    let json = match serde_json::to_vec(&wanted) {
        Ok(j) => j,
        Err(e) => panic!("{e}"),
    };
    let mut changed = None;
    for addr in addrs.iter().take(3) {
        let channel = match tsn_cluster::coord::channel(addr, 60_000) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let mut client = RaftClient::with_interceptor(channel, d.auth().attach());
        match client
            .change_members(RaftMessage { json: json.clone() })
            .await
        {
            Ok(_) => {
                changed = Some(addr.clone());
                break;
            }
            Err(s) if s.code() == tonic::Code::Unavailable => continue,
            Err(s) => panic!("ChangeMembers on {addr}: {s}"),
        }
    }
    assert!(changed.is_some(), "no member accepted the change");

    // With members 1 and 2 dead, 3 and 4 are a majority of the new group
    // (they would not be of the old four).
    d.kill9(Member::Coordinator);
    d.kill9(member(2));
    let lead = leader_among(&d, addrs.clone(), Some(1)).await;
    assert!([3, 4].contains(&lead), "member {lead} leads");
    // It leads: it committed an entry of its term with a majority of the
    // new members, and answers with the cluster as the group stored it.
    let one = match CoordClient::with_auth(&addrs[lead as usize - 1], d.auth()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match one.clusters().await {
        Ok(views) => assert!(views[0].epoch >= 1 && views[0].primary_id != 0, "{views:?}"),
        Err(e) => panic!("the new leader does not answer: {e}"),
    }
    drop(fourth);
}

/// The handle registry is replicated state: a handle signed up on one
/// leader is still taken, and still resolves to its account, once that
/// leader is killed with SIGKILL and another member leads; the next
/// account still gets an id past every id in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_signed_up_is_known_after_the_leader_is_killed() {
    let mut d = start_group(2).await;
    let open = CoordClient::new(&d.coord_addr()).unwrap_or_else(|e| panic!("{e}"));
    let alice = open
        .sign_up("alice", "first secret")
        .await
        .unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(alice.handle, "alice");

    let old = leader(&d, None).await;
    d.kill9(member(old));
    let new = leader(&d, Some(old)).await;
    assert_ne!(new, old);

    let refused = open
        .sign_up("ALICE", "second secret")
        .await
        .expect_err("a handle signed up before the leader died was given again");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains("taken"), "{refused:?}");
    let found = open
        .resolve("Alice")
        .await
        .unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(
        (found.user, found.cluster, found.handle.as_str()),
        (alice.user, alice.cluster, "alice")
    );
    let bob = open
        .sign_up("bob", "third secret")
        .await
        .unwrap_or_else(|s| panic!("{s}"));
    assert!(bob.user > alice.user, "{bob:?} after {alice:?}");

    // The killed member, back as a follower, still refuses the handle.
    d.restart(member(old)).await;
    let refused = open
        .sign_up("alice", "fourth secret")
        .await
        .expect_err("a handle was given twice");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
}
