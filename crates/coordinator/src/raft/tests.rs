//! The log store and state machine against openraft's own storage suite,
//! and their recovery from what a crash leaves in the files.

use std::io::Write;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use tempfile::TempDir;

use super::log_store::LOG_FILE;
use super::{LogStore, NodeId, StateMachine, TypeConfig};
use crate::persist::Assignment;
use crate::replicated::{Command, CommandReply};

struct Files;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Files {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = LogStore::open(dir.path())?;
        let sm = StateMachine::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    Suite::test_all(Files).unwrap();
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload,
    }
}

fn assign(user: u32) -> EntryPayload<TypeConfig> {
    EntryPayload::Normal(Command::Assign(vec![Assignment { user, cluster: 1 }]))
}

/// Appends `entries` and waits until the store says they are durable.
async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.blocking_append(entries).await.unwrap();
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn the_log_and_vote_survive_a_restart_and_a_torn_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    append(
        &mut log,
        vec![entry(1, 1, EntryPayload::Blank), entry(1, 2, assign(7))],
    )
    .await;
    append(&mut log, vec![entry(1, 3, assign(8))]).await;
    log.save_vote(&Vote::new(1, 1)).await.unwrap();
    drop(log);
    // A crash in the middle of the next append.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    f.write_all(b"{\"log_id\":{\"leader_id\":{\"term\":1,\"node_id\":1},\"ind")
        .unwrap();
    drop(f);

    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3]);
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    // The next append starts a whole line.
    append(&mut log, vec![entry(2, 4, assign(9))]).await;
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4]);

    // Truncation and purge are durable too.
    log.truncate(LogId::new(CommittedLeaderId::new(2, 1), 4))
        .await
        .unwrap();
    log.purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
        .await
        .unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![2, 3]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
}

#[tokio::test]
async fn a_corrupt_line_inside_the_log_is_an_error_not_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    append(
        &mut log,
        vec![entry(1, 1, EntryPayload::Blank), entry(1, 2, assign(7))],
    )
    .await;
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    std::fs::write(&path, format!("garbage\n{first}\n")).unwrap();
    let err = LogStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("corrupt"), "{err}");

    // A line of a later entry after a missing one.
    let second = text.lines().nth(1).unwrap();
    std::fs::write(&path, format!("{second}\n{first}\n")).unwrap();
    let err = LogStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("does not follow"), "{err}");
}

#[tokio::test]
async fn a_refused_command_is_answered_and_the_state_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let bad = EntryPayload::Normal(Command::Assign(vec![Assignment {
        user: 0,
        cluster: 1,
    }]));
    let replies = sm
        .apply(vec![entry(1, 1, assign(5)), entry(1, 2, bad)])
        .await
        .unwrap();
    assert_eq!(replies[0], CommandReply::default());
    assert!(replies[1].refused.is_some(), "{replies:?}");
    let applied = sm.applied();
    assert_eq!(applied.last_applied.map(|l| l.index), Some(2));
    assert_eq!(applied.state.assignments.len(), 1);

    // A snapshot is what a restarted member starts from.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let sm = StateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied(), applied);
}
