//! The one retry rule of every tsn client: which failures are worth another
//! attempt, and how long to wait before it.
//!
//! The waits come from [`tsn_cluster::retry::Backoff`]; [`Retry`] is pure
//! (the clock is passed in), so the rule is tested without a network.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tsn_cluster::retry::Backoff;

/// Whether another attempt of the same call may succeed.
///
/// Retryable are the failures a failover, a restart or a busy machine
/// explain, which pass by themselves:
/// * `UNAVAILABLE`: no primary yet, a secondary or a fenced old primary
///   refusing, a connection refused;
/// * `DEADLINE_EXCEEDED` and `CANCELLED`: a call cut short by a time limit
///   or by a connection that died under it;
/// * `UNKNOWN`: how tonic reports a connection reset in the middle of a
///   call;
/// * `RESOURCE_EXHAUSTED`: the primary's write queue is full ("server
///   busy; retry"). A user wants the post to go through once the burst is
///   written, not to be told to send it again by hand; the backoff keeps the
///   retries from adding to the load, and the caller's time limit still
///   ends them. A full disk is `RESOURCE_EXHAUSTED` too, but the server
///   marks it final ([`tsn_cluster::refusal`]): it passes only when an
///   operator frees space, so the user is told at once.
///
/// Everything else is the server's final answer about the request itself
/// (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`, …) or a fault
/// that a repeat would only hit again (`INTERNAL`: the server could not
/// read its own files). Every call the clients make is safe to repeat: a
/// post carries its own id, which the server stores once.
pub fn is_retryable(status: &Status) -> bool {
    if tsn_cluster::refusal::is_final_refusal(status) {
        return false;
    }
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// How one kind of caller retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause after a failed attempt; it doubles after each one.
    pub backoff_min_ms: u64,
    /// The longest pause between two attempts.
    pub backoff_max_ms: u64,
    /// The time limit of one attempt: finding the primary and the call.
    pub attempt_timeout_ms: u64,
    /// How long to keep retrying from the first attempt (`None`: until the
    /// caller stops waiting).
    pub retry_for: Option<Duration>,
}

impl RetryPolicy {
    /// A fresh backoff with this policy's bounds.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min_ms, self.backoff_max_ms)
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this pause.
    Wait(Duration),
    /// A retryable failure, but the time is up.
    GiveUp { waited: Duration },
    /// The failure is a final answer.
    Final,
}

/// The retry state of one call.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    started: Instant,
    retry_for: Option<Duration>,
}

impl Retry {
    pub fn new(policy: &RetryPolicy, now: Instant) -> Retry {
        Retry {
            backoff: policy.backoff(),
            started: now,
            retry_for: policy.retry_for,
        }
    }

    /// Decides after an attempt that failed with `status` at `now`. The
    /// pause never goes past the time limit.
    pub fn after(&mut self, status: &Status, now: Instant) -> Next {
        if !is_retryable(status) {
            return Next::Final;
        }
        let waited = now.saturating_duration_since(self.started);
        let delay = self.backoff.next_delay();
        match self.retry_for {
            Some(limit) if waited >= limit => Next::GiveUp { waited },
            Some(limit) => Next::Wait(delay.min(limit - waited)),
            None => Next::Wait(delay),
        }
    }
}

/// Runs `call`, which needs no route (an admin call to the coordinator),
/// until it succeeds, fails for good, or `policy` gives up; then the last
/// status is the answer.
pub async fn retry_call<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut retry = Retry::new(policy, Instant::now());
    let attempt_timeout = Duration::from_millis(policy.attempt_timeout_ms);
    loop {
        let status = match tokio::time::timeout(attempt_timeout, call()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!(
                "no answer within {} ms",
                policy.attempt_timeout_ms
            )),
        };
        match retry.after(&status, Instant::now()) {
            Next::Wait(delay) => tokio::time::sleep(delay).await,
            Next::GiveUp { .. } | Next::Final => return Err(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_for_ms: Option<u64>) -> RetryPolicy {
        RetryPolicy {
            backoff_min_ms: 10,
            backoff_max_ms: 40,
            attempt_timeout_ms: 1_000,
            retry_for: retry_for_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn failover_and_busy_statuses_are_retryable() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::ResourceExhausted,
        ] {
            assert!(is_retryable(&Status::new(code, "x")), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::OutOfRange,
            Code::Internal,
        ] {
            assert!(!is_retryable(&Status::new(code, "x")), "{code:?}");
        }
        let disk_full = tsn_cluster::refusal::final_refusal(
            Status::resource_exhausted("disk full"),
            "disk-full",
        );
        assert!(!is_retryable(&disk_full));
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let t0 = Instant::now();
        let mut r = Retry::new(&policy(None), t0);
        let busy = Status::unavailable("no primary");
        let got: Vec<Next> = (0..4).map(|_| r.after(&busy, t0)).collect();
        let ms = |n| Next::Wait(Duration::from_millis(n));
        assert_eq!(got, vec![ms(10), ms(20), ms(40), ms(40)]);
    }

    #[test]
    fn final_answers_are_not_retried() {
        let t0 = Instant::now();
        let mut r = Retry::new(&policy(None), t0);
        assert_eq!(r.after(&Status::invalid_argument("long"), t0), Next::Final);
        assert_eq!(r.after(&Status::internal("disk"), t0), Next::Final);
    }

    #[test]
    fn the_time_limit_ends_retries_and_clips_the_last_pause() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Retry::new(&policy(Some(25)), t0);
        let busy = Status::resource_exhausted("busy");
        assert_eq!(r.after(&busy, t0), Next::Wait(ms(10)));
        assert_eq!(r.after(&busy, t0 + ms(10)), Next::Wait(ms(15)));
        assert_eq!(r.after(&busy, t0 + ms(25)), Next::GiveUp { waited: ms(25) });
        // No time at all: the first failure is the answer.
        let mut r = Retry::new(&policy(Some(0)), t0);
        assert_eq!(r.after(&busy, t0), Next::GiveUp { waited: ms(0) });
    }
}
