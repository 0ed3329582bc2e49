//! After the load: is every acknowledged post in its author's timeline,
//! exactly once?
//!
//! Each author's own posts since the run began are read from the current
//! primary of its cluster, found and retried by the client library's router
//! (`Replica.PostsSince`, which reads the author's timeline file from its
//! end). An acknowledged post that is absent is
//! *lost*; a post id present twice is *duplicated*. Both must be zero, a
//! failover in the middle of the run included. An author with more posts
//! than one read returns is reported as not fully audited instead of being
//! guessed about.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tonic::Status;
use tsn_client::{RetryPolicy, Route, Router, RouterConfig};
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_datastore::Post;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::PostsSinceRequest;

use crate::ids::parse_post_id;
use crate::limits::{
    AUDIT_CONCURRENCY_MAX, AUDIT_POSTS_PER_AUTHOR_MAX, AUDIT_RETRY_FOR_MS, POST_CALL_TIMEOUT_MS,
    POST_RETRY_BACKOFF_MAX_MS, POST_RETRY_BACKOFF_MIN_MS,
};
use crate::record::Ack;

/// How one author's read is retried.
const AUDIT_POLICY: RetryPolicy = RetryPolicy {
    backoff_min_ms: POST_RETRY_BACKOFF_MIN_MS,
    backoff_max_ms: POST_RETRY_BACKOFF_MAX_MS,
    attempt_timeout_ms: POST_CALL_TIMEOUT_MS,
    retry_for: Some(Duration::from_millis(AUDIT_RETRY_FOR_MS)),
};

/// Most example ids listed in the report for each kind of finding.
const EXAMPLES_MAX: usize = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditFigures {
    /// Acknowledged posts checked (of fully audited authors).
    pub checked: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Stored but never acknowledged (sent when the server died, or still
    /// retried when the phase ended): allowed, counted for information.
    pub stored_unacknowledged: u64,
    /// Authors with more posts than one read returns, left out.
    pub authors_not_fully_audited: u64,
    /// Authors whose timeline could not be read.
    pub authors_unreadable: u64,
    pub lost_examples: Vec<String>,
    pub duplicated_examples: Vec<String>,
    pub unreadable_examples: Vec<String>,
}

/// What one author's timeline holds: this run's post numbers and how often
/// each appears.
pub type Found = HashMap<u64, u32>;

/// Compares the acknowledged posts of one author with what was found.
/// Pure. Returns (lost, duplicated, stored but unacknowledged) post numbers.
pub fn compare(acked: &[u64], found: &Found) -> (Vec<u64>, Vec<u64>, u64) {
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !found.contains_key(n))
        .collect();
    let mut duplicated: Vec<u64> = found
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&n, _)| n)
        .collect();
    duplicated.sort_unstable();
    let acked_set: std::collections::HashSet<u64> = acked.iter().copied().collect();
    let extra = found.keys().filter(|n| !acked_set.contains(n)).count() as u64;
    (lost, duplicated, extra)
}

enum Read {
    Found(Found),
    TooMany,
    Failed(String),
}

/// Audits every acknowledged post in `acks` (posts of run `run`, sent
/// after `since_ms`).
pub async fn audit(
    coord: &CoordClient,
    auth: &ClusterAuth,
    run: &str,
    acks: &[Ack],
    since_ms: i64,
) -> AuditFigures {
    let mut by_author: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for a in acks {
        by_author.entry(a.author).or_default().push(a.n);
    }
    let router = Router::new(coord.clone(), RouterConfig::per_user(POST_CALL_TIMEOUT_MS));
    let router = &router;
    let reads: Vec<(u32, Vec<u64>, Read)> = stream::iter(by_author)
        .map(|(author, acked)| async move {
            let read = read_author(router, auth, run, author, since_ms).await;
            (author, acked, read)
        })
        .buffer_unordered(AUDIT_CONCURRENCY_MAX)
        .collect()
        .await;
    let mut f = AuditFigures::default();
    for (author, acked, read) in reads {
        match read {
            Read::Found(found) => {
                let (lost, duplicated, extra) = compare(&acked, &found);
                f.checked += acked.len() as u64;
                f.lost += lost.len() as u64;
                f.duplicated += duplicated.len() as u64;
                f.stored_unacknowledged += extra;
                for n in lost {
                    push_example(&mut f.lost_examples, format!("{author}: post {n}"));
                }
                for n in duplicated {
                    push_example(&mut f.duplicated_examples, format!("{author}: post {n}"));
                }
            }
            Read::TooMany => f.authors_not_fully_audited += 1,
            Read::Failed(why) => {
                f.authors_unreadable += 1;
                push_example(&mut f.unreadable_examples, format!("{author}: {why}"));
            }
        }
    }
    f
}

fn push_example(list: &mut Vec<String>, what: String) {
    if list.len() < EXAMPLES_MAX {
        list.push(what);
    }
}

async fn read_author(
    router: &Router,
    auth: &ClusterAuth,
    run: &str,
    author: u32,
    since_ms: i64,
) -> Read {
    let read = router
        .call(author, &AUDIT_POLICY, |route| {
            posts_since(route, auth, author, since_ms)
        })
        .await;
    match read {
        Ok(posts) if posts.len() >= AUDIT_POSTS_PER_AUTHOR_MAX as usize => Read::TooMany,
        Ok(posts) => {
            let mut found = Found::new();
            for p in posts {
                if let Some((a, n)) = parse_post_id(run, &p.id) {
                    if a == author {
                        *found.entry(n).or_insert(0) += 1;
                    }
                }
            }
            Read::Found(found)
        }
        Err(error) => Read::Failed(error.to_string()),
    }
}

/// `Replica.PostsSince` is internal: the call carries the cluster secret.
async fn posts_since(
    route: Route,
    auth: &ClusterAuth,
    author: u32,
    since_ms: i64,
) -> Result<Vec<Post>, Status> {
    let reply = ReplicaClient::new(auth.wrap(route.channel()))
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
        .posts_since(PostsSinceRequest {
            author,
            since_ms,
            limit: AUDIT_POSTS_PER_AUTHOR_MAX,
        })
        .await?
        .into_inner();
    let mut posts = Vec::with_capacity(reply.posts.len());
    for post in reply.posts {
        match Post::try_from(post) {
            Ok(p) => posts.push(p),
            Err(e) => return Err(Status::internal(format!("a post that is not valid: {e}"))),
        }
    }
    Ok(posts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_extra_posts_are_told_apart() {
        let found = Found::from([(1, 1), (2, 2), (4, 1)]);
        let (lost, dup, extra) = compare(&[1, 2, 3], &found);
        assert_eq!(lost, vec![3]);
        assert_eq!(dup, vec![2]);
        assert_eq!(extra, 1);
    }

    #[test]
    fn a_clean_timeline_has_no_findings() {
        let found = Found::from([(1, 1), (2, 1)]);
        assert_eq!(compare(&[2, 1], &found), (vec![], vec![], 0));
    }
}
