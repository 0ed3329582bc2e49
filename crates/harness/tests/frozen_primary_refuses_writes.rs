//! A primary frozen (SIGSTOP) long enough to be replaced wakes up and is
//! sent writes at once: it refuses every one, none leaves a trace in any
//! file, and the post the new primary acknowledged reaches its follower.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::{Code, Status};
use tsn_harness::direct::{post_request, posts_client, request, sns_client};
use tsn_harness::trace::{traces, Refused};
use tsn_harness::views::Failover;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::tsn::posts_client::PostsClient;

use common::{
    await_failover, ms, post, ready_for_failover, start, wait_in_sync, FAILOVER_ATTEMPTS_MAX,
};

/// How long writes are sent to a primary that woke up after a failover,
/// and the most sent of each kind (post, follow, login).
const FROZEN_WRITES_FOR_MS: u64 = 1_000;
const FROZEN_WRITES_PER_KIND_MAX: u32 = 2_000;

/// What the old primary answered to the writes sent to it after it woke up.
#[derive(Debug, Default)]
struct Answers {
    refused: Refused,
    sent: BTreeMap<&'static str, u32>,
    /// How many UNAVAILABLE refusals said each reason (the first clause of
    /// the message): it shows which fence refused, the lease or the role.
    reasons: BTreeMap<String, u32>,
    /// Everything that was not an UNAVAILABLE refusal.
    wrong: Vec<String>,
}

impl Answers {
    fn note(&mut self, kind: &'static str, what: String, result: Result<(), Status>) {
        *self.sent.entry(kind).or_default() += 1;
        match result {
            Err(status) if status.code() == Code::Unavailable => {
                let reason = status.message().split(';').next().unwrap_or_default();
                *self.reasons.entry(reason.to_string()).or_default() += 1;
            }
            other => self.wrong.push(format!("{what}: {other:?}")),
        }
    }
}

/// Sends posts (as `poster`), a follow and logins of new users (from
/// `login_base` on, every `clusters`-th id: all served by the same cluster)
/// through `posts` and `sns`, the three kinds at once, for [`FROZEN_WRITES_FOR_MS`]; every
/// answer is recorded.
async fn hammer(
    posts: PostsClient<Channel>,
    sns: SnsServiceClient<Channel>,
    poster: u32,
    follow: (u32, u32),
    login_base: u32,
    clusters: u32,
) -> Answers {
    let until = Instant::now() + ms(FROZEN_WRITES_FOR_MS);
    let posting = async {
        let mut got = Vec::new();
        let mut client = posts.clone();
        for i in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let id = format!("{poster}-frozen-{i}");
            let req = post_request(poster, &id, &format!("frozen-{i}"));
            let result = client.post(req).await.map(|_| ());
            got.push((id, result));
        }
        got
    };
    let following = async {
        let (user, target) = follow;
        let mut got = Vec::new();
        let mut client = sns.clone();
        for _ in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let req = request(user, &[&target.to_string()]);
            got.push(client.follow(req).await.map(|_| ()));
        }
        got
    };
    let logging_in = async {
        let mut got = Vec::new();
        let mut client = sns.clone();
        for i in 0..FROZEN_WRITES_PER_KIND_MAX {
            if Instant::now() >= until {
                break;
            }
            let user = login_base + i * clusters;
            got.push((user, client.login(request(user, &[])).await.map(|_| ())));
        }
        got
    };
    let (posted, followed, logged_in) = tokio::join!(posting, following, logging_in);
    let (user, target) = follow;
    let mut answers = Answers::default();
    answers.refused.follow = Some(follow);
    answers.refused.text_marker = "frozen-".to_string();
    for (id, result) in posted {
        answers.note("post", format!("Posts.Post {id}"), result);
        answers.refused.post_ids.insert(id);
    }
    for result in followed {
        answers.note("follow", format!("Follow {user} -> {target}"), result);
    }
    for (new_user, result) in logged_in {
        answers.note("login", format!("Login {new_user}"), result);
        answers.refused.users.insert(new_user);
    }
    answers
}

/// A primary frozen (SIGSTOP) long enough to be replaced wakes up and is
/// sent writes at once: it refuses every one, none leaves a trace in any
/// file, and the post the new primary acknowledged reaches its follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_refuses_writes_after_failover() {
    let mut d = start(3, 1).await;
    let api = d.api();
    // With 3 clusters: 1 and 4 on cluster 1, 2 on cluster 2, 3 on cluster 3.
    d.login_all(&[1, 2, 3, 4]).await;
    d.follow_and_wait(2, 1).await;
    let (old, old_addr, new) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (old, old_addr, epoch_before) = ready_for_failover(&d, 1).await;
            d.server(1, old).pause();
            match await_failover(&api, 1, old, epoch_before).await {
                Failover::Promoted(new) => break (old, old_addr, new),
                Failover::NoCandidate => {
                    assert!(
                        attempt < FAILOVER_ATTEMPTS_MAX,
                        "{attempt} times no secondary of cluster 1 was in sync when its primary froze"
                    );
                    eprintln!("no secondary was in sync when the primary froze; once more");
                    d.server(1, old).resume();
                }
            }
        }
    };
    post(&api, 1, "1-after-failover", "after-failover").await;

    // The clients exist before the old primary runs again, so that the
    // first writes leave right after it does.
    let (posts, sns) = (posts_client(&old_addr), sns_client(&old_addr));
    d.server(1, old).resume();
    // User 4 follows user 3; new users 7, 10, 13, … are all of cluster 1.
    let answers = hammer(posts, sns, 1, (4, 3), 7, 3).await;
    eprintln!(
        "writes sent to the woken primary: {:?}; refusals: {:?}",
        answers.sent, answers.reasons
    );
    for kind in ["post", "follow", "login"] {
        assert!(
            answers.sent.get(kind).is_some_and(|&n| n > 0),
            "no {kind} was sent to the woken primary"
        );
    }
    assert!(
        answers.wrong.is_empty(),
        "the woken primary did not refuse every write with UNAVAILABLE ({} of them):\n{}",
        answers.wrong.len(),
        answers
            .wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Once it has rejoined as a secondary, its files hold what the new
    // primary has: nothing of the refused writes anywhere.
    wait_in_sync(&d, 1, old).await;
    let (primary_now, _) = d.primary_of(1).await;
    assert_eq!(primary_now, new, "cluster 1 changed primary again");
    let found = traces(&d.datastore_root(), &answers.refused);
    assert!(
        found.is_empty(),
        "refused writes left traces:\n{}",
        found.join("\n")
    );
    d.wait_timeline_has(2, "after-failover").await;
}
