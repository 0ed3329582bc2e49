//! Creating the run's users and follow graph, and waiting until the graph
//! reached every cluster (each followed user's followers list, kept by its
//! own cluster, shows every follower), so that the load starts on a
//! deployment whose deliveries can all be expected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tsn_harness::Api;

use crate::limits::{POLL_INTERVAL_MS, SETUP_CONCURRENCY_MAX};

const SUCCESS: &str = "SUCCESS";
/// FOLLOW's answer when the edge exists already (a repeated run with -c).
const ALREADY_EXISTS: &str = "FAILURE_ALREADY_EXISTS";

/// Logs in users `1..=users`; each is created on its cluster.
pub async fn login_all(api: &Api, users: u32) -> anyhow::Result<()> {
    let failures: Vec<String> = stream::iter(1..=users)
        .map(|u| {
            let api = api.clone();
            async move {
                match api.login(u).await {
                    Ok(msg) if msg == SUCCESS => None,
                    Ok(msg) => Some(format!("login of user {u}: {msg}")),
                    Err(status) => Some(format!("login of user {u}: {status}")),
                }
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY_MAX)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    first_failure(failures)
}

/// Makes every `(follower, followed)` edge.
pub async fn follow_all(api: &Api, edges: &[(u32, u32)]) -> anyhow::Result<()> {
    let failures: Vec<String> = stream::iter(edges.iter().copied())
        .map(|(user, target)| {
            let api = api.clone();
            async move {
                match api.follow(user, &target.to_string()).await {
                    Ok(msg) if msg == SUCCESS || msg == ALREADY_EXISTS => None,
                    Ok(msg) => Some(format!("user {user} FOLLOW {target}: {msg}")),
                    Err(status) => Some(format!("user {user} FOLLOW {target}: {status}")),
                }
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY_MAX)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    first_failure(failures)
}

/// Waits until each followed user's followers list holds all its followers
/// of `want`; checks only the lists not yet complete on each round.
pub async fn wait_followers(
    api: &Api,
    want: &BTreeMap<u32, BTreeSet<u32>>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pending: Vec<u32> = want.keys().copied().collect();
    loop {
        let still: Vec<(u32, String)> = stream::iter(pending.iter().copied())
            .map(|user| {
                let api = api.clone();
                async move {
                    let followers = want.get(&user)?;
                    match api.list(user).await {
                        Ok(l) => {
                            let missing = followers
                                .iter()
                                .filter(|f| !l.followers.contains(&f.to_string()))
                                .count();
                            (missing > 0)
                                .then(|| (user, format!("{missing} followers not there yet")))
                        }
                        Err(status) => Some((user, format!("LIST failed: {status}"))),
                    }
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY_MAX)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        if still.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            let (user, why) = &still[0];
            anyhow::bail!(
                "the follow graph did not reach every cluster within {} ms: {} followed users incomplete (user {user}: {why})",
                deadline.as_millis(),
                still.len()
            );
        }
        pending = still.into_iter().map(|(u, _)| u).collect();
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

fn first_failure(failures: Vec<String>) -> anyhow::Result<()> {
    match failures.first() {
        None => Ok(()),
        Some(first) => anyhow::bail!("{} calls failed; the first: {first}", failures.len()),
    }
}
