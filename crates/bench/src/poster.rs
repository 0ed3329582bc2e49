//! One post, sent as a careful client sends it: to the primary the
//! coordinator names, retried with the *same* post id on a failure that
//! says "not now" (UNAVAILABLE while a failover is under way, a timeout, a
//! busy server), so that it is stored exactly once however often it is
//! sent. What it took is recorded as an [`Ack`] or a [`Failure`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tsn_cluster::retry::Backoff;
use tsn_proto::tsn::PostRequest;

use crate::ids::{post_id, post_text};
use crate::limits::{
    POST_CALL_TIMEOUT_MS, POST_RETRY_BACKOFF_MAX_MS, POST_RETRY_BACKOFF_MIN_MS, POST_RETRY_FOR_MS,
};
use crate::record::{Ack, Clock, Failure, Records};
use crate::route::Router;

/// What every poster of a phase shares.
pub struct Poster {
    pub router: Arc<Router>,
    pub records: Arc<Records>,
    pub clock: Clock,
    pub run: String,
}

/// Failures that a retry of the same post may cure.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// The pauses between tries of one post.
pub fn backoff() -> Backoff {
    Backoff::new(POST_RETRY_BACKOFF_MIN_MS, POST_RETRY_BACKOFF_MAX_MS)
}

impl Poster {
    /// Sends post `n` by `author` (due at `due_us`) on connection `lane`
    /// until it is acknowledged or given up on, and records which.
    pub async fn post(&self, n: u64, author: u32, due_us: u64, lane: usize) {
        let id = post_id(&self.run, author, n);
        let text = post_text(n);
        let started = Instant::now();
        let sent_us = self.clock.us(started);
        let mut tries: u32 = 0;
        let mut backoff = backoff();
        loop {
            tries += 1;
            let attempt = async {
                let route = self.router.route(author).await?;
                let req = PostRequest {
                    user: author,
                    post_id: id.clone(),
                    text: text.clone(),
                };
                let result = tokio::time::timeout(
                    Duration::from_millis(POST_CALL_TIMEOUT_MS),
                    route.client(lane).post(req),
                )
                .await;
                match result {
                    Ok(Ok(_)) => Ok(route.server),
                    Ok(Err(status)) => {
                        self.router.forget(author, &route.addr);
                        Err(status)
                    }
                    Err(_) => {
                        self.router.forget(author, &route.addr);
                        Err(Status::deadline_exceeded("the post's call timeout"))
                    }
                }
            };
            let status = match attempt.await {
                Ok(server) => {
                    self.records.ack(Ack {
                        n,
                        author,
                        cluster: self.router.cluster_of(author),
                        due_us,
                        sent_us,
                        acked_us: self.clock.now_us(),
                        server,
                        tries,
                    });
                    return;
                }
                Err(status) => status,
            };
            let pause = backoff.next_delay();
            let out_of_time = started.elapsed() + pause >= Duration::from_millis(POST_RETRY_FOR_MS);
            if !is_retryable(&status) || out_of_time {
                self.records.fail(Failure {
                    n,
                    author,
                    code: format!("{:?}", status.code()),
                    message: status.message().to_string(),
                });
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = backoff();
        assert_eq!(
            b.next_delay(),
            Duration::from_millis(POST_RETRY_BACKOFF_MIN_MS)
        );
        assert_eq!(
            b.next_delay(),
            Duration::from_millis(2 * POST_RETRY_BACKOFF_MIN_MS)
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(
            b.next_delay(),
            Duration::from_millis(POST_RETRY_BACKOFF_MAX_MS)
        );
    }

    #[test]
    fn only_not_now_failures_are_retried() {
        assert!(is_retryable(&Status::unavailable("no primary")));
        assert!(is_retryable(&Status::resource_exhausted("busy")));
        assert!(is_retryable(&Status::unknown("connection reset")));
        assert!(!is_retryable(&Status::invalid_argument("bad id")));
        assert!(!is_retryable(&Status::failed_precondition("not logged in")));
    }
}
