//! Stopping a deployment the way Ctrl-C stops `tsn_demo`: the terminal
//! sends SIGINT to every process of the foreground group at once (so the
//! secondaries and the coordinator go while the primaries still have
//! commits waiting for them), then the demo stops what is left. Every
//! process must end by itself within a bound, none may need SIGKILL.
//!
//! Build the binaries first: `cargo build --bins`.

use std::time::{Duration, Instant};

use tsn_harness::wait::try_wait_for;
use tsn_harness::Deployment;

/// The sync services' poll interval, as in `tsn_demo`.
const Q_MS: u64 = 500;
/// How long every process may take to end after SIGINT: the servers'
/// one-second grace for running requests, plus room for a loaded machine.
const STOP_BOUND_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_every_process_within_the_bound() {
    let mut d = Deployment::start(3, 1, Q_MS).await;
    let api = d.api().with_retry_for(Duration::ZERO);
    for u in 1..=3 {
        assert_eq!(api.login(u).await.unwrap(), "SUCCESS");
    }
    // Writers keep commits in flight while everything stops.
    let mut writers = Vec::new();
    for u in 1..=3u32 {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let _ = api.post(u, &format!("{u}-w{n}"), "busy").await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let members = d.members();
    let start = Instant::now();
    for m in &members {
        let pid = d.member(*m).pid().expect("running") as i32;
        // SAFETY: a plain kill(2) of a child this test started.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let mut late = Vec::new();
    let mut codes = Vec::new();
    for m in &members {
        let ended = try_wait_for(
            Duration::from_millis(STOP_BOUND_MS).saturating_sub(start.elapsed()),
            || {
                let running = d.member(*m).is_running();
                async move {
                    if running {
                        Err("still running".to_string())
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        if ended.is_err() {
            late.push(*m);
        }
        codes.push((*m, d.member(*m).exit_code()));
    }
    for w in writers {
        w.abort();
    }
    // What the demo does next; nothing is left for it to stop.
    d.stop_all().await;
    assert!(
        late.is_empty(),
        "still running {STOP_BOUND_MS} ms after SIGINT: {late:?}\n{}",
        d.log_tails()
    );
    let killed: Vec<_> = codes.iter().filter(|(_, c)| c.is_none()).collect();
    // Each ended by itself (a process killed by a signal has no exit code).
    assert!(
        killed.is_empty(),
        "ended by a signal, not by themselves: {killed:?}"
    );
}
