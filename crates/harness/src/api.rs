//! The gRPC API as a test uses it: one call per user action, each one
//! routed to the current primary of the user's cluster by the client
//! library's [`Router`], as a client would.
//!
//! Calls that fail for a reason the library's retry rule calls transient
//! (the cluster has no primary yet, the connection was refused, a call
//! timed out) are tried again for a while, so that a test right after a
//! restart does not have to. Answers (including `FAILURE_*` replies and
//! `INVALID_ARGUMENT`) are returned as they are: judging them is the test's
//! job.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use tonic::Status;
use tsn_client::{RetryPolicy, Route, Router, RouterConfig};
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::coord::CoordClient;
use tsn_proto::csce438::sns_service_client::SnsServiceClient;
use tsn_proto::csce438::{ListReply, Request};
use tsn_proto::tsn::{ClusterView, PostReply, PostRequest, ProcessKind, ReadRequest, TimelinePost};

use crate::limits::{
    CALL_RETRY_BACKOFF_MAX_MS, CALL_RETRY_BACKOFF_MIN_MS, CALL_RETRY_FOR_MS, CALL_TIMEOUT_MS,
};
use crate::stream::TimelineStream;

/// Failures that say "not now" rather than "no": the client library's one
/// retry rule.
pub use tsn_client::is_retryable as is_transient;

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
    router: Router,
    policy: RetryPolicy,
}

impl Api {
    /// A client of the deployment whose coordinator is at `coord_addr`;
    /// its admin calls (`clusters`) carry `auth`'s secret.
    pub fn new(coord_addr: &str, auth: &ClusterAuth) -> Api {
        let coord = match CoordClient::with_auth(coord_addr, auth) {
            Ok(c) => c,
            Err(e) => panic!("bad coordinator address {coord_addr:?}: {e:#}"),
        };
        let router = Router::new(coord.clone(), RouterConfig::per_user(CALL_TIMEOUT_MS));
        Api {
            coord,
            router,
            policy: RetryPolicy {
                backoff_min_ms: CALL_RETRY_BACKOFF_MIN_MS,
                backoff_max_ms: CALL_RETRY_BACKOFF_MAX_MS,
                attempt_timeout_ms: CALL_TIMEOUT_MS,
                retry_for: Some(Duration::from_millis(CALL_RETRY_FOR_MS)),
            },
        }
    }

    /// The same client, retrying transient failures for `retry_for`
    /// (zero: never retry, see every failure).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Api {
        self.policy.retry_for = Some(retry_for);
        self
    }

    pub fn coord(&self) -> &CoordClient {
        &self.coord
    }

    /// `host:port` of the primary serving `user`, as the router finds it.
    pub async fn server_of(&self, user: u32) -> Result<String, Status> {
        self.call(user, |route| async move { Ok(route.addr) }).await
    }

    /// The coordinator's view of every cluster (an admin call: it goes to
    /// the coordinator, not to a user's primary).
    pub async fn clusters(&self) -> Result<Vec<ClusterView>, Status> {
        self.call_coordinator(|| self.coord.clusters()).await
    }

    /// The server id and address of `cluster`'s primary, as the
    /// coordinator sees it; `None` while the cluster has none.
    pub async fn primary_of(&self, cluster: u32) -> Result<Option<(u32, String)>, Status> {
        let views = self.clusters().await?;
        Ok(primary_in(&views, cluster))
    }

    pub async fn login(&self, user: u32) -> Result<String, Status> {
        self.call(user, |route| async move {
            let reply = route.sns().login(request(user, &[])).await?.into_inner();
            Ok(reply.msg)
        })
        .await
    }

    pub async fn list(&self, user: u32) -> Result<Listing, Status> {
        self.call(user, |route| async move {
            let raw = route.sns().list(request(user, &[])).await?.into_inner();
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
        self.call(user, |route| async move {
            let reply = route.sns().follow(request(user, &[target])).await?;
            Ok(reply.into_inner().msg)
        })
        .await
    }

    /// UNFOLLOW `target`; returns the reply's `msg`.
    pub async fn unfollow(&self, user: u32, target: &str) -> Result<String, Status> {
        self.call(user, |route| async move {
            let reply = route.sns().un_follow(request(user, &[target])).await?;
            Ok(reply.into_inner().msg)
        })
        .await
    }

    /// `Posts.Post`; a retry sends the same `post_id`, which stores nothing
    /// new, so retrying is safe.
    pub async fn post(&self, user: u32, post_id: &str, text: &str) -> Result<PostReply, Status> {
        self.call(user, |route| async move {
            let req = PostRequest {
                user,
                post_id: post_id.to_string(),
                text: text.to_string(),
            };
            Ok(route.posts().post(req).await?.into_inner())
        })
        .await
    }

    /// `Posts.Read`: the last `limit` posts of `user`'s timeline, newest
    /// first.
    pub async fn read(&self, user: u32, limit: u32) -> Result<Vec<TimelinePost>, Status> {
        self.call(user, |route| async move {
            let reply = route.posts().read(ReadRequest { user, limit }).await?;
            Ok(reply.into_inner().posts)
        })
        .await
    }

    /// Opens `user`'s Timeline stream; the server answers with the last 20
    /// posts, then each new one.
    pub async fn open_timeline(&self, user: u32) -> Result<TimelineStream, Status> {
        self.call(user, |route| {
            TimelineStream::open(SnsServiceClient::new(route.stream_channel()), user)
        })
        .await
    }

    /// Runs `op` on the route of `user` with the harness's retry policy.
    async fn call<T, F, Fut>(&self, user: u32, op: F) -> Result<T, Status>
    where
        F: FnMut(Route) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.router
            .call(user, &self.policy, op)
            .await
            .map_err(tsn_client::CallError::into_status)
    }

    /// Runs an admin call to the coordinator with the same retry rule and
    /// policy (there is no primary to find).
    async fn call_coordinator<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        tsn_client::retry::retry_call(&self.policy, call).await
    }
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
