//! The classic scenario: the primary of cluster 2 dies; through nothing
//! but the classic protocol, user 2 finds its followers and timeline as
//! they were, a new user of cluster 2 joins, and posts flow both ways.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeSet;

use tsn_harness::classic::Classic;
use tsn_harness::results::ids;
use tsn_harness::stream::texts_of;
use tsn_harness::views::Failover;
use tsn_harness::Member;

use common::{
    await_failover, ms, post, ready_for_failover, start, CONVERGE_DEADLINE_MS,
    FAILOVER_ATTEMPTS_MAX,
};

const SUCCESS: &str = "SUCCESS";

fn id_set(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

/// The classic scenario: the primary of cluster 2 dies; through nothing
/// but the classic protocol, user 2 finds its followers and timeline as
/// they were, a new user of cluster 2 joins, and posts flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_scenario_primary_of_cluster_2_dies() {
    let mut d = start(3, 1).await;
    let api = d.api();
    d.login_all(&[1, 2, 3]).await;
    d.follow_and_wait(1, 2).await;
    d.follow_and_wait(3, 2).await;
    d.follow_and_wait(2, 1).await;
    post(&api, 2, "2-hello", "hello from 2").await;
    post(&api, 1, "1-hello", "hello from 1").await;
    let before = vec!["hello from 1".to_string(), "hello from 2".to_string()];
    d.wait_timeline(2, &before).await;
    let killed = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (old, _, epoch_before) = ready_for_failover(&d, 2).await;
            let member = Member::Server {
                cluster: 2,
                server_id: old,
            };
            d.kill9(member);
            match await_failover(&api, 2, old, epoch_before).await {
                Failover::Promoted(_) => break old,
                Failover::NoCandidate => {
                    assert!(
                        attempt < FAILOVER_ATTEMPTS_MAX,
                        "{attempt} times no secondary of cluster 2 was in sync when its primary died"
                    );
                    eprintln!("no secondary was in sync when the primary died; once more");
                    d.restart(member).await;
                    d.wait_healthy().await;
                }
            }
        }
    };
    let coord = d.coord_addr();
    // Acting as a classic client would: nothing but GetServer and SNSService.
    let c2 = Classic::connect(&coord, 2).await;
    let (now, _) = d.primary_of(2).await;
    assert_ne!(
        now, killed,
        "cluster 2's primary is still the killed server"
    );

    let listing = c2.list().await;
    assert_eq!(id_set(&listing.followers), ids([1, 3]), "{listing:?}");
    assert!(
        ids([1, 2, 3]).is_subset(&id_set(&listing.all_users)),
        "{listing:?}"
    );
    let mut s2 = c2.timeline().await;
    let batch = match s2.collect(before.len(), ms(CONVERGE_DEADLINE_MS)).await {
        Ok(b) => b,
        Err(e) => panic!("user 2's timeline after the failover: {e}"),
    };
    assert_eq!(
        texts_of(&batch),
        before,
        "user 2's timeline after the failover"
    );

    // A new user of cluster 2 joins after the failover.
    let c5 = Classic::connect(&coord, 5).await;
    assert_eq!(c5.follow(1).await, SUCCESS, "user 5 FOLLOW 1");
    let c3 = Classic::connect(&coord, 3).await;
    assert_eq!(c3.follow(5).await, SUCCESS, "user 3 FOLLOW 5");
    c5.wait_list("user 5's followers to include 3", |l| {
        l.followers.contains(&"3".to_string())
    })
    .await;
    let c1 = Classic::connect(&coord, 1).await;
    c1.wait_list("user 1's followers to be 2 and 5", |l| {
        id_set(&l.followers) == ids([2, 5])
    })
    .await;

    let s3 = c3.timeline().await.record();
    let s5 = c5.timeline().await;
    if let Err(e) = s5.post("hello from 5").await {
        panic!("user 5 posting on its stream: {e}");
    }
    let s5 = s5.record();
    s3.wait_for_text("hello from 5", ms(CONVERGE_DEADLINE_MS))
        .await;

    let s1 = c1.timeline().await;
    if let Err(e) = s1.post("hello again from 1").await {
        panic!("user 1 posting on its stream: {e}");
    }
    s5.wait_for_text("hello again from 1", ms(CONVERGE_DEADLINE_MS))
        .await;
    // Posting through a stream has no acknowledgement: the author's own
    // timeline shows that each post was stored once.
    for (user, text) in [(5, "hello from 5"), (1, "hello again from 1")] {
        d.wait_timeline_has(user, text).await;
        let own = d.timeline(user).await;
        let n = own.iter().filter(|p| p.text == text).count();
        assert_eq!(n, 1, "user {user}'s timeline holds {text:?} {n} times");
    }
}
