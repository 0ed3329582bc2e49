//! Which member decides: the one that leads the coordinator group.
//!
//! The loop follows openraft's view of the group. When this member becomes
//! the leader, it waits until the first entry of its own term is
//! committed and applied (a majority acknowledged it, and everything
//! committed before is applied here), then opens
//! a fresh [`ControlPlane`] from the applied state: the registry is learnt
//! again from the next heartbeats, and nobody is judged dead for a failure
//! timeout, exactly as after a restart of a lone coordinator. When it
//! stops leading, or a decision could not be committed (its view may lag
//! the group's), the control plane is dropped, so a member that is not the
//! leader decides nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tsn_cluster::shutdown::Shutdown;

use crate::control::ControlPlane;
use crate::persist::{self, Loaded, Persistence};
use crate::raft::group::Group;
use crate::service::Shared;

/// How often the loop looks again when nothing changed (a stale view, a
/// control plane that could not be opened yet).
pub const LEADERSHIP_RETRY_MS: u64 = 50;

/// Follows the group until `shutdown`, keeping `member`'s control plane
/// while, and only while, this member leads. `open` builds a control plane
/// from the applied state.
pub async fn run<F>(group: Group, member: Shared, open: F, mut shutdown: Shutdown)
where
    F: Fn(Loaded, Box<dyn Persistence>) -> persist::Result<ControlPlane>,
{
    let mut metrics = group.raft.metrics();
    let retry = Duration::from_millis(LEADERSHIP_RETRY_MS);
    loop {
        let (leading, ready, leader_addr) = {
            let m = metrics.borrow_and_update();
            let leading = m.current_leader == Some(group.id) && m.state.is_leader();
            // A new leader's first entry is of its own term: once it is
            // applied, a majority acknowledged this leader and everything
            // committed before is applied here.
            let ready = m
                .last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term);
            let addr = m
                .current_leader
                .filter(|&l| l != group.id)
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                .map(|n| n.addr);
            (leading, ready, addr)
        };
        member.set_leader(leader_addr);
        let stale = group.stale.swap(false, Ordering::SeqCst);
        let has_control = member.control().await.is_some();
        if has_control && (!leading || stale) {
            *member.control().await = None;
            if stale && leading {
                tracing::warn!(
                    "a decision was not committed: rebuilding this leader's view from the group's"
                );
            } else {
                tracing::info!(
                    member = group.id,
                    "no longer the leader of the coordinator group"
                );
            }
        }
        if leading && ready && member.control().await.is_none() {
            let loaded = group.sm.read(|s| s.loaded());
            match open(loaded, Box::new(group.committer())) {
                Ok(control) => {
                    *member.control().await = Some(control);
                    tracing::info!(member = group.id, "leads the coordinator group");
                }
                Err(e) => tracing::error!(error = %e, "cannot decide as the leader yet"),
            }
            group.stale.store(false, Ordering::SeqCst);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait() => return,
        }
    }
}
