//! The sync service of the author's cluster is killed twice in the middle
//! of a stream of posts: the follower on the other cluster ends with every
//! post, once each, in order.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeMap;

use tsn_datastore::Op;
use tsn_harness::results::{duplicate_ids, texts};
use tsn_harness::{Api, Member};

use common::{post, start};

/// Posts of the author (the test names after which ones the sync service
/// is killed and restarted).
const SYNC_CRASH_POSTS: u32 = 50;

/// Posts `s<i>` as user 1 for every `i` of `range`, one after the other,
/// each acknowledged before the next.
async fn post_range(api: &Api, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        post(api, 1, &format!("1-s{i}"), &format!("s{i}")).await;
    }
}

/// The sync service of the author's cluster is killed twice in the
/// middle of a stream of 50 posts (once while it is delivering, once while
/// it is catching up after a restart): the follower on the other cluster
/// ends with exactly those 50 posts, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_service_crash_loses_and_duplicates_nothing() {
    let mut d = start(2, 0).await;
    let api = d.api();
    // User 1 on cluster 1, user 2 on cluster 2.
    d.login_all(&[1, 2]).await;
    d.follow_and_wait(2, 1).await;
    let sync1 = Member::Sync { cluster: 1 };

    // Phases, each ending at an acknowledged post:
    // 1..=15 with the sync service running, then killed at once (some
    // deliveries are in flight); 16..=25 while it is down; 26..=35 while it
    // restarts; killed again at once (it is catching up); 36..=42 while it
    // is down; 43..=50 while it restarts.
    post_range(&api, 1..=15).await;
    d.kill9(sync1);
    post_range(&api, 16..=25).await;
    tokio::join!(post_range(&api, 26..=35), d.restart(sync1));
    d.kill9(sync1);
    post_range(&api, 36..=42).await;
    tokio::join!(post_range(&api, 43..=SYNC_CRASH_POSTS), d.restart(sync1));
    assert_eq!(
        d.sync(1).starts(),
        3,
        "the sync service started three times"
    );

    let want = texts("s", (1..=SYNC_CRASH_POSTS).rev());
    let got = d.wait_timeline(2, &want).await;
    assert!(duplicate_ids(&got).is_empty(), "{got:?}");
    let (primary, _) = d.primary_of(2).await;
    let journal = d.journal(2, primary);
    let mut delivered = BTreeMap::<String, u32>::new();
    for e in &journal {
        if let Op::Deliver { to, post } = &e.op {
            if !to.contains(&2) {
                continue;
            }
            *delivered.entry(post.id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        delivered.len(),
        SYNC_CRASH_POSTS as usize,
        "deliveries into user 2's timeline: {delivered:?}"
    );
    assert!(
        delivered.values().all(|&n| n == 1),
        "a post was delivered twice: {delivered:?}"
    );
    d.wait_timeline(1, &want).await;
}
