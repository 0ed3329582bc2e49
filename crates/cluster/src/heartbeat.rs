//! The heartbeat loop of servers and sync services.
//!
//! Every `interval_ms` it tells the coordinator who this process is and how
//! far its journal goes, and publishes the reply. A server reads its role
//! from the reply; a primary's lease is counted from `confirmed_at`, the
//! moment the confirming heartbeat was *sent* (not received), so the lease
//! always ends before the coordinator's failure timeout can.
//!
//! The loop runs on a thread and a runtime of its own, with its own
//! connection: however busy the process's other threads are (a disk that
//! takes its time with an fsync, a flood of client requests), its heartbeats
//! leave on time — a process that is alive must not look dead. Beats do not
//! wait for each other: each is sent on schedule with its own time limit,
//! and a reply older than one already published is dropped.
//!
//! Every reply, in order or not, is also a sample of the coordinator's
//! clock for this process's cluster time ([`crate::clock`]): the loop
//! feeds it with the beat's send and receipt instants, and each beat says
//! whether that time is within the process's bound (`clock_unbounded`),
//! which the coordinator needs before it makes a server primary.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tsn_proto::tsn::{HeartbeatReply, HeartbeatRequest, ProcessKind, Role};

use crate::auth::ClusterAuth;
use crate::clock::{Sample, SharedClock};
use crate::coord::CoordClient;
use crate::retry::FailureLog;
use crate::shutdown::Shutdown;

/// Most heartbeats waiting for a reply at once; a beat due while this many
/// are out is skipped (the coordinator is not answering anyway).
const IN_FLIGHT_MAX_BEATS: usize = 4;
/// Time limit of one heartbeat, in heartbeat intervals.
const CALL_TIMEOUT_INTERVALS: u32 = 4;

#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_id: u32,
    pub server_id: u32,
    pub kind: ProcessKind,
    pub address: String,
    pub requested_role: Role,
    /// host:port of a server's MP3 variant listener (empty: none).
    pub mp3_address: String,
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

/// Starts the loop on its own thread; the receiver always holds the latest
/// reply. Fails only if the thread cannot be started.
pub fn spawn(
    coordinator: &str,
    auth: &ClusterAuth,
    me: Identity,
    interval_ms: u64,
    progress: Progress,
    clock: SharedClock,
    shutdown: Shutdown,
) -> anyhow::Result<watch::Receiver<Heard>> {
    assert!(interval_ms >= 1, "the heartbeat interval must be positive");
    let (tx, rx) = watch::channel(Heard::default());
    let coordinator = coordinator.to_string();
    // Checked here, so that a bad address is an error of the caller.
    CoordClient::with_auth(&coordinator, auth)?;
    let auth = auth.clone();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the heartbeat runtime cannot start");
                    return;
                }
            };
            runtime.block_on(beat(
                coordinator,
                auth,
                me,
                interval_ms,
                progress,
                clock,
                shutdown,
                tx,
            ));
        })?;
    Ok(rx)
}

#[allow(clippy::too_many_arguments)]
async fn beat(
    coordinator: String,
    auth: ClusterAuth,
    me: Identity,
    interval_ms: u64,
    progress: Progress,
    clock: SharedClock,
    mut shutdown: Shutdown,
    tx: watch::Sender<Heard>,
) {
    // Created on this runtime, so its connection is driven by this thread.
    let coord = match CoordClient::with_auth(&coordinator, &auth) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no heartbeats: bad coordinator address");
            return;
        }
    };
    let interval = Duration::from_millis(interval_ms);
    let call_timeout = interval * CALL_TIMEOUT_INTERVALS;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (done_tx, mut done_rx) = mpsc::channel(IN_FLIGHT_MAX_BEATS);
    let mut in_flight = 0usize;
    let mut failures = FailureLog::default();
    let mut out_of_files = FailureLog::default();
    let mut newest_published: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if in_flight >= IN_FLIGHT_MAX_BEATS {
                    continue;
                }
                // A process out of descriptors cannot serve (it cannot open
                // its files): it stops claiming it can, so that the
                // coordinator fails over instead of trusting its beats.
                if let Err(e) = can_open_files() {
                    if out_of_files.failed() {
                        tracing::error!(error = %e, "cannot open files; heartbeats stop until it can");
                    }
                    continue;
                }
                if out_of_files.succeeded() {
                    tracing::info!("files can be opened again; heartbeats resume");
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
                    mp3_address: me.mp3_address.clone(),
                    clock_unbounded: !clock.within_bound(),
                };
                let coord = coord.clone();
                let done = done_tx.clone();
                in_flight += 1;
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let result = match tokio::time::timeout(call_timeout, coord.heartbeat(req)).await {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded("no heartbeat reply in time")),
                    };
                    let received = Instant::now();
                    let _ = done.send((sent, received, result)).await;
                });
            }
            Some((sent, received, result)) = done_rx.recv() => {
                in_flight -= 1;
                match result {
                    Ok(reply) => {
                        clock.sample(Sample {
                            sent,
                            received,
                            coordinator_ms: reply.coordinator_time_ms,
                        });
                        if failures.succeeded() {
                            tracing::info!(coordinator = coord.addr(), "coordinator reachable again");
                        }
                        if newest_published.is_none_or(|t| sent > t) {
                            newest_published = Some(sent);
                            tx.send_replace(Heard {
                                reply: Some(reply),
                                confirmed_at: Some(sent),
                            });
                        }
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
            _ = shutdown.wait() => return,
        }
    }
}

/// Descriptors a process must have free to say it can serve: a little
/// work (a journal read, a new client, a peer's channel) needs a few, and a
/// process that has fewer flaps between failing and succeeding as
/// connections come and go.
pub const FD_HEADROOM_MIN: u64 = 16;

/// Whether this process can still open files, with
/// [`FD_HEADROOM_MIN`] descriptors to spare: fails with `EMFILE` (or
/// `ENFILE`) when it cannot open one, and with a clear error when fewer
/// than the headroom are left under its `RLIMIT_NOFILE`.
pub fn can_open_files() -> std::io::Result<()> {
    std::fs::File::open("/dev/null").map(drop)?;
    // Counting needs a descriptor of its own (the directory), so it fails
    // too when there is none.
    let open = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let limit = crate::net::nofile_limit();
    if open.saturating_add(FD_HEADROOM_MIN) > limit {
        return Err(std::io::Error::other(format!(
            "{open} of {limit} descriptors open, fewer than {FD_HEADROOM_MIN} free"
        )));
    }
    Ok(())
}
