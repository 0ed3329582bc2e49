//! The gRPC API as a test uses it: one call per user action, each one
//! routed to the current primary of the user's cluster, as a client would.
//!
//! Calls that fail for a transient reason (the cluster has no primary yet,
//! the connection was refused, a call timed out) are tried again for a
//! while, so that a test right after a restart does not have to. Answers
//! (including `FAILURE_*` replies and `INVALID_ARGUMENT`) are returned as
//! they are: judging them is the test's job.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};
use tsn_cluster::coord::{channel, server_address, stream_channel, CoordClient};
use tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES;
use tsn_cluster::retry::Backoff;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::{ListReply, Request};
use tsn_proto::tsn::posts_client::PostsClient;
use tsn_proto::tsn::{ClusterView, PostReply, PostRequest, ProcessKind, ReadRequest, TimelinePost};

use crate::limits::{
    CALL_RETRY_BACKOFF_MAX_MS, CALL_RETRY_BACKOFF_MIN_MS, CALL_RETRY_FOR_MS, CALL_TIMEOUT_MS,
};
use crate::stream::TimelineStream;

/// What LIST answered, as sets (order carries no meaning) and as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub all_users: BTreeSet<String>,
    pub followers: BTreeSet<String>,
    pub raw: ListReply,
}

/// A client of a whole deployment, found through its coordinator.
#[derive(Clone)]
pub struct Api {
    coord: CoordClient,
    retry_for: Duration,
}

impl Api {
    pub fn new(coord_addr: &str) -> Api {
        let coord = match CoordClient::new(coord_addr) {
            Ok(c) => c,
            Err(e) => panic!("bad coordinator address {coord_addr:?}: {e:#}"),
        };
        Api {
            coord,
            retry_for: Duration::from_millis(CALL_RETRY_FOR_MS),
        }
    }

    /// The same client, retrying transient failures for `retry_for`
    /// (zero: never retry, see every failure).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Api {
        self.retry_for = retry_for;
        self
    }

    pub fn coord(&self) -> &CoordClient {
        &self.coord
    }

    /// `host:port` of the primary serving `user`, from `GetServer`.
    pub async fn server_of(&self, user: u32) -> Result<String, Status> {
        self.retry(|| async {
            let info = self.coord.get_server(user).await?;
            Ok(server_address(&info))
        })
        .await
    }

    /// The coordinator's view of every cluster.
    pub async fn clusters(&self) -> Result<Vec<ClusterView>, Status> {
        self.retry(|| self.coord.clusters()).await
    }

    /// The server id and address of `cluster`'s primary, as the
    /// coordinator sees it; `None` while the cluster has none.
    pub async fn primary_of(&self, cluster: u32) -> Result<Option<(u32, String)>, Status> {
        let views = self.clusters().await?;
        Ok(primary_in(&views, cluster))
    }

    pub async fn login(&self, user: u32) -> Result<String, Status> {
        self.retry(|| async {
            let mut sns = self.sns(user).await?;
            let reply = sns.login(request(user, &[])).await?.into_inner();
            Ok(reply.msg)
        })
        .await
    }

    pub async fn list(&self, user: u32) -> Result<Listing, Status> {
        self.retry(|| async {
            let mut sns = self.sns(user).await?;
            let raw = sns.list(request(user, &[])).await?.into_inner();
            Ok(Listing {
                all_users: raw.all_users.iter().cloned().collect(),
                followers: raw.followers.iter().cloned().collect(),
                raw,
            })
        })
        .await
    }

    /// FOLLOW `target` (any text: bad names are part of what is tested);
    /// returns the reply's `msg` (`SUCCESS`, `FAILURE_…`).
    pub async fn follow(&self, user: u32, target: &str) -> Result<String, Status> {
        self.retry(|| async {
            let mut sns = self.sns(user).await?;
            let reply = sns.follow(request(user, &[target])).await?.into_inner();
            Ok(reply.msg)
        })
        .await
    }

    /// UNFOLLOW `target`; returns the reply's `msg`.
    pub async fn unfollow(&self, user: u32, target: &str) -> Result<String, Status> {
        self.retry(|| async {
            let mut sns = self.sns(user).await?;
            let reply = sns.un_follow(request(user, &[target])).await?.into_inner();
            Ok(reply.msg)
        })
        .await
    }

    /// `Posts.Post`; a retry sends the same `post_id`, which stores nothing
    /// new, so retrying is safe.
    pub async fn post(&self, user: u32, post_id: &str, text: &str) -> Result<PostReply, Status> {
        self.retry(|| async {
            let mut posts = self.posts(user).await?;
            let req = PostRequest {
                user,
                post_id: post_id.to_string(),
                text: text.to_string(),
            };
            Ok(posts.post(req).await?.into_inner())
        })
        .await
    }

    /// `Posts.Read`: the last `limit` posts of `user`'s timeline, newest
    /// first.
    pub async fn read(&self, user: u32, limit: u32) -> Result<Vec<TimelinePost>, Status> {
        self.retry(|| async {
            let mut posts = self.posts(user).await?;
            let reply = posts.read(ReadRequest { user, limit }).await?.into_inner();
            Ok(reply.posts)
        })
        .await
    }

    /// Opens `user`'s Timeline stream; the server answers with the last 20
    /// posts, then each new one.
    pub async fn open_timeline(&self, user: u32) -> Result<TimelineStream, Status> {
        self.retry(|| async {
            let addr = self.server_of(user).await?;
            let ch = stream_channel(&addr).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let sns = SnsServiceClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES);
            TimelineStream::open(sns, user).await
        })
        .await
    }

    async fn sns(&self, user: u32) -> Result<SnsServiceClient<Channel>, Status> {
        let ch = self.channel_to_server_of(user).await?;
        Ok(SnsServiceClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES))
    }

    async fn posts(&self, user: u32) -> Result<PostsClient<Channel>, Status> {
        let ch = self.channel_to_server_of(user).await?;
        Ok(PostsClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES))
    }

    async fn channel_to_server_of(&self, user: u32) -> Result<Channel, Status> {
        let info = self.coord.get_server(user).await?;
        let addr = server_address(&info);
        channel(&addr, CALL_TIMEOUT_MS).map_err(|e| Status::internal(format!("{e:#}")))
    }

    /// Runs `call` until it succeeds, fails for good, or `retry_for` has
    /// passed; the backoff between tries doubles up to a limit.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut backoff = Backoff::new(CALL_RETRY_BACKOFF_MIN_MS, CALL_RETRY_BACKOFF_MAX_MS);
        loop {
            let result =
                match tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), call()).await {
                    Ok(result) => result,
                    Err(_) => Err(Status::deadline_exceeded("the harness's call timeout")),
                };
            let pause = backoff.next_delay();
            match result {
                Err(status)
                    if is_transient(&status) && start.elapsed() + pause < self.retry_for =>
                {
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}

/// Failures that say "not now" rather than "no".
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// The primary of `cluster` in a coordinator view: its server id and the
/// address it serves on.
pub fn primary_in(views: &[ClusterView], cluster: u32) -> Option<(u32, String)> {
    let view = views.iter().find(|v| v.cluster_id == cluster)?;
    if view.primary_id == 0 {
        return None;
    }
    let process = view
        .processes
        .iter()
        .find(|p| p.kind == ProcessKind::Server as i32 && p.server_id == view.primary_id)?;
    Some((view.primary_id, process.address.clone()))
}

fn request(user: u32, arguments: &[&str]) -> Request {
    Request {
        username: user.to_string(),
        arguments: arguments.iter().map(|a| a.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_proto::tsn::ProcessView;

    #[test]
    fn primary_is_found_by_id_and_kind() {
        let views = vec![ClusterView {
            cluster_id: 2,
            epoch: 3,
            primary_id: 7,
            processes: vec![
                ProcessView {
                    server_id: 7,
                    kind: ProcessKind::SyncService as i32,
                    address: "sync".into(),
                    ..Default::default()
                },
                ProcessView {
                    server_id: 7,
                    kind: ProcessKind::Server as i32,
                    address: "127.0.0.1:9".into(),
                    ..Default::default()
                },
            ],
            in_sync: vec![],
        }];
        assert_eq!(primary_in(&views, 2), Some((7, "127.0.0.1:9".into())));
        assert_eq!(primary_in(&views, 1), None);
    }

    #[test]
    fn no_primary_means_none() {
        let views = vec![ClusterView {
            cluster_id: 1,
            primary_id: 0,
            ..Default::default()
        }];
        assert_eq!(primary_in(&views, 1), None);
    }

    #[test]
    fn only_not_now_failures_are_retried() {
        assert!(is_transient(&Status::unavailable("no primary")));
        assert!(is_transient(&Status::deadline_exceeded("slow")));
        assert!(!is_transient(&Status::invalid_argument("too long")));
        assert!(!is_transient(&Status::not_found("x")));
    }
}
