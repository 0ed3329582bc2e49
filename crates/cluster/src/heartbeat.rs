//! The heartbeat loop of servers and sync services.
//!
//! Every `interval_ms` it tells the coordinator who this process is and how
//! far its journal goes, and publishes the reply. A server reads its role
//! from the reply; a primary's lease is counted from `confirmed_at`, the
//! moment the confirming heartbeat was *sent* (not received), so the lease
//! always ends before the coordinator's failure timeout can.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tsn_proto::tsn::{HeartbeatReply, HeartbeatRequest, ProcessKind, Role};

use crate::coord::CoordClient;
use crate::shutdown::Shutdown;

#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_id: u32,
    pub server_id: u32,
    pub kind: ProcessKind,
    pub address: String,
    pub requested_role: Role,
}

/// What this process last heard from the coordinator.
#[derive(Clone, Debug, Default)]
pub struct Heard {
    pub reply: Option<HeartbeatReply>,
    /// When the heartbeat that got `reply` was sent.
    pub confirmed_at: Option<Instant>,
}

/// The journal position a server reports: (epoch, last_seq, last_epoch).
pub type Progress = Box<dyn Fn() -> (u64, u64, u64) + Send + Sync>;

/// Starts the loop; the receiver always holds the latest reply.
pub fn spawn(
    coord: CoordClient,
    me: Identity,
    interval_ms: u64,
    progress: Progress,
    mut shutdown: Shutdown,
) -> watch::Receiver<Heard> {
    let (tx, rx) = watch::channel(Heard::default());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = crate::retry::FailureLog::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = shutdown.wait() => return,
            }
            let (epoch, last_seq, last_epoch) = progress();
            let req = HeartbeatRequest {
                cluster_id: me.cluster_id,
                server_id: me.server_id,
                kind: me.kind as i32,
                address: me.address.clone(),
                requested_role: me.requested_role as i32,
                epoch,
                last_seq,
                last_epoch,
            };
            let sent = Instant::now();
            match coord.heartbeat(req).await {
                Ok(reply) => {
                    if failures.succeeded() {
                        tracing::info!(coordinator = coord.addr(), "coordinator reachable again");
                    }
                    tx.send_replace(Heard {
                        reply: Some(reply),
                        confirmed_at: Some(sent),
                    });
                }
                Err(status) => {
                    // Said once, then every so many failures, not every beat.
                    if failures.failed() {
                        tracing::warn!(
                            coordinator = coord.addr(),
                            failures = failures.failures(),
                            error = %status.message(),
                            "heartbeat failed"
                        );
                    }
                }
            }
        }
    });
    rx
}
