//! One post, sent as a careful client sends it, through the client
//! library: to the primary the coordinator names, retried with the *same*
//! post id on a failure the library's retry rule calls "not now"
//! (UNAVAILABLE while a failover is under way, a timeout, a busy server),
//! so that it is stored exactly once however often it is sent. What it took is recorded as an [`Ack`] or a [`Failure`].
//!
//! The Redis baseline's posts go through the same loads and records
//! ([`Via::Redis`]): one try each, since the baseline measures no failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tsn_client::RetryPolicy;
use tsn_proto::tsn::PostRequest;

use crate::baseline::posts::RedisPosts;
use crate::ids::{post_id, post_text};
use crate::limits::{
    POST_CALL_TIMEOUT_MS, POST_RETRY_BACKOFF_MAX_MS, POST_RETRY_BACKOFF_MIN_MS, POST_RETRY_FOR_MS,
};
use crate::record::{Ack, Clock, Failure, Records};
use crate::route::Router;

/// Where posts go.
pub enum Via {
    /// tsn (or the echo server), through the client library.
    Tsn(Arc<Router>),
    /// The Redis baseline's primary.
    Redis(Arc<RedisPosts>),
}

/// The cluster every Redis post counts in: the baseline is one.
pub const REDIS_CLUSTER: u32 = 1;

/// What every poster of a phase shares.
pub struct Poster {
    pub via: Via,
    pub records: Arc<Records>,
    pub clock: Clock,
    pub run: String,
}

/// How one post is retried, as a client waiting for a failover would.
pub const POST_POLICY: RetryPolicy = RetryPolicy {
    backoff_min_ms: POST_RETRY_BACKOFF_MIN_MS,
    backoff_max_ms: POST_RETRY_BACKOFF_MAX_MS,
    attempt_timeout_ms: POST_CALL_TIMEOUT_MS,
    retry_for: Some(Duration::from_millis(POST_RETRY_FOR_MS)),
};

impl Poster {
    /// Sends post `n` by `author` (due at `due_us`) on connection `lane`
    /// until it is acknowledged or given up on, and records which.
    pub async fn post(&self, n: u64, author: u32, due_us: u64, lane: usize) {
        match &self.via {
            Via::Tsn(router) => self.post_tsn(router, n, author, due_us, lane).await,
            Via::Redis(redis) => self.post_redis(redis, n, author, due_us, lane).await,
        }
    }

    async fn post_redis(&self, redis: &RedisPosts, n: u64, author: u32, due_us: u64, lane: usize) {
        let id = post_id(&self.run, author, n);
        let text = post_text(n);
        let sent_us = self.clock.us(Instant::now());
        match redis.post(lane, author, &id, &text).await {
            Ok(()) => self.records.ack(Ack {
                n,
                author,
                cluster: REDIS_CLUSTER,
                due_us,
                sent_us,
                acked_us: self.clock.now_us(),
                server: 0,
                tries: 1,
            }),
            Err(message) => self.records.fail(Failure {
                n,
                author,
                code: "Redis".into(),
                message,
            }),
        }
    }

    async fn post_tsn(&self, router: &Router, n: u64, author: u32, due_us: u64, lane: usize) {
        let id = post_id(&self.run, author, n);
        let text = post_text(n);
        let sent_us = self.clock.us(Instant::now());
        let mut tries: u32 = 0;
        let result = router
            .client()
            .call(author, &POST_POLICY, |route| {
                tries += 1;
                let req = PostRequest {
                    user: author,
                    post_id: id.clone(),
                    text: text.clone(),
                };
                async move {
                    route.posts_on(lane).post(req).await?;
                    Ok(route.addr)
                }
            })
            .await;
        match result {
            Ok(addr) => self.records.ack(Ack {
                n,
                author,
                cluster: router.cluster_of(author),
                due_us,
                sent_us,
                acked_us: self.clock.now_us(),
                server: router.server_index(&addr),
                tries,
            }),
            Err(error) => {
                let status = error.into_status();
                self.records.fail(Failure {
                    n,
                    author,
                    code: format!("{:?}", status.code()),
                    message: status.message().to_string(),
                });
            }
        }
    }
}
