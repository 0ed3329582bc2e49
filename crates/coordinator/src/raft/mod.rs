//! The coordinator as a Raft group (openraft): the types of the group,
//! the log store and the state machine in plain files of the state
//! directory.
//!
//! * `log_store`: the Raft log, vote and commit point (fsynced before
//!   they are acknowledged).
//! * `state_machine`: the [`crate::replicated::Replicated`] state the
//!   committed commands build, and its snapshot.
//! * `network`: `tsn.Raft`, the messages between members over tonic.
//! * `group`: this member (openraft on those files) and the `Committer`
//!   through which the control plane's decisions are committed.

// The storage traits return openraft's own error type, large as it is.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

pub mod group;
pub mod log_store;
pub mod network;
pub mod state_machine;
#[cfg(test)]
mod tests;

pub use log_store::LogStore;
pub use state_machine::StateMachine;

use crate::replicated::{Command, CommandReply};

/// A member's id (`--id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The types of the coordinator group.
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);
