//! The in-sync set of a cluster: changed only by the primary of the
//! current epoch, stored before it is announced.

use std::time::Instant;

use tsn_proto::tsn::{InSyncChange, InSyncReply, ProcessKind};

use super::{ControlPlane, Error, Result};
use crate::config::SERVERS_PER_CLUSTER_MAX;

impl ControlPlane {
    /// Adds or removes a secondary from the in-sync set, if the caller is the
    /// primary of the current epoch. Only a registered, live server of the
    /// cluster is added: a server that does not exist would hold up every
    /// write of the cluster (the primary waits for each in-sync server).
    /// Removing is always allowed.
    pub fn change_in_sync(&mut self, change: &InSyncChange, now: Instant) -> Result<InSyncReply> {
        let c = change.cluster_id;
        self.check_cluster(c)?;
        if change.server_id == 0 {
            return Err(Error::InvalidArgument(
                "server ids are positive integers".into(),
            ));
        }
        let mut rec = self.record(c).clone();
        if change.primary_id == 0
            || change.primary_id != rec.primary_id
            || change.epoch != rec.epoch
        {
            tracing::info!(
                cluster = c,
                "refused an in-sync change from server {} of epoch {}: the primary is {} of epoch {}",
                change.primary_id,
                change.epoch,
                rec.primary_id,
                rec.epoch
            );
            return Ok(InSyncReply {
                ok: false,
                in_sync: rec.in_sync.into_iter().collect(),
            });
        }
        let s = change.server_id;
        if s == rec.primary_id {
            return Err(Error::InvalidArgument(format!(
                "server {s} is the primary of cluster {c}; it is not in its own in-sync set"
            )));
        }
        let changed = if change.in_sync {
            let live = self
                .processes
                .get(&(c, ProcessKind::Server, s))
                .is_some_and(|p| self.is_alive(p, now));
            if !live && !rec.in_sync.contains(&s) {
                return Err(Error::InvalidArgument(format!(
                    "server {s} is not a live, registered server of cluster {c}"
                )));
            }
            if !rec.in_sync.contains(&s) && rec.in_sync.len() >= SERVERS_PER_CLUSTER_MAX {
                return Err(Error::ResourceExhausted(format!(
                    "cluster {c} already has {SERVERS_PER_CLUSTER_MAX} in-sync servers"
                )));
            }
            rec.in_sync.insert(s)
        } else {
            rec.in_sync.remove(&s)
        };
        if changed {
            self.store_cluster(rec.clone())?;
            tracing::info!(
                cluster = c,
                epoch = rec.epoch,
                in_sync = ?rec.in_sync,
                "server {s} {} the in-sync set",
                if change.in_sync { "joined" } else { "left" }
            );
        }
        Ok(InSyncReply {
            ok: true,
            in_sync: rec.in_sync.into_iter().collect(),
        })
    }
}
