//! The state machine of a coordinator member: the [`Replicated`] state
//! built by applying the committed [`Command`]s, in memory, and its
//! snapshot in `raft-snapshot.json` (written atomically when openraft
//! builds or receives one).
//!
//! The applied state itself is not written on every command: at start it
//! is the snapshot's, and openraft applies again the committed entries
//! after it (the log store keeps the commit point), so what a member
//! applied is always a prefix of the committed log.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};
use crate::replicated::{Command, CommandReply, Replicated};

pub const SNAPSHOT_FILE: &str = "raft-snapshot.json";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What a snapshot holds, and what the member has applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub state: Replicated,
}

/// `raft-snapshot.json`.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// The serialized [`Applied`], as it is sent to other members.
    data: Vec<u8>,
}

/// The state machine; clones share it (openraft's snapshot builder is a
/// clone).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    applied: Applied,
    snapshot: Option<StoredSnapshot>,
    snapshot_path: PathBuf,
    /// Snapshots built by this member, to give each its own id.
    built: u64,
}

fn snapshot_error(verb: ErrorVerb, e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

impl StateMachine {
    /// Opens the state machine under `dir`, starting from its snapshot.
    pub fn open(dir: &Path) -> StorageResult<StateMachine> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => Some(
                serde_json::from_slice::<StoredSnapshot>(&bytes).map_err(|e| {
                    snapshot_error(
                        ErrorVerb::Read,
                        format!("{} is corrupt: {e}", snapshot_path.display()),
                    )
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(snapshot_error(
                    ErrorVerb::Read,
                    format!("{}: {e}", snapshot_path.display()),
                ))
            }
        };
        let applied = match &snapshot {
            Some(s) => decode(&s.data)?,
            None => Applied::default(),
        };
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                applied,
                snapshot,
                snapshot_path,
                built: 0,
            })),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        tsn_cluster::sync::lock(&self.inner)
    }

    /// A copy of what this member has applied.
    #[cfg(test)]
    pub fn applied(&self) -> Applied {
        self.inner().applied.clone()
    }

    /// Reads the applied state without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&Replicated) -> T) -> T {
        f(&self.inner().applied.state)
    }
}

fn decode(data: &[u8]) -> StorageResult<Applied> {
    serde_json::from_slice(data)
        .map_err(|e| snapshot_error(ErrorVerb::Read, format!("the snapshot does not parse: {e}")))
}

impl Inner {
    fn store_snapshot(&mut self, snapshot: StoredSnapshot) -> StorageResult<()> {
        let mut bytes =
            serde_json::to_vec(&snapshot).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        bytes.push(b'\n');
        tsn_datastore::jsonl::write_atomic(&self.snapshot_path, &bytes)
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let mut inner = self.inner();
        let data =
            serde_json::to_vec(&inner.applied).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        inner.built += 1;
        let snapshot_id = match inner.applied.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.built),
            None => format!("none-{}", inner.built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.applied.last_applied,
            last_membership: inner.applied.membership.clone(),
            snapshot_id,
        };
        inner.store_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.inner();
        Ok((inner.applied.last_applied, inner.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandReply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        {
            let mut inner = self.inner();
            for entry in entries {
                inner.applied.last_applied = Some(entry.log_id);
                let reply = match &entry.payload {
                    EntryPayload::Blank => CommandReply::default(),
                    EntryPayload::Membership(m) => {
                        inner.applied.membership =
                            StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandReply::default()
                    }
                    EntryPayload::Normal(cmd) => {
                        apply_command(&mut inner.applied.state, cmd, entry.log_id)
                    }
                };
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied = decode(&data)?;
        if applied.last_applied != meta.last_log_id {
            return Err(snapshot_error(
                ErrorVerb::Read,
                format!(
                    "the snapshot holds entries up to {:?} but says {:?}",
                    applied.last_applied, meta.last_log_id
                ),
            ));
        }
        {
            let mut inner = self.inner();
            inner.store_snapshot(StoredSnapshot {
                meta: meta.clone(),
                data,
            })?;
            inner.applied = applied;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

/// Applies one committed command. A refused command is answered, not an
/// error: every member refuses it alike, and the log goes on.
fn apply_command(state: &mut Replicated, cmd: &Command, at: LogId<NodeId>) -> CommandReply {
    match state.apply(cmd) {
        Ok(()) => CommandReply::default(),
        Err(reason) => {
            tracing::warn!(index = at.index, kind = cmd.kind(), %reason, "refused a committed command");
            CommandReply {
                refused: Some(reason),
            }
        }
    }
}
