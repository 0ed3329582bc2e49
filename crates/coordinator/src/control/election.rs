//! Roles and epochs: the role of a server that heartbeats, the epoch
//! raised to what a server has seen, the first primary of a fresh cluster.

use tsn_proto::tsn::{HeartbeatRequest, Role};

use super::{ControlPlane, Error, Result};
use crate::config::EPOCH_MAX;

impl ControlPlane {
    /// The role of the server that sent `req`, raising the epoch to what it
    /// has seen and electing it if it is the first to ask for PRIMARY in a
    /// fresh cluster — once its cluster time is within its bound (a beat
    /// with `clock_unbounded` is answered SECONDARY until then).
    pub(super) fn decide_role(&mut self, req: &HeartbeatRequest) -> Result<Role> {
        let (c, s) = (req.cluster_id, req.server_id);
        let mut rec = self.record(c).clone();
        let seen = rec.epoch.max(req.epoch).max(req.last_epoch);
        let raised = seen > rec.epoch;
        rec.epoch = seen;

        let requested = Role::try_from(req.requested_role).unwrap_or(Role::Unspecified);
        let (role, elected) = if rec.primary_id == s {
            (Role::Primary, false)
        } else if rec.primary_id == 0 && requested == Role::Primary && !req.clock_unbounded {
            rec.epoch = next_epoch(rec.epoch)?;
            rec.primary_id = s;
            rec.in_sync.clear();
            (Role::Primary, true)
        } else {
            (Role::Secondary, false)
        };

        if raised || elected {
            self.store_cluster(rec.clone())?;
        }
        if raised {
            tracing::info!(
                cluster = c,
                "epoch raised to {seen} by the heartbeat of server {s}"
            );
        }
        if elected {
            tracing::info!(
                cluster = c,
                "server {s} is the first primary of the cluster (epoch {})",
                rec.epoch
            );
        }
        Ok(role)
    }
}

/// The epoch after `epoch`, if it stays within [`EPOCH_MAX`] (what the
/// state file may hold): an error, never a panic, when it cannot grow.
pub(super) fn next_epoch(epoch: u64) -> Result<u64> {
    epoch
        .checked_add(1)
        .filter(|&e| e <= EPOCH_MAX)
        .ok_or_else(|| Error::ResourceExhausted(format!("epoch {epoch} cannot grow")))
}
