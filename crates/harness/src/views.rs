//! Pure reads of the coordinator's view (`CoordService.Clusters`): whether
//! a server is alive, every cluster's epoch, and what became of a cluster
//! whose primary stopped. The waits of the tests poll these.

use std::collections::BTreeMap;

use tsn_proto::tsn::{ClusterView, ProcessKind};

/// Whether `view` shows server `server_id` alive.
pub fn is_alive_server(view: &ClusterView, server_id: u32) -> bool {
    view.processes
        .iter()
        .any(|p| p.kind == ProcessKind::Server as i32 && p.server_id == server_id && p.alive)
}

/// The epoch of every cluster of `views`.
pub fn epochs_of(views: &[ClusterView]) -> BTreeMap<u32, u64> {
    views.iter().map(|v| (v.cluster_id, v.epoch)).collect()
}

/// What became of a cluster whose primary stopped answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failover {
    /// A secondary was promoted under a newer epoch.
    Promoted(u32),
    /// The coordinator sees the primary dead but no secondary is in sync:
    /// nobody may be promoted. A primary drops a secondary that answers too
    /// slowly, which a loaded machine causes, so a test meets this now and
    /// then; it is the product being safe, not the scenario under test.
    NoCandidate,
}

/// The failover, if any, that one coordinator view shows for a cluster
/// whose primary `old` stopped at epoch `epoch_before`.
pub fn failover_in(view: &ClusterView, old: u32, epoch_before: u64) -> Option<Failover> {
    if view.epoch > epoch_before && view.primary_id != old && view.primary_id != 0 {
        return Some(Failover::Promoted(view.primary_id));
    }
    (view.primary_id == old && !is_alive_server(view, old) && view.in_sync.is_empty())
        .then_some(Failover::NoCandidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_proto::tsn::ProcessView;

    #[test]
    fn failover_is_read_from_a_view() {
        let view = |epoch, primary_id, old_alive, in_sync: Vec<u32>| ClusterView {
            cluster_id: 1,
            epoch,
            primary_id,
            processes: vec![ProcessView {
                server_id: 1,
                kind: ProcessKind::Server as i32,
                alive: old_alive,
                ..Default::default()
            }],
            in_sync,
        };
        assert_eq!(
            failover_in(&view(3, 2, false, vec![]), 1, 2),
            Some(Failover::Promoted(2))
        );
        assert_eq!(failover_in(&view(2, 1, true, vec![2]), 1, 2), None);
        assert_eq!(failover_in(&view(2, 1, false, vec![2]), 1, 2), None);
        assert_eq!(failover_in(&view(2, 1, true, vec![]), 1, 2), None);
        assert_eq!(
            failover_in(&view(2, 1, false, vec![]), 1, 2),
            Some(Failover::NoCandidate)
        );
    }

    #[test]
    fn epochs_are_read_per_cluster() {
        let view = |cluster_id, epoch| ClusterView {
            cluster_id,
            epoch,
            ..Default::default()
        };
        let got = epochs_of(&[view(1, 3), view(2, 1)]);
        assert_eq!(got, [(1, 3), (2, 1)].into_iter().collect());
    }
}
