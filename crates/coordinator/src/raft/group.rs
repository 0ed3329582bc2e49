//! This member of the coordinator group: its openraft instance on the log
//! store and state machine of its state directory, and the way a decision
//! of the [`crate::control::ControlPlane`] is committed through it
//! ([`Committer`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tsn_cluster::auth::ClusterAuth;

use super::log_store::{LOG_FILE, META_FILE};
use super::network::Network;
use super::state_machine::SNAPSHOT_FILE;
use super::{LogStore, NodeId, StateMachine, TypeConfig};
use crate::config::{
    RAFT_COMMIT_TIMEOUT_MS, RAFT_ELECTION_TIMEOUT_MAX_MS, RAFT_ELECTION_TIMEOUT_MIN_MS,
    RAFT_HEARTBEAT_INTERVAL_MS, RAFT_SNAPSHOT_LOGS,
};
use crate::persist::{self, Persistence};
use crate::replicated::Command;

/// This member: its id, its openraft and what it applied.
#[derive(Clone)]
pub struct Group {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub sm: StateMachine,
    /// Set when a decision could not be committed: what this member
    /// decides from may then lag what the group committed, so it rebuilds
    /// its view before it decides again.
    pub stale: Arc<AtomicBool>,
}

/// Deletes the group's files under `dir` (`-c`).
pub fn clear(dir: &Path) -> anyhow::Result<()> {
    for name in [LOG_FILE, META_FILE, SNAPSHOT_FILE] {
        for path in [dir.join(name), dir.join(name).with_extension("tmp")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
    }
    Ok(())
}

impl Group {
    /// Starts this member on the files under `dir`. A member whose log is
    /// empty forms the group with `members` (every member started with the
    /// same `--peers` proposes the same group), or, without them, waits to
    /// be added to a running group; afterwards the membership is what the
    /// group committed.
    pub async fn start(
        id: NodeId,
        members: Option<BTreeMap<NodeId, String>>,
        dir: &Path,
        auth: ClusterAuth,
    ) -> anyhow::Result<Group> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = LogStore::open(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let sm = StateMachine::open(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = Config {
            cluster_name: "tsn-coordinator".into(),
            heartbeat_interval: RAFT_HEARTBEAT_INTERVAL_MS,
            election_timeout_min: RAFT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: RAFT_ELECTION_TIMEOUT_MAX_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(RAFT_SNAPSHOT_LOGS),
            ..Default::default()
        }
        .validate()
        .context("the Raft configuration")?;
        let raft = Raft::new(id, Arc::new(config), Network::new(auth), log, sm.clone())
            .await
            .context("starting Raft")?;
        let fresh = !raft
            .is_initialized()
            .await
            .context("reading the Raft state")?;
        if let (true, Some(members)) = (fresh, members) {
            let nodes: BTreeMap<NodeId, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode::new(addr)))
                .collect();
            tracing::info!(member = id, members = ?nodes.keys().collect::<Vec<_>>(), "forming the coordinator group");
            match raft.initialize(nodes).await {
                Ok(()) => {}
                // Another member formed it first, with the same members.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(anyhow::anyhow!("forming the group: {e}")),
            }
        }
        Ok(Group {
            id,
            raft,
            sm,
            stale: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The persistence that commits the control plane's decisions.
    pub fn committer(&self) -> Committer {
        Committer {
            raft: self.raft.clone(),
            stale: self.stale.clone(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// Commits each decision through the group: it returns once a majority
/// stored it and this member applied it, and fails (the decision not
/// taken) if this member does not lead, or no majority answers within
/// [`RAFT_COMMIT_TIMEOUT_MS`].
pub struct Committer {
    raft: Raft<TypeConfig>,
    stale: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

impl Persistence for Committer {
    fn commit(&mut self, cmd: &Command) -> persist::Result<()> {
        let raft = self.raft.clone();
        let cmd = cmd.clone();
        let kind = cmd.kind();
        let wait = tokio::time::timeout(
            Duration::from_millis(RAFT_COMMIT_TIMEOUT_MS),
            raft.client_write(cmd),
        );
        // The control plane decides synchronously, under its lock, as it
        // did when it wrote its own files; the runtime is multi-threaded,
        // so this worker hands its other tasks on while it waits.
        let written = tokio::task::block_in_place(|| self.runtime.block_on(wait));
        let not_committed = |why: String| {
            self.stale.store(true, Ordering::SeqCst);
            Err(persist::Error::NotCommitted(why))
        };
        match written {
            Err(_) => not_committed(format!(
                "no majority of the coordinator group stored the {kind} decision within {RAFT_COMMIT_TIMEOUT_MS} ms"
            )),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                not_committed(format!(
                    "this coordinator no longer leads the group (leader: {:?})",
                    f.leader_id
                ))
            }
            Ok(Err(e)) => not_committed(e.to_string()),
            Ok(Ok(reply)) => match reply.data.refused {
                None => Ok(()),
                Some(reason) => Err(persist::Error::Invalid(reason)),
            },
        }
    }
}
