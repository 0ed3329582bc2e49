//! The failure detector: a loop that looks at every process each tick,
//! logs liveness transitions and promotes a secondary when a primary has
//! been silent for longer than the failure timeout.
//!
//! The decisions live in [`crate::control::ControlPlane::tick`]; this file only
//! drives it with the clock until shutdown, and [`serve_while_deciding`]
//! makes sure the coordinator never answers without deciding.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tsn_cluster::shutdown::Shutdown;

use crate::service::Shared;

/// Shortest tick, so that a zero duration cannot spin or panic.
const TICK_MIN_MS: u64 = 1;

pub async fn run(state: Shared, tick: Duration, mut shutdown: Shutdown) {
    let tick = tick.max(Duration::from_millis(TICK_MIN_MS));
    let mut interval = tokio::time::interval(tick);
    // After a stall, look once rather than catching up tick by tick.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => return,
        }
        if let Some(control) = state.control().await.as_mut() {
            control.tick(Instant::now());
        }
    }
}

/// Runs `serve` while the failure detector runs. If the detector ends
/// before shutdown (a panic, which no input should cause, or a return),
/// the coordinator stops with an error, so that the process exits non-zero
/// and its supervisor restarts it: a coordinator that answers heartbeats
/// but never promotes would keep every cluster without failover.
pub async fn serve_while_deciding<F>(
    serve: F,
    mut detector: JoinHandle<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(serve);
    tokio::select! {
        served = &mut serve => {
            served?;
            detector
                .await
                .map_err(|e| anyhow::anyhow!("the failure detector died: {e}"))
        }
        ended = &mut detector => match ended {
            Err(e) => Err(anyhow::anyhow!("the failure detector died: {e}")),
            Ok(()) if !shutdown.is_fired() => {
                Err(anyhow::anyhow!("the failure detector stopped before shutdown"))
            }
            Ok(()) => serve.await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_detector_stops_the_coordinator() {
        let (_trigger, shutdown) = Shutdown::new();
        let detector = tokio::spawn(async { panic!("a bug in the failure detector") });
        let serve = std::future::pending::<anyhow::Result<()>>();
        let e = serve_while_deciding(serve, detector, &shutdown)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("failure detector died"), "{e}");

        let detector = tokio::spawn(async {});
        let serve = std::future::pending::<anyhow::Result<()>>();
        let e = serve_while_deciding(serve, detector, &shutdown)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("before shutdown"), "{e}");
    }

    #[tokio::test]
    async fn a_shutdown_ends_both_cleanly() {
        let (trigger, shutdown) = Shutdown::new();
        let mut stop = shutdown.clone();
        let detector = tokio::spawn(async move { stop.wait().await });
        let mut stop = shutdown.clone();
        let serve = async move {
            stop.wait().await;
            Ok(())
        };
        trigger.fire();
        assert!(serve_while_deciding(serve, detector, &shutdown)
            .await
            .is_ok());
    }
}
