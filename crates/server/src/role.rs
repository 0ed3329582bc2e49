//! Acting on what the coordinator says: becoming primary (promotion),
//! stepping down (fencing), and reconciling as a secondary.
//!
//! Every heartbeat reply names this server's role and the cluster's epoch.
//! A server that learns it is no longer primary stops taking writes at
//! once; a secondary that learns of a new primary first cuts any journal
//! suffix that primary never had (see [`crate::reconcile`]) and only then
//! accepts its entries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tsn_cluster::heartbeat::Heard;
use tsn_cluster::shutdown::Shutdown;
use tsn_proto::tsn::replica_client::ReplicaClient;
use tsn_proto::tsn::{EpochHistoryRequest, Role as WireRole};

use crate::node::{lock, Node, Role, RoleView};
use crate::replication::Replicators;

/// Most rounds of cutting while reconciling (each round cuts at least one
/// epoch, so this bounds a pathological history).
const RECONCILE_ROUNDS_MAX: usize = 16;
const RECONCILE_CALL_TIMEOUT_MS: u64 = 2_000;

pub async fn follow(
    node: Arc<Node>,
    mut heard: watch::Receiver<Heard>,
    replicators: Arc<Replicators>,
    mut shutdown: Shutdown,
) {
    let mut reconciling: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            r = heard.changed() => if r.is_err() { return },
            _ = shutdown.wait() => return,
        }
        let h = heard.borrow_and_update().clone();
        let (Some(reply), Some(sent_at)) = (h.reply, h.confirmed_at) else {
            continue;
        };
        node.heard_coordinator(sent_at);
        node.set_cluster_count(reply.cluster_count);
        let new_role = match WireRole::try_from(reply.role) {
            Ok(WireRole::Primary) => Role::Primary,
            Ok(WireRole::Secondary) => Role::Secondary,
            _ => Role::Unknown,
        };
        let old = node.role();
        let view = RoleView {
            role: new_role,
            epoch: reply.epoch,
            primary_id: reply.primary_id,
        };
        match new_role {
            Role::Primary => {
                node.confirm_lease(sent_at, reply.failure_timeout_ms as u64);
                let started = old.role != Role::Primary || old.epoch != reply.epoch;
                if started {
                    // The new term's commit point starts from the
                    // coordinator's in-sync set, before any write of it;
                    // its timestamps after the journal's newest.
                    node.start_clock_term();
                    node.with_commit(|c| c.start_term(&reply.in_sync));
                } else {
                    node.with_commit(|c| c.heard_in_sync(&reply.in_sync, sent_at));
                }
                node.set_role(view);
                if started {
                    if let Some(r) = reconciling.take() {
                        r.abort();
                    }
                    tracing::info!(
                        epoch = reply.epoch,
                        last_seq = node.last_seq(),
                        "this server is now the primary of cluster {}",
                        node.cluster_id
                    );
                }
                replicators.sync(&node, reply.epoch, &reply.secondaries);
            }
            Role::Secondary | Role::Unknown => {
                if old.role == Role::Primary {
                    tracing::warn!(
                        epoch = reply.epoch,
                        primary = reply.primary_id,
                        "this server is no longer the primary: it refuses writes from now on"
                    );
                    replicators.stop_all();
                    node.with_commit(|c| c.end_term());
                }
                node.set_role(view);
                let target = (reply.epoch, reply.primary_id);
                let done = *lock(&node.reconciled) == Some(target);
                let busy = reconciling.as_ref().is_some_and(|r| !r.is_finished());
                if new_role == Role::Secondary && reply.primary_id != 0 && !done && !busy {
                    reconciling = Some(tokio::spawn(reconcile(
                        node.clone(),
                        target,
                        reply.primary_address.clone(),
                    )));
                }
            }
        }
    }
}

/// Cuts what this server holds beyond the primary's history, then marks it
/// ready to take that primary's entries.
async fn reconcile(node: Arc<Node>, target: (u64, u32), primary_address: String) {
    let Ok(ch) = node
        .auth
        .channel(&primary_address, RECONCILE_CALL_TIMEOUT_MS)
    else {
        return;
    };
    let history = match ReplicaClient::new(ch)
        .epoch_history(EpochHistoryRequest {})
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            tracing::debug!(error = %e.message(), "the primary's history is not available yet");
            tokio::time::sleep(Duration::from_millis(node.heartbeat_interval_ms)).await;
            return;
        }
    };
    let theirs: Vec<(u64, u64)> = history
        .epochs
        .iter()
        .map(|e| (e.epoch, e.first_seq))
        .collect();
    let node2 = node.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let node = node2;
        let mut store = lock(&node.store);
        for _ in 0..RECONCILE_ROUNDS_MAX {
            let mine = store.epochs().to_vec();
            match crate::reconcile::cut_after(&mine, store.last_seq(), &theirs, history.last_seq) {
                Some(keep) => {
                    store.truncate_after(keep).map_err(|e| e.to_string())?;
                    node.store_rebuilt(&store);
                }
                None => return Ok(()),
            }
        }
        Err("reconciling did not settle".into())
    })
    .await;
    match result {
        Ok(Ok(())) => {
            let view = node.role();
            if view.role == Role::Secondary && (view.epoch, view.primary_id) == target {
                *lock(&node.reconciled) = Some(target);
                tracing::info!(
                    epoch = target.0,
                    primary = target.1,
                    last_seq = node.last_seq(),
                    "secondary ready: catching up from the primary"
                );
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "reconciling with the primary failed"),
        Err(e) => tracing::error!(error = %e, "reconciling with the primary failed"),
    }
}
