//! The two loads.
//!
//! * Closed loop: `clients` posters, each posting, waiting for the
//!   acknowledgement, and posting again. It finds the highest throughput
//!   the server sustains with that much concurrency.
//! * Open loop: posts due on a schedule at a fixed rate, whatever the
//!   server does. A dedicated thread dispatches them with `nanosleep`
//!   precision (tokio's timer rounds to the millisecond, which would add up
//!   to a millisecond to every latency measured from the scheduled time).
//!
//! Both draw authors uniformly from `authors` and number posts from one
//! counter shared by the whole run, so post ids never repeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tsn_cluster::shutdown::Shutdown;

use crate::cli::ScheduleKind;
use crate::limits::{OPEN_LOOP_IN_FLIGHT_MAX, PHASE_DRAIN_DEADLINE_MS};
use crate::poster::Poster;
use crate::schedule::Schedule;

/// What a load needs besides its own parameters.
#[derive(Clone)]
pub struct LoadCtx {
    pub poster: Arc<Poster>,
    pub authors: Arc<Vec<u32>>,
    /// The next post number of the run.
    pub next_n: Arc<AtomicU64>,
    pub seed: u64,
    pub shutdown: Shutdown,
}

impl LoadCtx {
    fn pick(&self, rng: &mut StdRng) -> (u64, u32) {
        assert!(!self.authors.is_empty());
        let author = self.authors[rng.random_range(0..self.authors.len())];
        (self.next_n.fetch_add(1, Ordering::Relaxed), author)
    }
}

/// Runs `clients` closed-loop posters until `until`; returns once every
/// poster finished its last post (or the drain deadline passed).
pub async fn closed_loop(ctx: &LoadCtx, clients: u32, until: Instant) {
    assert!(clients >= 1);
    let mut tasks = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(ctx.seed.wrapping_add(i as u64));
            while Instant::now() < until && !ctx.shutdown.is_fired() {
                let (n, author) = ctx.pick(&mut rng);
                let due_us = ctx.poster.clock.now_us();
                ctx.poster.post(n, author, due_us, i as usize).await;
            }
        }));
    }
    let drain = until + Duration::from_millis(PHASE_DRAIN_DEADLINE_MS);
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(drain.into(), t).await.is_err() {
            abort.abort();
        }
    }
}

/// Dispatches posts at `rate_per_s` from `start` for `duration`; returns
/// once every post finished (or the drain deadline passed). Returns how
/// many posts were due.
pub async fn open_loop(
    ctx: &LoadCtx,
    rate_per_s: f64,
    kind: ScheduleKind,
    start: Instant,
    duration: Duration,
) -> u64 {
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let handle = tokio::runtime::Handle::current();
    let dispatcher = {
        let ctx = ctx.clone();
        let slots = slots.clone();
        tokio::task::spawn_blocking(move || {
            let mut rng = StdRng::seed_from_u64(ctx.seed);
            let mut schedule = Schedule::new(kind, rate_per_s);
            let mut due_count = 0u64;
            loop {
                let at_s = schedule.next_s(&mut rng);
                if at_s >= duration.as_secs_f64() || ctx.shutdown.is_fired() {
                    return due_count;
                }
                let due = start + Duration::from_secs_f64(at_s);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let Ok(permit) = handle.block_on(slots.clone().acquire_owned()) else {
                    return due_count;
                };
                due_count += 1;
                let (n, author) = ctx.pick(&mut rng);
                let due_us = ctx.poster.clock.us(due);
                let poster = ctx.poster.clone();
                handle.spawn(async move {
                    poster.post(n, author, due_us, n as usize).await;
                    drop(permit);
                });
            }
        })
    };
    let due_count = dispatcher.await.unwrap_or(0);
    // Every slot free again means every post finished.
    let drain = Duration::from_millis(PHASE_DRAIN_DEADLINE_MS);
    let _ = tokio::time::timeout(drain, slots.acquire_many(OPEN_LOOP_IN_FLIGHT_MAX as u32)).await;
    due_count
}
