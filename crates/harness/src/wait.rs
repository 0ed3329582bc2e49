//! Waiting for a condition, with a deadline and never a fixed sleep.
//!
//! Replicated state converges at its own pace, faster or slower depending
//! on the machine's load. A test that slept a fixed time would be slow on a
//! fast machine and flaky on a slow one; instead it names the condition it
//! waits for and how long it is willing to wait.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::limits::POLL_INTERVAL_MS;

/// Polls `check` every [`POLL_INTERVAL_MS`] until it returns true; panics
/// with `what` if `deadline` passes first. One check that hangs counts
/// against the deadline too.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(deadline, what, || {
        let attempt = check();
        async move {
            if attempt.await {
                Ok(())
            } else {
                Err("condition not met".to_string())
            }
        }
    })
    .await
}

/// Polls `check` until it returns `Ok`, and returns its value; panics with
/// `what` and the last error if `deadline` passes first. The error explains
/// what was seen instead, which is what one needs to read a failure.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_wait_for(deadline, &mut check).await {
        Ok(value) => value,
        Err(last) => panic!(
            "timed out after {} ms waiting for: {what}\nlast seen: {last}",
            deadline.as_millis()
        ),
    }
}

/// Like [`wait_for`] but returns the last error instead of panicking.
pub async fn try_wait_for<T, F, Fut>(deadline: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("never checked");
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(last);
        }
        match tokio::time::timeout(left, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(seen)) => last = seen,
            Err(_) => last = format!("the last check was still running: {last}"),
        }
        let left = deadline.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(POLL_INTERVAL_MS))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let got = wait_for(Duration::from_secs(5), "third call", move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("call {n}"))
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn reports_the_last_error_on_timeout() {
        let got: Result<(), String> = try_wait_for(Duration::from_millis(100), || async {
            Err("still 2 of 3".to_string())
        })
        .await;
        assert_eq!(got, Err("still 2 of 3".to_string()));
    }

    #[tokio::test]
    async fn a_hanging_check_counts_against_the_deadline() {
        let got: Result<(), String> =
            try_wait_for(Duration::from_millis(100), futures_pending).await;
        assert!(got.is_err());
    }

    async fn futures_pending() -> Result<(), String> {
        std::future::pending::<()>().await;
        Ok(())
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50 ms waiting for: nothing")]
    async fn wait_until_panics_with_what() {
        wait_until(Duration::from_millis(50), "nothing", || async { false }).await;
    }
}
