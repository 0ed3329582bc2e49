//! `tsn_client`: the one client library of tsn.
//!
//! Everything that talks to a tsn deployment as a user does goes through
//! here: the `tsn_client` binary, the test harness, the benchmark, and any
//! gateway. So there is one answer to each of these questions:
//!
//! * where a user's calls go: [`router::Router`] finds the primary of the
//!   user's cluster through the coordinator and reconnects after a
//!   failover;
//! * which failures are retried, and how long to wait:
//!   [`retry::is_retryable`] and [`retry::RetryPolicy`] (waits from
//!   `tsn_cluster::retry::Backoff`);
//! * how a timeline stream resumes after a failover without a post twice or
//!   one skipped: [`watch::TimelineWatch`];
//! * how a post is stored exactly once: its id ([`post::new_post_id`]) and
//!   the pending-post file ([`pending::PendingStore`]).

pub mod error;
pub mod limits;
mod lock;
pub mod pending;
pub mod post;
pub mod post_text;
pub mod reply;
pub mod retry;
pub mod route;
pub mod router;
pub mod session;
pub mod watch;

use std::time::Duration;

use tsn_cluster::coord::CoordClient;

pub use error::{status_text, CallError, Stage};
pub use retry::{is_retryable, RetryPolicy};
pub use route::Route;
pub use router::{Router, RouterConfig};
pub use watch::{Event, TimelineWatch};

/// A router for one person's client: one connection to the primary, the
/// user logged in on each new primary as the classic protocol asks.
pub fn user_router(coord: CoordClient) -> Router {
    Router::new(
        coord,
        RouterConfig {
            lanes: 1,
            call_timeout_ms: limits::SERVER_CALL_TIMEOUT_MS,
            login: true,
            clusters: None,
        },
    )
}

/// How a person's client retries: for `retry_for` (`None`: for as long as
/// the caller waits).
pub fn user_policy(retry_for: Option<Duration>) -> RetryPolicy {
    RetryPolicy {
        backoff_min_ms: limits::RETRY_BACKOFF_START_MS,
        backoff_max_ms: limits::RETRY_BACKOFF_MAX_MS,
        attempt_timeout_ms: limits::SERVER_CALL_TIMEOUT_MS,
        retry_for,
    }
}
