//! The failure detector: a loop that looks at every process each tick,
//! logs liveness transitions and promotes a secondary when a primary has
//! been silent for longer than the failure timeout.
//!
//! The decisions live in [`crate::control::ControlPlane::tick`]; this file only
//! drives it with the clock until shutdown.

use std::time::{Duration, Instant};

use tsn_cluster::shutdown::Shutdown;

use crate::service::{lock, Shared};

pub async fn run(state: Shared, tick: Duration, mut shutdown: Shutdown) {
    assert!(!tick.is_zero());
    let mut interval = tokio::time::interval(tick);
    // After a stall, look once rather than catching up tick by tick.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => return,
        }
        lock(&state).tick(Instant::now());
    }
}
