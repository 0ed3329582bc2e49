//! The primary's side of mirroring: one task per live secondary sends it
//! every journal entry it lacks (`Replica.Append`), in order.
//!
//! The same loop does the live mirroring and the catch-up of a secondary
//! that was down: it starts from whatever the secondary says it has. A
//! secondary that has everything is added to the in-sync set (through the
//! coordinator); one that stops answering is dropped from it (through the
//! coordinator, before any commit goes on without it), so a write is
//! acknowledged only once it is on every secondary that could be promoted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tsn_cluster::retry::{Backoff, FailureLog};
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::{AppendRequest, InSyncChange, JournalEntry, Peer};

use crate::commit::{ExpandAnswer, ExpandStep};
use crate::node::{lock, Node, Role};

/// Most entries in one Append.
pub const APPEND_MAX_ENTRIES: usize = 512;
/// Most bytes of entries in one Append.
pub const APPEND_MAX_BYTES: usize = 4 * 1024 * 1024;
const RETRY_BACKOFF_MIN_MS: u64 = 20;
const RETRY_BACKOFF_MAX_MS: u64 = 1_000;

/// A running replication task: the secondary's address, the epoch it
/// mirrors for, and the task.
type Task = (String, u64, JoinHandle<()>);

/// The running replication tasks, by secondary id.
#[derive(Default)]
pub struct Replicators {
    tasks: Mutex<HashMap<u32, Task>>,
}

impl Replicators {
    /// Makes the set of tasks match the coordinator's list of live
    /// secondaries for this epoch.
    pub fn sync(&self, node: &Arc<Node>, epoch: u64, peers: &[Peer]) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|id, (addr, e, handle)| {
            let keep = *e == epoch
                && !handle.is_finished()
                && peers
                    .iter()
                    .any(|p| p.server_id == *id && p.address == *addr);
            if !keep {
                handle.abort();
            }
            keep
        });
        for p in peers {
            if p.server_id == node.server_id || tasks.contains_key(&p.server_id) {
                continue;
            }
            let handle = tokio::spawn(replicate(
                node.clone(),
                p.server_id,
                p.address.clone(),
                epoch,
            ));
            tasks.insert(p.server_id, (p.address.clone(), epoch, handle));
        }
    }

    pub fn stop_all(&self) {
        for (_, (_, _, h)) in lock(&self.tasks).drain() {
            h.abort();
        }
    }
}

async fn replicate(node: Arc<Node>, peer_id: u32, address: String, epoch: u64) {
    let client = match node.auth.channel(&address, node.mirror_timeout_ms) {
        Ok(ch) => ReplicaClient::new(ch)
            .max_decoding_message_size(tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(tsn_cluster::limits::GRPC_MESSAGE_MAX_BYTES),
        Err(e) => {
            tracing::warn!(peer = peer_id, error = %e, "cannot mirror to this secondary");
            return;
        }
    };
    tracing::info!(peer = peer_id, %address, epoch, "mirroring to secondary");
    let mut appended = node.subscribe_appended();
    let keepalive = Duration::from_millis(node.heartbeat_interval_ms.max(10));
    // What the secondary has; None until it tells us.
    let mut known: Option<u64> = None;
    let mut backoff = Backoff::new(RETRY_BACKOFF_MIN_MS, RETRY_BACKOFF_MAX_MS);
    let mut failures = FailureLog::default();
    loop {
        let view = node.role();
        if view.role != Role::Primary || view.epoch != epoch {
            return;
        }
        // Written, maybe not fsynced yet: see `Node::note_written`.
        let local = node.written_seq();
        let prev = known.unwrap_or(local);
        let entries: Vec<JournalEntry> = if prev < local {
            node.journal_lines(prev, APPEND_MAX_ENTRIES, APPEND_MAX_BYTES)
                .iter()
                .map(JournalEntry::from)
                .collect()
        } else {
            Vec::new()
        };
        let sent_entries = entries.len();
        let req = AppendRequest {
            epoch,
            primary_id: node.server_id,
            prev_seq: prev,
            entries,
            commit_seq: node.commit_seq(),
        };
        let sent_at = Instant::now();
        match client.clone().append(req).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if failures.succeeded() {
                    tracing::info!(peer = peer_id, "secondary answers again");
                }
                known = Some(reply.last_seq);
                if reply.ok {
                    backoff.reset();
                    node.with_commit(|c| {
                        if reply.coordinator_heard {
                            c.peer_acked_without_lease(peer_id, reply.last_seq);
                        } else {
                            c.peer_acked(peer_id, reply.last_seq, sent_at);
                        }
                    });
                    maybe_expand(&node, peer_id, epoch, reply.last_seq).await;
                    if sent_entries > 0 {
                        continue; // more to send, maybe
                    }
                } else if reply.epoch > epoch {
                    tracing::warn!(
                        peer = peer_id,
                        peer_epoch = reply.epoch,
                        epoch,
                        "a secondary knows a newer epoch: this server is no longer primary"
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                } else {
                    // Not ready (reconciling) or at another position:
                    // start again from where it is.
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            Err(status) => {
                if failures.failed() {
                    tracing::warn!(
                        peer = peer_id,
                        failures = failures.failures(),
                        error = %status.message(),
                        "mirroring failed"
                    );
                }
                known = None;
                shrink(&node, peer_id, epoch).await;
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        // Caught up: wait for new entries, or send a keep-alive that also
        // renews the lease.
        let _ = tokio::time::timeout(keepalive, appended.changed()).await;
    }
}

/// Adds a caught-up secondary to the in-sync set: see
/// [`crate::commit::CommitTracker::offer_expand`] for the two steps.
async fn maybe_expand(node: &Arc<Node>, peer_id: u32, epoch: u64, acked: u64) {
    let step = node.with_commit(|c| c.offer_expand(peer_id, acked, APPEND_MAX_ENTRIES as u64));
    if step == ExpandStep::Wait {
        return;
    }
    let answer = match change_in_sync(node, epoch, peer_id, true).await {
        Ok(reply) if reply.ok => {
            tracing::info!(peer = peer_id, "secondary caught up: now in sync");
            ExpandAnswer::Added(reply.in_sync)
        }
        Ok(_) => ExpandAnswer::Refused,
        Err(e) => {
            tracing::warn!(peer = peer_id, error = %e.message(), "adding to the in-sync set failed");
            ExpandAnswer::Failed
        }
    };
    node.with_commit(|c| c.expand_answered(peer_id, answer, Instant::now()));
}

/// Drops a secondary that stopped answering from the in-sync set. Commits
/// go on without it only once the coordinator has agreed, so it can no
/// longer be promoted.
async fn shrink(node: &Arc<Node>, peer_id: u32, epoch: u64) {
    let in_sync = node.with_commit(|c| c.peer_failed(peer_id));
    if !in_sync {
        return;
    }
    match change_in_sync(node, epoch, peer_id, false).await {
        Ok(reply) if reply.ok => {
            node.with_commit(|c| c.dropped(reply.in_sync, Instant::now()));
            tracing::warn!(
                peer = peer_id,
                "secondary dropped from the in-sync set; going on without it"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(peer = peer_id, error = %e.message(), "cannot drop the secondary: the coordinator is unreachable; commits wait");
        }
    }
}

/// Asks the coordinator to add `peer_id` to this epoch's in-sync set, or to
/// drop it.
async fn change_in_sync(
    node: &Node,
    epoch: u64,
    peer_id: u32,
    in_sync: bool,
) -> Result<tsn_proto::tsn::InSyncReply, tonic::Status> {
    let change = InSyncChange {
        cluster_id: node.cluster_id,
        primary_id: node.server_id,
        epoch,
        server_id: peer_id,
        in_sync,
    };
    node.coord.change_in_sync(change).await
}
